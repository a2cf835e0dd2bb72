//! A GitHub REST API simulator for the endpoints the broker (and git) use.
//!
//! Behaves as GitHub documents it: App JWTs checked against the App's public key (RS256,
//! `iss` = app id, `iat`/`exp` window ≤ 10 min); 404 for an unknown installation; 422 when a
//! permission/level exceeds the installation's ceiling or a repository is not accessible; 403 for
//! a suspended installation; installation tokens that `GET /installation/repositories` accepts and
//! that stop working once revoked or expired.
//!
//! Routing lives in [`GitHubSimulator::router`]. Git smart HTTP over the same repositories and
//! tokens is served separately, over TLS ([`GitHubSimulator::start_git`], in [`crate::git`]).

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng as _;
use rsa::traits::PublicKeyParts as _;
use rsa::RsaPublicKey;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// `documentation_url` of every error body, as GitHub sends one.
pub const DOCUMENTATION_URL: &str = "https://docs.github.com/rest";
/// Lifetime of installation tokens: GitHub's is one hour.
pub const TOKEN_LIFETIME: Duration = Duration::hours(1);
/// Longest App JWT GitHub accepts (`exp` at most 10 minutes after issue).
pub const MAX_APP_JWT_LIFETIME: Duration = Duration::minutes(10);
/// Clock tolerance on App JWTs: GitHub tells Apps to backdate `iat` by 60 s, so a JWT may span
/// up to [`MAX_APP_JWT_LIFETIME`] plus this, and `iat` may be this far in the future.
pub const APP_JWT_TOLERANCE: Duration = Duration::seconds(60);
/// GitHub's cap on `repositories` + `repository_ids` in one token request.
pub const MAX_TOKEN_REPOSITORIES: usize = 500;
/// GitHub's default page size.
pub const DEFAULT_PER_PAGE: usize = 30;
/// GitHub's largest page size.
pub const MAX_PER_PAGE: usize = 100;
/// Length of the random part of simulated `ghs_` tokens (GitHub's classic format).
pub const TOKEN_RANDOM_CHARS: usize = 36;

/// GitHub's 422 message when a requested repository is not part of the installation.
pub const MSG_REPOSITORY_NOT_ACCESSIBLE: &str =
    "There is at least one repository that does not exist or is not accessible to the parent installation.";
/// GitHub's 422 message when a permission or level exceeds the installation's.
pub const MSG_PERMISSIONS_NOT_GRANTED: &str =
    "The permissions requested are not granted to this installation.";
/// GitHub's 403 message for a suspended installation.
pub const MSG_SUSPENDED: &str = "This installation has been suspended";
/// GitHub's 401 message for an unusable App JWT.
pub const MSG_JWT_NOT_DECODED: &str = "A JSON web token could not be decoded";
/// GitHub's 401 message for an unknown, revoked or expired token.
pub const MSG_BAD_CREDENTIALS: &str = "Bad credentials";

/// A repository of a simulated installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRepo {
    /// Repository id.
    pub id: i64,
    /// Name without owner.
    pub name: String,
    /// Private repositories need a token to be read.
    pub private: bool,
}

/// A simulated installation of the App.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimInstallation {
    /// Installation id.
    pub id: i64,
    /// Account login (exact spelling).
    pub account_login: String,
    /// Account id.
    pub account_id: i64,
    /// `Organization` or `User`.
    pub account_type: String,
    /// Permission ceiling.
    pub permissions: BTreeMap<String, String>,
    /// `all` or `selected`.
    pub repository_selection: String,
    /// Repositories the installation reaches.
    pub repositories: Vec<SimRepo>,
    /// Suspended installations refuse to mint (403).
    pub suspended: bool,
}

impl SimInstallation {
    /// An organization installation with `repository_selection: all`, the ceiling
    /// `{contents: write, metadata: read}` and no repositories yet.
    pub fn organization(id: i64, login: &str, account_id: i64) -> Self {
        Self {
            id,
            account_login: login.to_owned(),
            account_id,
            account_type: "Organization".to_owned(),
            permissions: BTreeMap::from([
                ("contents".to_owned(), "write".to_owned()),
                ("metadata".to_owned(), "read".to_owned()),
            ]),
            repository_selection: "all".to_owned(),
            repositories: Vec::new(),
            suspended: false,
        }
    }

    /// Add a repository.
    pub fn with_repo(mut self, id: i64, name: &str, private: bool) -> Self {
        self.repositories.push(SimRepo {
            id,
            name: name.to_owned(),
            private,
        });
        self
    }

    /// Set one permission of the ceiling.
    pub fn with_permission(mut self, permission: &str, level: &str) -> Self {
        self.permissions
            .insert(permission.to_owned(), level.to_owned());
        self
    }
}

/// What the simulator saw about one token it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTokenInfo {
    /// Installation id.
    pub installation_id: i64,
    /// `owner/name` it reaches.
    pub repositories: Vec<String>,
    /// Permissions it carries.
    pub permissions: BTreeMap<String, String>,
    /// Revoked through `DELETE /installation/token`.
    pub revoked: bool,
}

/// One request as the simulator received it (no credentials are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRequest {
    /// HTTP method.
    pub method: String,
    /// Path, still percent-encoded.
    pub path: String,
    /// `User-Agent`, which GitHub requires.
    pub user_agent: Option<String>,
    /// `Accept`.
    pub accept: Option<String>,
    /// `X-GitHub-Api-Version`.
    pub api_version: Option<String>,
}

impl SimRequest {
    /// What the request log keeps of `request`: never its credentials.
    pub(crate) fn of<B>(request: &axum::http::Request<B>) -> Self {
        let header = |name: HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            user_agent: header(header::USER_AGENT),
            accept: header(header::ACCEPT),
            api_version: header(HeaderName::from_static("x-github-api-version")),
        }
    }
}

/// One token as the simulator keeps it.
#[derive(Debug, Clone)]
struct TokenRecord {
    installation_id: i64,
    /// Repository ids it reaches; `None` = every repository of the installation.
    repository_ids: Option<Vec<i64>>,
    permissions: BTreeMap<String, String>,
    expires_at: OffsetDateTime,
    revoked: bool,
}

/// An injected failure, served instead of the next request's real answer.
#[derive(Debug, Clone, Copy)]
struct InjectedFailure {
    status: StatusCode,
    retry_after: Option<u64>,
}

/// Shared mutable state.
struct SimState {
    app_id: String,
    app_key: DecodingKey,
    installations: BTreeMap<i64, SimInstallation>,
    tokens: HashMap<String, TokenRecord>,
    minted: u64,
    revoked: u64,
    failures: VecDeque<InjectedFailure>,
    /// Every request received, in order.
    requests: Vec<SimRequest>,
    /// Shortest and longest wait before a token POST's answer (see `set_mint_delay`).
    mint_delay: (std::time::Duration, std::time::Duration),
    /// Wait before a token DELETE's answer (see `set_revoke_delay`).
    revoke_delay: std::time::Duration,
}

/// The simulator's configuration and state. Cheap to clone (shared state).
#[derive(Clone)]
pub struct GitHubSimulator {
    state: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for GitHubSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("GitHubSimulator")
            .field("app_id", &state.app_id)
            .field("installations", &state.installations.len())
            .finish_non_exhaustive()
    }
}

impl GitHubSimulator {
    /// A simulator for the App `app_id` (App JWT `iss`; the numeric id or the client id) whose
    /// JWTs are verified with `app_public_key`.
    pub fn new(app_id: &str, app_public_key: RsaPublicKey) -> Self {
        let app_key = DecodingKey::from_rsa_raw_components(
            &app_public_key.n().to_bytes_be(),
            &app_public_key.e().to_bytes_be(),
        );
        Self {
            state: Arc::new(Mutex::new(SimState {
                app_id: app_id.to_owned(),
                app_key,
                installations: BTreeMap::new(),
                tokens: HashMap::new(),
                minted: 0,
                revoked: 0,
                failures: VecDeque::new(),
                requests: Vec::new(),
                mint_delay: Default::default(),
                revoke_delay: Default::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A test that panicked while holding the lock must not cascade into every other request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add or replace an installation.
    pub fn add_installation(&self, installation: SimInstallation) {
        self.lock()
            .installations
            .insert(installation.id, installation);
    }

    /// A copy of an installation as it stands now.
    pub fn installation(&self, installation_id: i64) -> Option<SimInstallation> {
        self.lock().installations.get(&installation_id).cloned()
    }

    /// Suspend or unsuspend an installation.
    pub fn set_suspended(&self, installation_id: i64, suspended: bool) {
        if let Some(installation) = self.lock().installations.get_mut(&installation_id) {
            installation.suspended = suspended;
        }
    }

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
            .fallback(|| async { gh_error(StatusCode::NOT_FOUND, "Not Found") })
            .layer(middleware::from_fn_with_state(
                self.clone(),
                record_and_inject,
            ))
            .with_state(self.clone())
    }

    /// Serve on `127.0.0.1:0`; returns the bound address. The server runs until the process ends
    /// or the returned handle is dropped.
    pub async fn start(&self) -> std::io::Result<RunningSimulator> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = self.router();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Either a send or the sender being dropped means stop.
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(error = %error, "github simulator stopped with an error");
            }
        });
        Ok(RunningSimulator {
            addr,
            url: format!("http://{addr}"),
            _shutdown: shutdown,
        })
    }

    /// Is `token` an installation token that GitHub would accept now?
    pub fn token_is_live(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .get(token)
            .is_some_and(|record| record.is_live(OffsetDateTime::now_utc()))
    }

    /// What the simulator knows about `token` (also after revocation).
    pub fn token_info(&self, token: &str) -> Option<SimTokenInfo> {
        let state = self.lock();
        let record = state.tokens.get(token)?;
        let repositories = state
            .reachable(record)
            .into_iter()
            .map(|(full_name, _)| full_name)
            .collect();
        Some(SimTokenInfo {
            installation_id: record.installation_id,
            repositories,
            permissions: record.permissions.clone(),
            revoked: record.revoked,
        })
    }

    /// Make `token` expired now (as if its hour had passed). Returns whether it was known.
    pub fn expire_token(&self, token: &str) -> bool {
        match self.lock().tokens.get_mut(token) {
            Some(record) => {
                record.expires_at = OffsetDateTime::now_utc() - Duration::seconds(1);
                true
            }
            None => false,
        }
    }

    /// How many tokens were minted and revoked so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.minted, state.revoked)
    }

    /// Answer the next `n` requests (any route) with `status` instead of the real answer.
    /// `retry_after` adds a `Retry-After` header (seconds). A 403 is a primary rate limit
    /// (`X-RateLimit-Remaining: 0`, reset after `retry_after` or 60 s), a 429 a secondary one;
    /// anything else is a bare GitHub error body.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut state = self.lock();
        state.failures.extend(std::iter::repeat_n(
            InjectedFailure {
                status,
                retry_after,
            },
            n,
        ));
    }

    /// How many requests so far had a path starting with `path_prefix` (e.g.
    /// `/users/acme/installation`, or `/` for all). Injected failures count too.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|request| request.path.starts_with(path_prefix))
            .count()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.lock().requests.clone()
    }

    /// Append a request served by another surface of the simulator (git smart HTTP) to the log.
    pub(crate) fn record_request(&self, request: SimRequest) {
        self.lock().requests.push(request);
    }

    /// Every repository of every installation, as `(owner login, repo)` with GitHub's spelling.
    pub fn repositories(&self) -> Vec<(String, SimRepo)> {
        self.lock()
            .installations
            .values()
            .flat_map(|installation| {
                installation
                    .repositories
                    .iter()
                    .map(|repo| (installation.account_login.clone(), repo.clone()))
            })
            .collect()
    }

    /// The repository `owner/name` (both case-insensitive, as GitHub matches them), as
    /// `(owner login, repo)` with GitHub's spelling.
    pub fn find_repository(&self, owner: &str, name: &str) -> Option<(String, SimRepo)> {
        let state = self.lock();
        let installation = state.find_by_login(owner)?;
        let repo = installation
            .repositories
            .iter()
            .find(|repo| repo.name.eq_ignore_ascii_case(name))?;
        Some((installation.account_login.clone(), repo.clone()))
    }

    /// What `token` may do to `owner/name` now: the check every git request goes through.
    pub fn token_access(&self, token: &str, owner: &str, name: &str) -> TokenAccess {
        let state = self.lock();
        let Some(record) = state
            .tokens
            .get(token)
            .filter(|record| record.is_live(OffsetDateTime::now_utc()))
        else {
            return TokenAccess::Invalid;
        };
        let reaches = state
            .find_by_login(owner)
            .filter(|installation| installation.id == record.installation_id)
            .and_then(|installation| {
                installation
                    .repositories
                    .iter()
                    .find(|repo| repo.name.eq_ignore_ascii_case(name))
            })
            .is_some_and(|repo| {
                record
                    .repository_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&repo.id))
            });
        if reaches {
            TokenAccess::Reaches {
                permissions: record.permissions.clone(),
            }
        } else {
            TokenAccess::NoAccess
        }
    }
}

/// What an installation token may do to one repository (see [`GitHubSimulator::token_access`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAccess {
    /// Not a token the simulator issued, or revoked, or expired: GitHub's "Bad credentials".
    Invalid,
    /// A live token that does not reach the repository (or the repository does not exist).
    NoAccess,
    /// A live token that reaches the repository with these permissions.
    Reaches {
        /// The token's permissions (`contents: read|write`, …).
        permissions: BTreeMap<String, String>,
    },
}

/// A simulator bound to a port. Dropping it stops the server.
pub struct RunningSimulator {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, to use as the broker's `github.api_url`.
    pub url: String,
    /// Dropping the sender tells the server to shut down.
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for RunningSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSimulator")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TokenRecord {
    fn is_live(&self, now: OffsetDateTime) -> bool {
        !self.revoked && self.expires_at > now
    }
}

impl SimState {
    fn find_by_login(&self, login: &str) -> Option<&SimInstallation> {
        self.installations
            .values()
            .find(|installation| installation.account_login.eq_ignore_ascii_case(login))
    }

    /// `(full_name, repo)` of every repository a token reaches.
    fn reachable(&self, record: &TokenRecord) -> Vec<(String, SimRepo)> {
        let Some(installation) = self.installations.get(&record.installation_id) else {
            return Vec::new();
        };
        installation
            .repositories
            .iter()
            .filter(|repo| {
                record
                    .repository_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&repo.id))
            })
            .map(|repo| {
                (
                    format!("{}/{}", installation.account_login, repo.name),
                    repo.clone(),
                )
            })
            .collect()
    }

    /// Check the App JWT as GitHub does; `Err` is the 401 to send.
    fn check_app_jwt(&self, headers: &HeaderMap) -> Result<(), GhError> {
        let unauthorized = |message: &'static str| gh_error(StatusCode::UNAUTHORIZED, message);
        let Some(jwt) = credential(headers, &["bearer"]) else {
            return Err(unauthorized(MSG_JWT_NOT_DECODED));
        };
        #[derive(Deserialize)]
        struct AppClaims {
            iat: i64,
            exp: i64,
            iss: Value,
        }
        // Only RS256: a JWT with another `alg` (HS256 keyed with the public key, `none`) fails.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iat", "exp", "iss"]);
        let Ok(data) = jsonwebtoken::decode::<AppClaims>(&jwt, &self.app_key, &validation) else {
            return Err(unauthorized(MSG_JWT_NOT_DECODED));
        };
        let claims = data.claims;
        let iss = match &claims.iss {
            Value::String(iss) => iss.clone(),
            Value::Number(iss) => iss.to_string(),
            _ => return Err(unauthorized(MSG_JWT_NOT_DECODED)),
        };
        if iss != self.app_id {
            return Err(unauthorized(
                "'Issuer' claim ('iss') does not identify this app",
            ));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let tolerance = APP_JWT_TOLERANCE.whole_seconds();
        let max_lifetime = MAX_APP_JWT_LIFETIME.whole_seconds();
        if claims.exp <= now {
            return Err(unauthorized(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ));
        }
        if claims.iat > now + tolerance {
            return Err(unauthorized(
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            ));
        }
        if claims.exp - claims.iat > max_lifetime + tolerance
            || claims.exp > now + max_lifetime + tolerance
        {
            return Err(unauthorized(
                "'Expiration time' claim ('exp') is too far in the future",
            ));
        }
        Ok(())
    }

    /// The installation token presented, if any: `Ok(None)` without an Authorization header,
    /// `Err(401)` for an unknown, revoked or expired one.
    fn check_token(&self, headers: &HeaderMap) -> Result<Option<(String, TokenRecord)>, GhError> {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        let bad_credentials = || gh_error(StatusCode::UNAUTHORIZED, MSG_BAD_CREDENTIALS);
        let token = credential(headers, &["token", "bearer"]).ok_or_else(bad_credentials)?;
        match self.tokens.get(&token) {
            Some(record) if record.is_live(OffsetDateTime::now_utc()) => {
                Ok(Some((token, record.clone())))
            }
            _ => Err(bad_credentials()),
        }
    }
}

/// The credential after one of `schemes` (case-insensitive) in `Authorization`.
fn credential(headers: &HeaderMap, schemes: &[&str]) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (schemes.iter().any(|s| scheme.eq_ignore_ascii_case(s)) && !credential.is_empty())
        .then(|| credential.to_owned())
}

/// A GitHub-shaped error: `{"message", "documentation_url"}` with a status.
#[derive(Debug, Clone, Copy)]
struct GhError {
    status: StatusCode,
    message: &'static str,
}

impl IntoResponse for GhError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "message": self.message, "documentation_url": DOCUMENTATION_URL })),
        )
            .into_response()
    }
}

fn gh_error(status: StatusCode, message: &'static str) -> GhError {
    GhError { status, message }
}

fn timestamp(at: OffsetDateTime) -> String {
    // GitHub's timestamps have whole seconds and a `Z`.
    let at = OffsetDateTime::from_unix_timestamp(at.unix_timestamp()).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

fn installation_json(installation: &SimInstallation, app_id: &str) -> Value {
    let app_id: Value = app_id
        .parse::<i64>()
        .map_or_else(|_| Value::from(app_id), Value::from);
    json!({
        "id": installation.id,
        "app_id": app_id,
        "account": account_json(installation),
        "target_type": installation.account_type,
        "target_id": installation.account_id,
        "permissions": installation.permissions,
        "repository_selection": installation.repository_selection,
        "events": [],
        "suspended_at": installation.suspended.then(|| timestamp(OffsetDateTime::now_utc())),
    })
}

fn account_json(installation: &SimInstallation) -> Value {
    json!({
        "login": installation.account_login,
        "id": installation.account_id,
        "type": installation.account_type,
    })
}

fn repo_json(installation: &SimInstallation, repo: &SimRepo) -> Value {
    json!({
        "id": repo.id,
        "name": repo.name,
        "full_name": format!("{}/{}", installation.account_login, repo.name),
        "private": repo.private,
        "visibility": if repo.private { "private" } else { "public" },
        "owner": account_json(installation),
    })
}

/// `?per_page=&page=` as GitHub reads them.
#[derive(Debug, Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// Slice `items` for `query` and build the `Link` header GitHub would send.
fn paginate<'a, T>(
    items: &'a [T],
    query: &PageQuery,
    headers: &HeaderMap,
    path: &str,
) -> (&'a [T], Option<HeaderValue>) {
    let per_page = query
        .per_page
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page = query.page.unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = start.saturating_add(per_page).min(items.len());
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    let link = |n: usize, rel: &str| {
        format!("<http://{host}{path}?per_page={per_page}&page={n}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    let header = (!links.is_empty())
        .then(|| HeaderValue::from_str(&links.join(", ")).ok())
        .flatten();
    (&items[start..end], header)
}

fn with_link(body: Value, link: Option<HeaderValue>) -> Response {
    let mut response = Json(body).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// Records every request and serves injected failures before routing.
async fn record_and_inject(
    State(sim): State<GitHubSimulator>,
    request: Request,
    next: Next,
) -> Response {
    let failure = {
        let mut state = sim.lock();
        state.requests.push(SimRequest::of(&request));
        state.failures.pop_front()
    };
    let delay = sim.delay_for(request.method(), request.uri().path());
    match failure {
        Some(failure) => injected_response(failure),
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

fn injected_response(failure: InjectedFailure) -> Response {
    let message = match failure.status {
        StatusCode::FORBIDDEN => "API rate limit exceeded for installation.",
        StatusCode::TOO_MANY_REQUESTS => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        _ => "Server Error",
    };
    let mut response = gh_error(failure.status, message).into_response();
    let headers = response.headers_mut();
    if let Some(seconds) = failure.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if failure.status == StatusCode::FORBIDDEN {
        let reset = OffsetDateTime::now_utc().unix_timestamp()
            + i64::try_from(failure.retry_after.unwrap_or(60)).unwrap_or(60);
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(0),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset),
        );
    }
    response
}

async fn get_app(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
) -> Result<Response, GhError> {
    let state = sim.lock();
    state.check_app_jwt(&headers)?;
    let id: Value = state
        .app_id
        .parse::<i64>()
        .map_or_else(|_| Value::from(state.app_id.clone()), Value::from);
    Ok(Json(json!({
        "id": id,
        "slug": "sts-broker-simulator",
        "name": "sts-broker simulator",
        "installations_count": state.installations.len(),
    }))
    .into_response())
}

async fn list_app_installations(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Response, GhError> {
    let state = sim.lock();
    state.check_app_jwt(&headers)?;
    let all: Vec<&SimInstallation> = state.installations.values().collect();
    let (page, link) = paginate(&all, &query, &headers, "/app/installations");
    let body: Vec<Value> = page
        .iter()
        .map(|installation| installation_json(installation, &state.app_id))
        .collect();
    Ok(with_link(Value::Array(body), link))
}

async fn get_installation_by_id(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, GhError> {
    let state = sim.lock();
    state.check_app_jwt(&headers)?;
    let installation = state
        .installations
        .get(&id)
        .ok_or_else(|| gh_error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(installation_json(installation, &state.app_id)).into_response())
}

fn installation_by_login(
    sim: &GitHubSimulator,
    headers: &HeaderMap,
    login: &str,
    organizations_only: bool,
) -> Result<Response, GhError> {
    let state = sim.lock();
    state.check_app_jwt(headers)?;
    let installation = state
        .find_by_login(login)
        .filter(|installation| {
            !organizations_only
                || installation
                    .account_type
                    .eq_ignore_ascii_case("organization")
        })
        .ok_or_else(|| gh_error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(installation_json(installation, &state.app_id)).into_response())
}

async fn get_org_installation(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Result<Response, GhError> {
    installation_by_login(&sim, &headers, &org, true)
}

async fn get_user_installation(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, GhError> {
    // GitHub answers this one for organizations too.
    installation_by_login(&sim, &headers, &user, false)
}

async fn get_repo_installation(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, GhError> {
    let state = sim.lock();
    state.check_app_jwt(&headers)?;
    let installation = state
        .find_by_login(&owner)
        .filter(|installation| {
            installation
                .repositories
                .iter()
                .any(|candidate| candidate.name.eq_ignore_ascii_case(&repo))
        })
        .ok_or_else(|| gh_error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(installation_json(installation, &state.app_id)).into_response())
}

/// Body of a token request; every field optional.
#[derive(Debug, Default, Deserialize)]
struct AccessTokenBody {
    repositories: Option<Vec<String>>,
    repository_ids: Option<Vec<i64>>,
    permissions: Option<BTreeMap<String, Value>>,
}

/// Rank of a permission level; `None` for anything GitHub does not know (`writ`).
pub(crate) fn level_rank(level: &str) -> Option<u8> {
    match level {
        "read" => Some(1),
        "write" => Some(2),
        "admin" => Some(3),
        _ => None,
    }
}

async fn create_access_token(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, GhError> {
    let mut state = sim.lock();
    state.check_app_jwt(&headers)?;
    let installation = state
        .installations
        .get(&id)
        .cloned()
        .ok_or_else(|| gh_error(StatusCode::NOT_FOUND, "Not Found"))?;
    if installation.suspended {
        return Err(gh_error(StatusCode::FORBIDDEN, MSG_SUSPENDED));
    }
    let request: AccessTokenBody = if body.iter().all(u8::is_ascii_whitespace) {
        AccessTokenBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"))?
    };

    let names = request.repositories.unwrap_or_default();
    let ids = request.repository_ids.unwrap_or_default();
    if names.len() + ids.len() > MAX_TOKEN_REPOSITORIES {
        return Err(gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Too many repositories were requested. The maximum is 500.",
        ));
    }
    let subset = !names.is_empty() || !ids.is_empty();
    let mut selected: Vec<SimRepo> = Vec::new();
    let not_accessible = || {
        gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            MSG_REPOSITORY_NOT_ACCESSIBLE,
        )
    };
    for name in &names {
        let repo = installation
            .repositories
            .iter()
            .find(|repo| repo.name.eq_ignore_ascii_case(name))
            .ok_or_else(not_accessible)?;
        if !selected.contains(repo) {
            selected.push(repo.clone());
        }
    }
    for wanted in &ids {
        let repo = installation
            .repositories
            .iter()
            .find(|repo| repo.id == *wanted)
            .ok_or_else(not_accessible)?;
        if !selected.contains(repo) {
            selected.push(repo.clone());
        }
    }

    let mut permissions = BTreeMap::new();
    match request
        .permissions
        .filter(|requested| !requested.is_empty())
    {
        Some(requested) => {
            let not_granted = || {
                gh_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    MSG_PERMISSIONS_NOT_GRANTED,
                )
            };
            for (permission, level) in requested {
                let level = level.as_str().ok_or_else(not_granted)?.to_owned();
                let wanted = level_rank(&level).ok_or_else(not_granted)?;
                // GitHub grants metadata read to every installation token.
                let implied = permission == "metadata" && level == "read";
                let ceiling = installation
                    .permissions
                    .get(&permission)
                    .and_then(|ceiling| level_rank(ceiling));
                if !implied && ceiling.is_none_or(|ceiling| wanted > ceiling) {
                    return Err(not_granted());
                }
                permissions.insert(permission, level);
            }
        }
        None => permissions.clone_from(&installation.permissions),
    }
    permissions
        .entry("metadata".to_owned())
        .or_insert_with(|| "read".to_owned());

    let random: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(TOKEN_RANDOM_CHARS)
        .map(char::from)
        .collect();
    let token = format!("ghs_{random}");
    let expires_at = OffsetDateTime::now_utc() + TOKEN_LIFETIME;
    state.tokens.insert(
        token.clone(),
        TokenRecord {
            installation_id: id,
            repository_ids: subset.then(|| selected.iter().map(|repo| repo.id).collect()),
            permissions: permissions.clone(),
            expires_at,
            revoked: false,
        },
    );
    state.minted += 1;

    let mut body = json!({
        "token": token,
        "expires_at": timestamp(expires_at),
        "permissions": permissions,
        "repository_selection": if subset { "selected" } else { installation.repository_selection.as_str() },
    });
    if subset {
        body["repositories"] = selected
            .iter()
            .map(|repo| repo_json(&installation, repo))
            .collect();
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_installation_repositories(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Result<Response, GhError> {
    let state = sim.lock();
    let Some((_, record)) = state.check_token(&headers)? else {
        return Err(gh_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        ));
    };
    let reachable = state.reachable(&record);
    let (page, link) = paginate(&reachable, &query, &headers, "/installation/repositories");
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
}

async fn get_repository(
    State(sim): State<GitHubSimulator>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Response, GhError> {
    let state = sim.lock();
    let caller = state.check_token(&headers)?;
    let not_found = || gh_error(StatusCode::NOT_FOUND, "Not Found");
    let installation = state.find_by_login(&owner).ok_or_else(not_found)?;
    let repo = installation
        .repositories
        .iter()
        .find(|repo| repo.name.eq_ignore_ascii_case(&name))
        .ok_or_else(not_found)?;
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
    let mut state = sim.lock();
    let Some((token, _)) = state.check_token(&headers)? else {
        return Err(gh_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        ));
    };
    if let Some(record) = state.tokens.get_mut(&token) {
        record.revoked = true;
    }
    state.revoked += 1;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A slow GitHub, and what it minted: for tests of callers that give up.
impl GitHubSimulator {
    /// Answer every token POST (`/app/installations/{id}/access_tokens`) `delay` late. The token
    /// is minted first, as GitHub does while its answer is on the way.
    pub fn set_mint_delay(&self, delay: std::time::Duration) {
        self.set_mint_delay_between(delay, delay);
    }

    /// Like [`Self::set_mint_delay`], each answer late by a random time in `min..=max`.
    pub fn set_mint_delay_between(&self, min: std::time::Duration, max: std::time::Duration) {
        self.lock().mint_delay = (min, max.max(min));
    }

    /// Answer every token DELETE (`/installation/token`) `delay` late, after revoking.
    pub fn set_revoke_delay(&self, delay: std::time::Duration) {
        self.lock().revoke_delay = delay;
    }

    /// How late a request is answered: token POSTs and DELETEs as set, the rest at once.
    fn delay_for(&self, method: &axum::http::Method, path: &str) -> std::time::Duration {
        let state = self.lock();
        if method == axum::http::Method::POST && path.ends_with("/access_tokens") {
            let (min, max) = state.mint_delay;
            if max <= min {
                return min;
            }
            return rand::thread_rng().gen_range(min..=max);
        }
        if method == axum::http::Method::DELETE && path == "/installation/token" {
            return state.revoke_delay;
        }
        std::time::Duration::ZERO
    }

    /// Every token minted so far (installation tokens, revoked or not), with what it reaches.
    pub fn issued_tokens(&self) -> Vec<(String, SimTokenInfo)> {
        let tokens: Vec<String> = self.lock().tokens.keys().cloned().collect();
        tokens
            .into_iter()
            .filter_map(|token| self.token_info(&token).map(|info| (token, info)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RsaKeyPair;
    use jsonwebtoken::{EncodingKey, Header};
    use std::sync::OnceLock;

    const APP_ID: &str = "4242";

    /// One App key for every test: RSA generation is the slow part.
    fn app_key() -> &'static RsaKeyPair {
        static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
        KEY.get_or_init(RsaKeyPair::generate)
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    fn app_jwt(iat: i64, exp: i64, iss: &str) -> String {
        let claims = json!({ "iat": iat, "exp": exp, "iss": iss });
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &app_key().encoding_key(),
        )
        .unwrap()
    }

    fn valid_jwt() -> String {
        app_jwt(now() - 60, now() + 540, APP_ID)
    }

    fn simulator() -> GitHubSimulator {
        let sim = GitHubSimulator::new(APP_ID, app_key().public_key());
        sim.add_installation(
            SimInstallation::organization(1, "Acme", 1001)
                .with_repo(2001, "infra", true)
                .with_repo(2002, "modules", true)
                .with_repo(2003, "website", false)
                .with_permission("issues", "read"),
        );
        let mut user = SimInstallation::organization(2, "OctoUser", 1002);
        user.account_type = "User".into();
        sim.add_installation(user.with_repo(3001, "dotfiles", false));
        sim
    }

    async fn message(response: reqwest::Response) -> String {
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["documentation_url"], DOCUMENTATION_URL);
        body["message"].as_str().unwrap().to_owned()
    }

    async fn mint(running: &RunningSimulator, installation: i64, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!(
                "{}/app/installations/{installation}/access_tokens",
                running.url
            ))
            .bearer_auth(valid_jwt())
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn minted_token(running: &RunningSimulator, body: Value) -> String {
        let response = mint(running, 1, body).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn refuses_app_jwts_that_github_would_refuse() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "iat": now() - 60, "exp": now() + 540, "iss": APP_ID }),
            // The classic confusion attack: the public key used as an HMAC secret.
            &EncodingKey::from_secret(app_key().public_pem().as_bytes()),
        )
        .unwrap();
        let other_key = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({ "iat": now() - 60, "exp": now() + 540, "iss": APP_ID }),
            &RsaKeyPair::generate().encoding_key(),
        )
        .unwrap();
        let cases = [
            (
                "expired",
                app_jwt(now() - 700, now() - 100, APP_ID),
                "'Expiration time' claim ('exp') must be",
            ),
            (
                "one hour long",
                app_jwt(now() - 60, now() + 3540, APP_ID),
                "too far in the future",
            ),
            (
                "issued in the future",
                app_jwt(now() + 300, now() + 540, APP_ID),
                "'Issued at' claim",
            ),
            (
                "another app",
                app_jwt(now() - 60, now() + 540, "999"),
                "'Issuer' claim",
            ),
            ("signed with hs256", hs256, MSG_JWT_NOT_DECODED),
            ("signed with another key", other_key, MSG_JWT_NOT_DECODED),
            ("not a jwt", "garbage".to_owned(), MSG_JWT_NOT_DECODED),
        ];
        for (case, jwt, expected) in cases {
            let response = reqwest::Client::new()
                .get(format!("{}/app", running.url))
                .bearer_auth(jwt)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{case}");
            let message = message(response).await;
            assert!(message.contains(expected), "{case}: {message}");
        }
        let accepted = reqwest::Client::new()
            .get(format!("{}/app", running.url))
            .bearer_auth(valid_jwt())
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 200);
    }

    #[tokio::test]
    async fn finds_installations_case_insensitively_and_answers_with_githubs_spelling() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let client = reqwest::Client::new();
        let cases = [
            ("/users/acme/installation", 200, Some("Acme")),
            ("/orgs/ACME/installation", 200, Some("Acme")),
            ("/repos/acme/INFRA/installation", 200, Some("Acme")),
            ("/users/octouser/installation", 200, Some("OctoUser")),
            ("/orgs/octouser/installation", 404, None),
            ("/repos/acme/missing/installation", 404, None),
            ("/users/ghost/installation", 404, None),
            ("/app/installations/1", 200, Some("Acme")),
            ("/app/installations/77", 404, None),
        ];
        for (path, status, login) in cases {
            let response = client
                .get(format!("{}{path}", running.url))
                .bearer_auth(valid_jwt())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{path}");
            let body: Value = response.json().await.unwrap();
            if let Some(login) = login {
                assert_eq!(body["account"]["login"], login, "{path}");
                assert_eq!(body["suspended_at"], Value::Null, "{path}");
            }
        }
    }

    #[tokio::test]
    async fn reports_suspension_in_the_installation_and_refuses_to_mint() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        sim.set_suspended(1, true);
        let body: Value = reqwest::Client::new()
            .get(format!("{}/app/installations/1", running.url))
            .bearer_auth(valid_jwt())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body["suspended_at"].is_string());
        let response = mint(&running, 1, json!({})).await;
        assert_eq!(response.status(), 403);
        assert_eq!(message(response).await, MSG_SUSPENDED);
        assert_eq!(sim.counts(), (0, 0));
    }

    #[tokio::test]
    async fn validates_token_requests_against_the_installation() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let too_many: Vec<i64> = (0..501).collect();
        let cases = [
            (
                json!({"permissions": {"contents": "admin"}}),
                MSG_PERMISSIONS_NOT_GRANTED,
            ),
            (
                json!({"permissions": {"contents": "writ"}}),
                MSG_PERMISSIONS_NOT_GRANTED,
            ),
            (
                json!({"permissions": {"actions": "read"}}),
                MSG_PERMISSIONS_NOT_GRANTED,
            ),
            (
                json!({"repositories": ["infra", "elsewhere"]}),
                MSG_REPOSITORY_NOT_ACCESSIBLE,
            ),
            (
                json!({"repository_ids": [9999]}),
                MSG_REPOSITORY_NOT_ACCESSIBLE,
            ),
            (json!({"repository_ids": too_many}), "Too many repositories"),
        ];
        for (body, expected) in cases {
            let response = mint(&running, 1, body.clone()).await;
            assert_eq!(response.status(), 422, "{body}");
            assert!(message(response).await.contains(expected), "{body}");
        }
        assert_eq!(mint(&running, 99, json!({})).await.status(), 404);
        assert_eq!(sim.counts(), (0, 0));
    }

    #[tokio::test]
    async fn mints_tokens_scoped_to_the_request() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let response = mint(
            &running,
            1,
            json!({"repositories": ["INFRA"], "repository_ids": [2002], "permissions": {"contents": "read"}}),
        )
        .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        let token = body["token"].as_str().unwrap();
        assert!(token.starts_with("ghs_"));
        assert_eq!(token.len(), 4 + TOKEN_RANDOM_CHARS);
        assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            body["permissions"],
            json!({"contents": "read", "metadata": "read"})
        );
        assert_eq!(body["repository_selection"], "selected");
        let names: Vec<&str> = body["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|repo| repo["full_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Acme/infra", "Acme/modules"]);
        let info = sim.token_info(token).unwrap();
        assert_eq!(info.installation_id, 1);
        assert_eq!(info.repositories, ["Acme/infra", "Acme/modules"]);
        assert!(!info.revoked);

        let everything = minted_token(&running, json!({})).await;
        let info = sim.token_info(&everything).unwrap();
        assert_eq!(info.repositories.len(), 3);
        assert_eq!(info.permissions["issues"], "read");
        assert_eq!(info.permissions["contents"], "write");
        assert_eq!(sim.counts(), (2, 0));
    }

    #[tokio::test]
    async fn installation_tokens_work_until_revoked_or_expired() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let client = reqwest::Client::new();
        let token = minted_token(&running, json!({"repositories": ["infra"]})).await;
        let list = |scheme: &'static str, token: String| {
            client
                .get(format!("{}/installation/repositories", running.url))
                .header("authorization", format!("{scheme} {token}"))
                .send()
        };
        for scheme in ["token", "Bearer", "TOKEN", "bearer"] {
            let response = list(scheme, token.clone()).await.unwrap();
            assert_eq!(response.status(), 200, "{scheme}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["total_count"], 1);
            assert_eq!(body["repositories"][0]["full_name"], "Acme/infra");
        }
        let revoked = client
            .delete(format!("{}/installation/token", running.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 204);
        assert!(!sim.token_is_live(&token));
        assert!(sim.token_info(&token).unwrap().revoked);
        let after = list("token", token.clone()).await.unwrap();
        assert_eq!(after.status(), 401);
        assert_eq!(message(after).await, MSG_BAD_CREDENTIALS);
        let again = client
            .delete(format!("{}/installation/token", running.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 401);
        assert_eq!(sim.counts(), (1, 1));

        let expiring = minted_token(&running, json!({})).await;
        assert!(sim.token_is_live(&expiring));
        assert!(sim.expire_token(&expiring));
        assert!(!sim.token_is_live(&expiring));
        assert_eq!(list("token", expiring).await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn repositories_are_visible_only_to_tokens_that_reach_them() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let client = reqwest::Client::new();
        let token = minted_token(&running, json!({"repositories": ["infra"]})).await;
        let cases = [
            ("/repos/acme/infra", Some(&token), 200),
            ("/repos/Acme/modules", Some(&token), 404),
            ("/repos/acme/website", None, 200),
            ("/repos/acme/infra", None, 404),
            ("/repos/acme/nothing", Some(&token), 404),
        ];
        for (path, token, status) in cases {
            let mut request = client.get(format!("{}{path}", running.url));
            if let Some(token) = token {
                request = request.header("authorization", format!("token {token}"));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), status, "{path} with {}", token.is_some());
        }
        let dead = client
            .get(format!("{}/repos/acme/website", running.url))
            .header("authorization", "token ghs_unknown")
            .send()
            .await
            .unwrap();
        assert_eq!(dead.status(), 401);
    }

    #[tokio::test]
    async fn pages_with_link_headers() {
        let sim = simulator();
        let mut big = SimInstallation::organization(3, "big", 1003);
        for id in 0..250 {
            big = big.with_repo(10_000 + id, &format!("repo-{id}"), true);
        }
        sim.add_installation(big);
        let running = sim.start().await.unwrap();
        let client = reqwest::Client::new();
        let response = mint(&running, 3, json!({})).await;
        let token = response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = |n: usize| {
            client
                .get(format!(
                    "{}/installation/repositories?per_page=100&page={n}",
                    running.url
                ))
                .bearer_auth(&token)
                .send()
        };
        let first = page(1).await.unwrap();
        let link = first.headers()["link"].to_str().unwrap().to_owned();
        assert!(link.contains("page=2>; rel=\"next\""), "{link}");
        assert!(link.contains("page=3>; rel=\"last\""), "{link}");
        let body: Value = first.json().await.unwrap();
        assert_eq!(body["total_count"], 250);
        assert_eq!(body["repositories"].as_array().unwrap().len(), 100);
        let last = page(3).await.unwrap();
        let link = last.headers()["link"].to_str().unwrap().to_owned();
        assert!(!link.contains("rel=\"next\""), "{link}");
        let body: Value = last.json().await.unwrap();
        assert_eq!(body["repositories"].as_array().unwrap().len(), 50);

        let installations = client
            .get(format!("{}/app/installations?per_page=2", running.url))
            .bearer_auth(valid_jwt())
            .send()
            .await
            .unwrap();
        assert!(installations.headers()["link"]
            .to_str()
            .unwrap()
            .contains("rel=\"next\""));
        let body: Value = installations.json().await.unwrap();
        assert_eq!(body.as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn injects_failures_and_counts_requests() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let client = reqwest::Client::new();
        sim.fail_next(1, 502, None);
        sim.fail_next(1, 429, Some(7));
        sim.fail_next(1, 403, None);
        let get = || {
            client
                .get(format!("{}/app/installations/1", running.url))
                .bearer_auth(valid_jwt())
                .send()
        };
        assert_eq!(get().await.unwrap().status(), 502);
        let limited = get().await.unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "7");
        let primary = get().await.unwrap();
        assert_eq!(primary.status(), 403);
        assert_eq!(primary.headers()["x-ratelimit-remaining"], "0");
        assert_eq!(get().await.unwrap().status(), 200);
        assert_eq!(sim.request_count("/app/installations/1"), 4);
        assert_eq!(sim.request_count("/users/"), 0);
        let first = &sim.requests()[0];
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("GET", "/app/installations/1")
        );
    }

    #[tokio::test]
    async fn dropping_the_running_simulator_stops_the_server() {
        let sim = simulator();
        let running = sim.start().await.unwrap();
        let addr = running.addr;
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        drop(running);
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "the simulator still accepts connections");
    }
}
