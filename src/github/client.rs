//! Typed GitHub REST client: octocrab carries the requests (its raw methods, which hand back
//! status and headers); on top the broker keeps explicit timeouts, no redirects, capped bodies,
//! bounded retries of transient failures, and short-lived caches of installation lookups.
//!
//! The App JWT is signed here (`app_jwt`, jsonwebtoken 12) and given to octocrab as a bearer per
//! request, like the installation token: octocrab's own App authentication (`jwt` feature) would
//! pin jsonwebtoken 10, and its auth layer only sends credentials to `api.github.com`.
//!
//! This file holds the client and the calls it makes; its child modules hold what changes on
//! its own: `retry` (when a call is repeated), `response` (reading answers, mapping errors),
//! `cache` (installation and repository caches) and `wire` (GitHub's JSON).

mod cache;
mod response;
mod retry;
mod wire;

use super::app_jwt::AppJwtSigner;
use super::{
    CallObserver, GitHubApp, GitHubError, Installation, InstallationToken, Repository, TokenRequest,
};
use async_trait::async_trait;
use cache::{installation_cache, repository_cache, InstallationCache, RepositoryCache};
use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use http::{Method, StatusCode};
use octocrab::{OctoBody, Octocrab};
use response::{link_has_next, map_error, parse};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;
use wire::{InstallationJson, RepositoryListJson, TokenJson, TokenRequestJson};

/// Media type GitHub recommends for every REST call.
pub(crate) const GITHUB_ACCEPT: &str = "application/vnd.github+json";

/// Time to establish TCP+TLS: a GitHub that cannot accept a connection in 5 s is down for us.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request deadline: a CI job is waiting on the mint, and a hung call must not pin a worker.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Page size of `GET /installation/repositories` (GitHub's maximum).
pub(crate) const REPOSITORIES_PER_PAGE: usize = 100;
/// Upper bound on pages followed (100 000 repositories), so a misbehaving server cannot keep us
/// paging forever.
pub(crate) const MAX_REPOSITORY_PAGES: usize = 1000;

/// How to reach GitHub as the App.
#[derive(Clone)]
pub struct GitHubClientConfig {
    /// `https://api.github.com` or a GHES `https://HOST/api/v3`, or the simulator.
    pub api_url: Url,
    /// App id or client id: the `iss` of App JWTs.
    pub app_id: String,
    /// PEM RSA private key (PKCS#1 or PKCS#8).
    pub private_key_pem: SecretString,
    /// Called after every request, for metrics.
    pub observer: Option<super::CallObserver>,
}

impl std::fmt::Debug for GitHubClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubClientConfig")
            .field("api_url", &self.api_url.as_str())
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"[REDACTED]")
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// The real `GitHubApp`.
pub struct GitHubClient {
    api_url: Url,
    octo: Octocrab,
    signer: AppJwtSigner,
    observer: Option<CallObserver>,
    by_owner: InstallationCache<String>,
    by_id: InstallationCache<i64>,
    repositories: RepositoryCache,
}

impl std::fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signer holds the private key and a live App JWT: show only what identifies the App.
        f.debug_struct("GitHubClient")
            .field("api_url", &self.api_url.as_str())
            .field("app_id", &self.signer.app_id())
            .finish_non_exhaustive()
    }
}

/// How a request authenticates.
enum Auth<'a> {
    /// The App JWT.
    App,
    /// An installation token.
    Token(&'a SecretString),
}

impl GitHubClient {
    /// Build; fails when the private key does not parse. Call it inside the Tokio runtime that
    /// will serve the requests: octocrab spawns its request queue's worker there.
    pub fn new(config: GitHubClientConfig) -> Result<Self, GitHubError> {
        if config.api_url.cannot_be_a_base() || !matches!(config.api_url.scheme(), "http" | "https")
        {
            return Err(GitHubError::InvalidConfig(
                "github api url must be an http(s) url".into(),
            ));
        }
        let signer = AppJwtSigner::new(&config.app_id, &config.private_key_pem)?;
        let octo = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .and_then(|builder| {
                builder
                    .set_connect_timeout(Some(CONNECT_TIMEOUT))
                    .set_read_timeout(Some(REQUEST_TIMEOUT))
                    .set_write_timeout(Some(REQUEST_TIMEOUT))
                    .build()
            })
            .map_err(|_| GitHubError::InvalidConfig("could not build the github client".into()))?;
        Ok(Self {
            api_url: config.api_url,
            octo,
            signer,
            observer: config.observer,
            by_owner: installation_cache(),
            by_id: installation_cache(),
            repositories: repository_cache(),
        })
    }

    /// `api_url` joined with `segments`, each percent-encoded (an owner login cannot inject a
    /// path or a query).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, GitHubError> {
        let mut url = self.api_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| GitHubError::InvalidConfig("github api url cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One request to GitHub, authenticated as `auth`, with an optional JSON body. octocrab adds
    /// `X-GitHub-Api-Version: 2022-11-28`, a pinned REST version so that a new GitHub default
    /// cannot change response shapes under us (a client test checks it on every call). octocrab
    /// is built without redirect following, so a redirect cannot carry the App JWT or an
    /// installation token to another host.
    fn request(
        &self,
        method: Method,
        url: &Url,
        auth: &Auth<'_>,
        body: Option<&impl serde::Serialize>,
    ) -> Result<http::Request<OctoBody>, GitHubError> {
        let credential = match auth {
            Auth::App => self.signer.jwt()?,
            Auth::Token(token) => (*token).clone(),
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {}", credential.expose_secret()))
            .map_err(|_| GitHubError::InvalidConfig("credential is not a valid header".into()))?;
        value.set_sensitive(true);
        let builder = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(ACCEPT, HeaderValue::from_static(GITHUB_ACCEPT))
            // GitHub rejects requests without a User-Agent and asks for one that identifies the
            // client (https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent).
            .header(
                USER_AGENT,
                HeaderValue::from_static(crate::config::USER_AGENT),
            )
            .header(AUTHORIZATION, value);
        self.octo
            .build_request(builder, body)
            .map_err(|_| GitHubError::InvalidConfig("could not build the github request".into()))
    }

    fn observe(
        &self,
        operation: &'static str,
        status: u16,
        headers: Option<&HeaderMap>,
        started: Instant,
    ) {
        if let Some(observer) = &self.observer {
            let remaining = headers
                .and_then(|h| h.get("x-ratelimit-remaining"))
                .and_then(|v| v.to_str().ok()?.trim().parse().ok());
            observer(operation, status, started.elapsed(), remaining);
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        operation: &'static str,
        url: Url,
        auth: Auth<'_>,
    ) -> Result<(T, HeaderMap), GitHubError> {
        let response = self
            .execute(operation, || {
                self.request(Method::GET, &url, &auth, None::<&()>)
            })
            .await?;
        if !response.status.is_success() {
            return Err(map_error(&response));
        }
        Ok((parse(operation, &response.body)?, response.headers))
    }

    async fn fetch_installation(
        &self,
        operation: &'static str,
        url: Url,
    ) -> Result<Option<Installation>, GitHubError> {
        match self
            .get_json::<InstallationJson>(operation, url, Auth::App)
            .await
        {
            Ok((json, _)) => Ok(Some(json.into())),
            Err(GitHubError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Drop every cached entry about installation `id`.
    async fn forget(&self, id: i64) {
        self.by_id.invalidate(&id).await;
        self.repositories.invalidate(&id).await;
        let by_id = move |_: &String, value: &Option<Installation>| {
            value.as_ref().is_some_and(|found| found.id == id)
        };
        if self.by_owner.invalidate_entries_if(by_id).is_err() {
            // Only if the cache were built without invalidation closures: forget too much
            // rather than keep serving a suspended or uninstalled installation.
            self.by_owner.invalidate_all();
        }
    }

    async fn list_repositories_with(
        &self,
        token: &SecretString,
    ) -> Result<Vec<Repository>, GitHubError> {
        let mut repositories = Vec::new();
        for page in 1..=MAX_REPOSITORY_PAGES {
            let mut url = self.endpoint(&["installation", "repositories"])?;
            url.query_pairs_mut()
                .append_pair("per_page", &REPOSITORIES_PER_PAGE.to_string())
                .append_pair("page", &page.to_string());
            let (json, headers) = self
                .get_json::<RepositoryListJson>("list_repositories", url, Auth::Token(token))
                .await?;
            let received = json.repositories.len();
            repositories.extend(json.repositories.into_iter().map(|repo| Repository {
                id: repo.id,
                name: repo.name,
                full_name: repo.full_name,
            }));
            // Page numbers, not the Link URL, drive the loop: following a server-supplied URL
            // would send the installation token wherever it points. Link only says "stop".
            let more = match link_has_next(&headers) {
                Some(next) => next,
                None => received >= REPOSITORIES_PER_PAGE,
            };
            if !more || received == 0 {
                return Ok(repositories);
            }
        }
        tracing::warn!("github repository listing stopped at the page limit");
        Ok(repositories)
    }
}

#[async_trait]
impl GitHubApp for GitHubClient {
    async fn installation_for_owner(&self, owner: &str) -> Result<Installation, GitHubError> {
        let key = owner.to_lowercase();
        let found = self
            .by_owner
            .try_get_with_by_ref(&key, async {
                let url = self.endpoint(&["users", owner, "installation"])?;
                let found = self.fetch_installation("get_installation", url).await?;
                if let Some(installation) = &found {
                    self.by_id
                        .insert(installation.id, Some(installation.clone()))
                        .await;
                }
                Ok(found)
            })
            .await
            .map_err(unshare)?;
        found.ok_or(GitHubError::NotFound)
    }

    async fn installation(&self, id: i64) -> Result<Installation, GitHubError> {
        let found = self
            .by_id
            .try_get_with(id, async {
                let url = self.endpoint(&["app", "installations", &id.to_string()])?;
                let found = self.fetch_installation("get_installation", url).await?;
                if let Some(installation) = &found {
                    self.by_owner
                        .insert(
                            installation.account_login.to_lowercase(),
                            Some(installation.clone()),
                        )
                        .await;
                }
                Ok(found)
            })
            .await
            .map_err(unshare)?;
        found.ok_or(GitHubError::NotFound)
    }

    async fn installation_repositories(&self, id: i64) -> Result<Vec<Repository>, GitHubError> {
        let repositories = self
            .repositories
            .try_get_with(id, async {
                // Listing needs an installation token; a metadata-only one is the least we can
                // ask for.
                let request = TokenRequest {
                    repositories: None,
                    permissions: BTreeMap::from([("metadata".to_owned(), "read".to_owned())]),
                };
                let token = self.create_installation_token(id, &request).await?;
                let listed = self.list_repositories_with(&token.token).await;
                // Best effort: the token is metadata-only and expires within the hour anyway.
                if let Err(error) = self.revoke_installation_token(&token.token).await {
                    tracing::warn!(
                        github.installation_id = id,
                        error = %error,
                        "could not revoke the listing token of installation {id}"
                    );
                }
                listed.map(Arc::new)
            })
            .await
            .map_err(unshare)?;
        Ok(repositories.as_ref().clone())
    }

    async fn create_installation_token(
        &self,
        id: i64,
        request: &TokenRequest,
    ) -> Result<InstallationToken, GitHubError> {
        let url = self.endpoint(&["app", "installations", &id.to_string(), "access_tokens"])?;
        let body = TokenRequestJson {
            repositories: request.repositories.as_deref(),
            permissions: (!request.permissions.is_empty()).then_some(&request.permissions),
        };
        let response = self
            .execute("create_token", || {
                self.request(Method::POST, &url, &Auth::App, Some(&body))
            })
            .await?;
        if !response.status.is_success() {
            let error = map_error(&response);
            // The mint is never cached, so it is the first to learn of an uninstall or a
            // suspension: drop the stale lookups so the next one asks GitHub again.
            if matches!(error, GitHubError::NotFound | GitHubError::Suspended) {
                self.forget(id).await;
            }
            return Err(error);
        }
        let json: TokenJson = parse("create_token", &response.body)?;
        Ok(InstallationToken {
            token: json.token,
            expires_at: json.expires_at,
            permissions: json.permissions,
            repository_selection: json.repository_selection,
            repositories: json
                .repositories
                .map(|repos| repos.into_iter().map(|repo| repo.full_name).collect()),
            attempts: response.attempts,
        })
    }

    async fn revoke_installation_token(&self, token: &SecretString) -> Result<(), GitHubError> {
        let url = self.endpoint(&["installation", "token"])?;
        let response = self
            .execute("revoke_token", || {
                self.request(Method::DELETE, &url, &Auth::Token(token), None::<&()>)
            })
            .await?;
        match response.status {
            // 204 (https://docs.github.com/en/rest/apps/installations#revoke-an-installation-access-token).
            status if status.is_success() => Ok(()),
            // 401: already expired or revoked; 404: nothing to revoke. Either way it is dead.
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(map_error(&response)),
        }
    }
}

/// The error of a coalesced lookup, as each of its waiting callers receives it.
fn unshare(error: Arc<GitHubError>) -> GitHubError {
    Arc::unwrap_or_clone(error)
}

#[cfg(test)]
mod tests;
