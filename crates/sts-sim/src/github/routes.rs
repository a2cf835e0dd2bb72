//! The REST routes the broker (and Atmos) call, each answering from the simulator's state, and
//! the server that serves them.

use super::state::{GitHubSimulator, SimState, TokenRecord};
use super::wire::{
    access_token_json, app_id_json, gh_error, installation_json, not_found, paginate, refusal,
    repo_json, with_link, AccessTokenBody, GhError, PageQuery,
};
use super::{SimInstallation, SimRequest};
use crate::serving::{bind_loopback, Serving};
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;

/// Where GitHub Enterprise Server (and ghe.com) serves the REST API: `https://HOST/api/v3`
/// (<https://docs.github.com/en/enterprise-server@latest/rest/quickstart>).
pub const GHES_API_PREFIX: &str = "/api/v3";

/// A simulator bound to a port. Dropping it stops the server.
pub struct RunningSimulator {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (then the prefix it serves under, if any), to use as the
    /// broker's `github.api_url`.
    pub url: String,
    _server: Serving,
}

debug_showing!(RunningSimulator { url });

impl GitHubSimulator {
    /// The routes, with this simulator's state; [`Self::start`] serves exactly this. Public so
    /// that other loopback servers can merge it.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/app", get(get_app))
            .route("/app/installations", get(list_app_installations))
            .route("/app/installations/{id}", get(get_installation_by_id))
            .route(
                "/app/installations/{id}/access_tokens",
                post(create_access_token),
            )
            .route("/orgs/{org}/installation", get(get_org_installation))
            .route("/users/{user}/installation", get(get_user_installation))
            .route(
                "/repos/{owner}/{repo}/installation",
                get(get_repo_installation),
            )
            .route("/repos/{owner}/{repo}", get(get_repository))
            .route(
                "/installation/repositories",
                get(list_installation_repositories),
            )
            .route("/installation/token", delete(revoke_token))
            .fallback(|| async { not_found() })
            .layer(middleware::from_fn_with_state(
                self.clone(),
                record_and_inject,
            ))
            .with_state(self.clone())
    }

    /// [`Self::router`] under `prefix` (GitHub Enterprise Server's [`GHES_API_PREFIX`]), as
    /// github.com serves it at the root of `api.github.com`.
    pub fn router_under(&self, prefix: &str) -> Router {
        if prefix.is_empty() {
            self.router()
        } else {
            Router::new().nest(prefix, self.router())
        }
    }

    /// Serve on `127.0.0.1:0`; returns the bound address. The server runs until the process ends
    /// or the returned handle is dropped.
    pub async fn start(&self) -> std::io::Result<RunningSimulator> {
        self.start_under("").await
    }

    /// [`Self::start`], with the API under `prefix` (e.g. [`GHES_API_PREFIX`]).
    pub async fn start_under(&self, prefix: &str) -> std::io::Result<RunningSimulator> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        Ok(RunningSimulator {
            addr,
            url: format!("http://{addr}{prefix}"),
            _server: Serving::spawn(listener, self.router_under(prefix), "github simulator"),
        })
    }
}

/// Records every request and serves injected failures before routing.
async fn record_and_inject(
    State(sim): State<GitHubSimulator>,
    request: Request,
    next: Next,
) -> Response {
    let failure = sim.lock().record(SimRequest::of(&request));
    let delay = sim.delay_for(request.method(), request.uri().path());
    match failure {
        Some(failure) => refusal(failure.status, failure.retry_after),
        None => {
            // Done first, answered late: a caller that gives up meanwhile leaves the effect.
            let response = next.run(request).await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            response
        }
    }
}

/// Answer a route GitHub authenticates as the App: 401 unless the App JWT is good.
fn as_app<T>(
    sim: &GitHubSimulator,
    headers: &HeaderMap,
    answer: impl FnOnce(&mut SimState) -> Result<T, GhError>,
) -> Result<T, GhError> {
    let mut state = sim.lock();
    state.check_app_jwt(headers)?;
    answer(&mut state)
}

/// Answer a route that needs an installation token: 401 without one, or with a dead one.
fn as_installation<T>(
    sim: &GitHubSimulator,
    headers: &HeaderMap,
    answer: impl FnOnce(&mut SimState, String, TokenRecord) -> Result<T, GhError>,
) -> Result<T, GhError> {
    let mut state = sim.lock();
    let Some((token, record)) = state.check_token(headers)? else {
        return Err(gh_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        ));
    };
    answer(&mut state, token, record)
}

/// An App-authenticated answer about the installation `find` picks: 404 when it picks none.
fn installation_answer(
    sim: &GitHubSimulator,
    headers: &HeaderMap,
    find: impl for<'s> FnOnce(&'s SimState) -> Option<&'s SimInstallation>,
) -> Result<Response, GhError> {
    as_app(sim, headers, |state| {
        let installation = find(state).ok_or_else(not_found)?;
        Ok(Json(installation_json(installation, &state.app_id)).into_response())
    })
}

async fn get_app(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
) -> Result<Response, GhError> {
    as_app(&sim, &headers, |state| {
        Ok(Json(json!({
            "id": app_id_json(&state.app_id),
            "slug": "sts-broker-simulator",
            "name": "sts-broker simulator",
            "installations_count": state.installations.len(),
        }))
        .into_response())
    })
}

async fn list_app_installations(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<PageQuery>,
) -> Result<Response, GhError> {
    as_app(&sim, &headers, |state| {
        let all: Vec<&SimInstallation> = state.installations.values().collect();
        let (page, link) = paginate(&all, &query, &headers, uri.path());
        let body: Vec<Value> = page
            .iter()
            .map(|installation| installation_json(installation, &state.app_id))
            .collect();
        Ok(with_link(Value::Array(body), link))
    })
}

async fn get_installation_by_id(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, GhError> {
    installation_answer(&sim, &headers, |state| state.installations.get(&id))
}

async fn get_org_installation(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Result<Response, GhError> {
    installation_answer(&sim, &headers, |state| {
        state.find_by_login(&org).filter(|installation| {
            installation
                .account_type
                .eq_ignore_ascii_case("organization")
        })
    })
}

async fn get_user_installation(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, GhError> {
    // GitHub answers this one for organizations too.
    installation_answer(&sim, &headers, |state| state.find_by_login(&user))
}

async fn get_repo_installation(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, GhError> {
    installation_answer(&sim, &headers, |state| {
        state
            .find_by_login(&owner)
            .filter(|installation| installation.repository(&repo).is_some())
    })
}

async fn create_access_token(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, GhError> {
    as_app(&sim, &headers, |state| {
        let installation = state.minting_installation(id)?;
        let request = AccessTokenBody::parse(&body)?;
        let issued = state.issue_token(&installation, request)?;
        let body = access_token_json(&installation, &issued);
        Ok((StatusCode::CREATED, Json(body)).into_response())
    })
}

async fn list_installation_repositories(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<PageQuery>,
) -> Result<Response, GhError> {
    as_installation(&sim, &headers, |state, _, record| {
        let reachable = state.reachable(&record);
        let (page, link) = paginate(&reachable, &query, &headers, uri.path());
        let installation = state.installations.get(&record.installation_id);
        let repositories: Vec<Value> = installation
            .map(|installation| {
                page.iter()
                    .map(|(_, repo)| repo_json(installation, repo))
                    .collect()
            })
            .unwrap_or_default();
        let selection = if record.repository_ids.is_some() {
            "selected"
        } else {
            installation.map_or("all", |installation| {
                installation.repository_selection.as_str()
            })
        };
        Ok(with_link(
            json!({
                "total_count": reachable.len(),
                "repository_selection": selection,
                "repositories": repositories,
            }),
            link,
        ))
    })
}

async fn get_repository(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Response, GhError> {
    let state = sim.lock();
    let caller = state.check_token(&headers)?;
    let installation = state.find_by_login(&owner).ok_or_else(not_found)?;
    let repo = installation.repository(&name).ok_or_else(not_found)?;
    // GitHub hides what a caller cannot read behind a 404, never a 403.
    let visible = match &caller {
        Some((_, record)) => state
            .reachable(record)
            .iter()
            .any(|(_, reachable)| reachable.id == repo.id),
        None => !repo.private,
    };
    if !visible {
        return Err(not_found());
    }
    Ok(Json(repo_json(installation, repo)).into_response())
}

async fn revoke_token(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
) -> Result<Response, GhError> {
    as_installation(&sim, &headers, |state, token, _| {
        state.revoke(&token);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}
