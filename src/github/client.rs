//! Thin typed GitHub REST client over reqwest: explicit timeouts, no redirects, capped bodies,
//! retries only where they are safe, and short-lived caches of installation lookups.

use super::app_jwt::AppJwtSigner;
use super::{
    CallObserver, GitHubApp, GitHubError, Installation, InstallationToken, Repository, TokenRequest,
};
use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use url::Url;

/// Media type GitHub recommends for every REST call.
pub(crate) const GITHUB_ACCEPT: &str = "application/vnd.github+json";
/// Pinned REST API version, so a new GitHub default cannot change response shapes under us.
pub(crate) const GITHUB_API_VERSION: &str = "2022-11-28";
/// Header carrying [`GITHUB_API_VERSION`].
pub(crate) const GITHUB_API_VERSION_HEADER: &str = "x-github-api-version";
/// GitHub rejects requests without a User-Agent and asks for one that identifies the client.
pub(crate) const GITHUB_USER_AGENT: &str = concat!("sts-broker/", env!("CARGO_PKG_VERSION"));

/// Time to establish TCP+TLS: a GitHub that cannot accept a connection in 5 s is down for us.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request deadline: a CI job is waiting on the mint, and a hung call must not pin a worker.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response body read: the biggest legitimate answer (a page of 100 repositories) is far
/// below this; anything larger is refused instead of buffered.
pub(crate) const MAX_RESPONSE_BYTES: usize = 5 * 1024 * 1024;
/// GitHub's error `message` is echoed in our errors; cap it so a huge body cannot bloat logs.
pub(crate) const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// Attempts per call, first one included.
pub(crate) const MAX_ATTEMPTS: u32 = 3;
/// First backoff; doubled per attempt, plus up to the same again of random jitter so that many
/// brokers retrying together spread out.
pub(crate) const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest `Retry-After` (or rate-limit reset) we sleep through. Beyond it the caller is better
/// served by a prompt `RateLimited` than by a request that outlives its own timeout.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Installation lookups are cached this long: installations change rarely, and a suspension or
/// uninstall is still caught by the mint call itself, which is never cached.
pub(crate) const INSTALLATION_CACHE_TTL: Duration = Duration::from_secs(60);
/// A 404 is remembered this long, so callers naming an owner without the App cannot make us call
/// GitHub on every request, yet a fresh install is seen within half a minute.
pub(crate) const INSTALLATION_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Repository lists are cached this long: listing costs a mint, several pages and a revoke.
pub(crate) const REPOSITORIES_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries per cache. Owners come from callers, so the cache must not grow without bound; when
/// full, expired entries are dropped, and if that is not enough the cache starts over.
pub(crate) const MAX_CACHE_ENTRIES: usize = 10_000;
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
    http: reqwest::Client,
    signer: AppJwtSigner,
    observer: Option<CallObserver>,
    by_owner: TtlCache<String, Option<Installation>>,
    by_id: TtlCache<i64, Option<Installation>>,
    repositories: TtlCache<i64, Vec<Repository>>,
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

/// Which failures a call may retry; see [`GitHubClient::execute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryPolicy {
    /// GET and DELETE: repeating them has no extra effect.
    Idempotent,
    /// The mint POST: repeat only when GitHub certainly did not act on it.
    NotProcessedOnly,
}

/// How a request authenticates.
enum Auth<'a> {
    /// The App JWT.
    App,
    /// An installation token.
    Token(&'a SecretString),
}

/// A response read in full (within [`MAX_RESPONSE_BYTES`]).
struct ApiResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl GitHubClient {
    /// Build; fails when the private key does not parse.
    pub fn new(config: GitHubClientConfig) -> Result<Self, GitHubError> {
        if config.api_url.cannot_be_a_base() || !matches!(config.api_url.scheme(), "http" | "https")
        {
            return Err(GitHubError::InvalidConfig(
                "github api url must be an http(s) url".into(),
            ));
        }
        let signer = AppJwtSigner::new(&config.app_id, &config.private_key_pem)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(GITHUB_ACCEPT));
        headers.insert(
            GITHUB_API_VERSION_HEADER,
            HeaderValue::from_static(GITHUB_API_VERSION),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(GITHUB_USER_AGENT));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the App JWT or an installation token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| GitHubError::InvalidConfig("could not build the http client".into()))?;
        Ok(Self {
            api_url: config.api_url,
            http,
            signer,
            observer: config.observer,
            by_owner: TtlCache::default(),
            by_id: TtlCache::default(),
            repositories: TtlCache::default(),
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

    fn request(
        &self,
        method: Method,
        url: Url,
        auth: &Auth<'_>,
    ) -> Result<RequestBuilder, GitHubError> {
        let credential = match auth {
            Auth::App => self.signer.jwt()?,
            Auth::Token(token) => (*token).clone(),
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {}", credential.expose_secret()))
            .map_err(|_| GitHubError::InvalidConfig("credential is not a valid header".into()))?;
        value.set_sensitive(true);
        Ok(self.http.request(method, url).header(AUTHORIZATION, value))
    }

    fn observe(&self, operation: &'static str, status: u16, started: Instant) {
        if let Some(observer) = &self.observer {
            observer(operation, status, started.elapsed());
        }
    }

    /// Send with retries per `policy` and read the body. Returns the last response whatever its
    /// status; the caller maps non-2xx with [`map_error`].
    ///
    /// GET and DELETE retry on transport errors, 5xx, 429 and rate-limit 403s. The mint POST
    /// retries only when GitHub certainly did not process it: a connect error (nothing was sent)
    /// or a 429 / rate-limit 403 (refused before processing). It does NOT retry a 5xx or a
    /// timeout: GitHub may have minted the token and lost the 201 on the way, and a token we never
    /// saw is live for an hour with nobody able to revoke it (revocation needs the token itself).
    async fn execute(
        &self,
        operation: &'static str,
        policy: RetryPolicy,
        build: impl Fn() -> Result<RequestBuilder, GitHubError>,
    ) -> Result<ApiResponse, GitHubError> {
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let sent = build()?.send().await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    self.observe(operation, 0, started);
                    let retryable = match policy {
                        RetryPolicy::Idempotent => true,
                        RetryPolicy::NotProcessedOnly => error.is_connect(),
                    };
                    if retryable && attempt < MAX_ATTEMPTS {
                        tracing::debug!(
                            github.operation = operation,
                            attempt,
                            "github request failed to send, retrying"
                        );
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(GitHubError::Transport(error));
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match read_capped(response).await {
                Ok(body) => body,
                Err(error) => {
                    self.observe(operation, status.as_u16(), started);
                    // A body cut short on a mint may hide a 201: never retry it.
                    let retryable = policy == RetryPolicy::Idempotent
                        && matches!(error, GitHubError::Transport(_));
                    if retryable && attempt < MAX_ATTEMPTS {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(error);
                }
            };
            self.observe(operation, status.as_u16(), started);
            let rate_limited = is_rate_limited(status, &headers, &body);
            let retryable =
                rate_limited || (policy == RetryPolicy::Idempotent && status.is_server_error());
            if !retryable || status.is_success() {
                return Ok(ApiResponse {
                    status,
                    headers,
                    body,
                });
            }
            let server_wait = retry_after(&headers);
            let wait_too_long = server_wait.is_some_and(|wait| wait > MAX_RETRY_AFTER);
            if wait_too_long && rate_limited {
                return Err(GitHubError::RateLimited {
                    retry_after: server_wait,
                });
            }
            if wait_too_long || attempt >= MAX_ATTEMPTS {
                return Ok(ApiResponse {
                    status,
                    headers,
                    body,
                });
            }
            tracing::debug!(
                github.operation = operation,
                http.status = status.as_u16(),
                attempt,
                "github answered a retryable status, retrying"
            );
            tokio::time::sleep(server_wait.unwrap_or_default().max(backoff(attempt))).await;
            attempt += 1;
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        operation: &'static str,
        url: Url,
        auth: Auth<'_>,
    ) -> Result<(T, HeaderMap), GitHubError> {
        let response = self
            .execute(operation, RetryPolicy::Idempotent, || {
                self.request(Method::GET, url.clone(), &auth)
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

    fn remember(&self, installation: &Option<Installation>) {
        if let Some(found) = installation {
            self.by_id
                .insert(found.id, installation.clone(), INSTALLATION_CACHE_TTL);
            self.by_owner.insert(
                found.account_login.to_lowercase(),
                installation.clone(),
                INSTALLATION_CACHE_TTL,
            );
        }
    }

    /// Drop every cached entry about installation `id`.
    fn forget(&self, id: i64) {
        self.by_id.remove_where(|key, _| *key == id);
        self.by_owner
            .remove_where(|_, value| value.as_ref().is_some_and(|found| found.id == id));
        self.repositories.remove_where(|key, _| *key == id);
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
        if let Some(cached) = self.by_owner.get(&key) {
            return cached.ok_or(GitHubError::NotFound);
        }
        let url = self.endpoint(&["users", owner, "installation"])?;
        let found = self.fetch_installation("get_installation", url).await?;
        match &found {
            Some(_) => self.remember(&found),
            None => self
                .by_owner
                .insert(key, None, INSTALLATION_NEGATIVE_CACHE_TTL),
        }
        found.ok_or(GitHubError::NotFound)
    }

    async fn installation(&self, id: i64) -> Result<Installation, GitHubError> {
        if let Some(cached) = self.by_id.get(&id) {
            return cached.ok_or(GitHubError::NotFound);
        }
        let url = self.endpoint(&["app", "installations", &id.to_string()])?;
        let found = self.fetch_installation("get_installation", url).await?;
        match &found {
            Some(_) => self.remember(&found),
            None => self.by_id.insert(id, None, INSTALLATION_NEGATIVE_CACHE_TTL),
        }
        found.ok_or(GitHubError::NotFound)
    }

    async fn installation_repositories(&self, id: i64) -> Result<Vec<Repository>, GitHubError> {
        if let Some(cached) = self.repositories.get(&id) {
            return Ok(cached);
        }
        // Listing needs an installation token; a metadata-only one is the least we can ask for.
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
        let repositories = listed?;
        self.repositories
            .insert(id, repositories.clone(), REPOSITORIES_CACHE_TTL);
        Ok(repositories)
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
            .execute("create_token", RetryPolicy::NotProcessedOnly, || {
                Ok(self
                    .request(Method::POST, url.clone(), &Auth::App)?
                    .json(&body))
            })
            .await?;
        if !response.status.is_success() {
            let error = map_error(&response);
            // The mint is never cached, so it is the first to learn of an uninstall or a
            // suspension: drop the stale lookups so the next one asks GitHub again.
            if matches!(error, GitHubError::NotFound | GitHubError::Suspended) {
                self.forget(id);
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
        })
    }

    async fn revoke_installation_token(&self, token: &SecretString) -> Result<(), GitHubError> {
        let url = self.endpoint(&["installation", "token"])?;
        let response = self
            .execute("revoke_token", RetryPolicy::Idempotent, || {
                self.request(Method::DELETE, url.clone(), &Auth::Token(token))
            })
            .await?;
        match response.status {
            status if status.is_success() => Ok(()),
            // 401: already expired or revoked; 404: nothing to revoke. Either way it is dead.
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(map_error(&response)),
        }
    }
}

/// Read the body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, GitHubError> {
    let too_large = || GitHubError::InvalidResponse("response body too large".into());
    if response
        .content_length()
        .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(GitHubError::Transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

fn parse<T: for<'de> Deserialize<'de>>(operation: &str, body: &[u8]) -> Result<T, GitHubError> {
    // serde's message can quote the offending value, which may be a token: report only where.
    serde_json::from_slice(body).map_err(|error| {
        GitHubError::InvalidResponse(format!(
            "{operation}: unexpected json at line {} column {}",
            error.line(),
            error.column()
        ))
    })
}

/// Exponential backoff with jitter for the wait after attempt `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    let jitter_ms =
        rand::thread_rng().gen_range(0..=u64::try_from(base.as_millis()).unwrap_or(u64::MAX));
    base + Duration::from_millis(jitter_ms)
}

/// GitHub's `message`, truncated; empty when the body is not GitHub's error JSON.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorJson {
        message: Option<String>,
    }
    serde_json::from_slice::<ErrorJson>(body)
        .ok()
        .and_then(|json| json.message)
        .map(|message| message.chars().take(MAX_ERROR_MESSAGE_CHARS).collect())
        .unwrap_or_default()
}

/// 429, or a 403 that is a primary (`X-RateLimit-Remaining: 0`) or secondary rate limit.
fn is_rate_limited(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> bool {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    if status != StatusCode::FORBIDDEN {
        return false;
    }
    let exhausted = headers
        .get("x-ratelimit-remaining")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim() == "0");
    exhausted
        || headers.contains_key(reqwest::header::RETRY_AFTER)
        || error_message(body)
            .to_lowercase()
            .contains("secondary rate limit")
}

/// How long GitHub asks us to wait: `Retry-After` seconds, else the primary limit's
/// `X-RateLimit-Reset` (epoch seconds) when the remaining count is 0.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = header("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        let reset = header("x-ratelimit-reset")?;
        let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now)));
    }
    None
}

/// `Some(true)` when a `Link` header has `rel="next"`, `Some(false)` when it has none, `None`
/// when there is no `Link` header at all.
fn link_has_next(headers: &HeaderMap) -> Option<bool> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    Some(link.split(',').any(|part| {
        part.split(';')
            .skip(1)
            .any(|param| matches!(param.trim(), "rel=\"next\"" | "rel=next"))
    }))
}

/// Map a non-2xx answer to a [`GitHubError`] (github-facts.md, "Minting").
fn map_error(response: &ApiResponse) -> GitHubError {
    let message = error_message(&response.body);
    let lower = message.to_lowercase();
    match response.status {
        StatusCode::NOT_FOUND => GitHubError::NotFound,
        StatusCode::UNAUTHORIZED => GitHubError::Unauthorized,
        StatusCode::UNPROCESSABLE_ENTITY => {
            let about_repository = lower.contains("repositor")
                && (lower.contains("not exist") || lower.contains("not accessible"));
            if about_repository {
                GitHubError::RepositoryNotAccessible
            } else {
                GitHubError::PermissionNotGranted(message)
            }
        }
        status if is_rate_limited(status, &response.headers, &response.body) => {
            GitHubError::RateLimited {
                retry_after: retry_after(&response.headers),
            }
        }
        StatusCode::FORBIDDEN if lower.contains("suspended") => GitHubError::Suspended,
        StatusCode::FORBIDDEN => GitHubError::Forbidden(message),
        status => GitHubError::Upstream {
            status: status.as_u16(),
        },
    }
}

/// A small TTL map behind a mutex (never held across an await).
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (expires, value) = entries.get(key)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if entries.len() >= MAX_CACHE_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    fn remove_where(&self, doomed: impl Fn(&K, &V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|key, (_, value)| !doomed(key, value));
    }
}

#[derive(Deserialize)]
struct AccountJson {
    login: String,
    id: i64,
    #[serde(rename = "type", default)]
    account_type: String,
}

#[derive(Deserialize)]
struct InstallationJson {
    id: i64,
    account: AccountJson,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
    #[serde(default)]
    repository_selection: String,
    #[serde(default)]
    suspended_at: Option<String>,
}

impl From<InstallationJson> for Installation {
    fn from(json: InstallationJson) -> Self {
        Self {
            id: json.id,
            account_login: json.account.login,
            account_id: json.account.id,
            account_type: json.account.account_type,
            repository_selection: json.repository_selection,
            permissions: json.permissions,
            suspended: json.suspended_at.is_some(),
        }
    }
}

#[derive(Deserialize)]
struct RepositoryJson {
    id: i64,
    name: String,
    full_name: String,
}

#[derive(Deserialize)]
struct RepositoryListJson {
    repositories: Vec<RepositoryJson>,
}

#[derive(serde::Serialize)]
struct TokenRequestJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    repositories: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<&'a BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct TokenRepositoryJson {
    full_name: String,
}

#[derive(Deserialize)]
struct TokenJson {
    token: SecretString,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
    #[serde(default)]
    repository_selection: String,
    #[serde(default)]
    repositories: Option<Vec<TokenRepositoryJson>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, OnceLock};
    use sts_sim::github::{GitHubSimulator, RunningSimulator, SimInstallation};
    use sts_sim::keys::RsaKeyPair;

    const APP_ID: &str = "4242";

    fn app_key() -> &'static RsaKeyPair {
        static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
        KEY.get_or_init(RsaKeyPair::generate)
    }

    type Calls = Arc<Mutex<Vec<(&'static str, u16)>>>;

    struct Fixture {
        sim: GitHubSimulator,
        running: RunningSimulator,
        client: GitHubClient,
        calls: Calls,
    }

    fn client_for(url: &str, pem: SecretString, calls: &Calls) -> GitHubClient {
        let calls = Arc::clone(calls);
        GitHubClient::new(GitHubClientConfig {
            api_url: Url::parse(url).unwrap(),
            app_id: APP_ID.into(),
            private_key_pem: pem,
            observer: Some(Arc::new(move |operation, status, _| {
                calls.lock().unwrap().push((operation, status));
            })),
        })
        .unwrap()
    }

    async fn fixture() -> Fixture {
        let sim = GitHubSimulator::new(APP_ID, app_key().public_key());
        sim.add_installation(
            SimInstallation::organization(1, "Acme", 1001)
                .with_repo(2001, "infra", true)
                .with_repo(2002, "modules", true)
                .with_repo(2003, "website", false)
                .with_permission("issues", "read"),
        );
        let running = sim.start().await.unwrap();
        let calls = Calls::default();
        let client = client_for(&running.url, app_key().private_pkcs1_pem(), &calls);
        Fixture {
            sim,
            running,
            client,
            calls,
        }
    }

    fn request(repositories: Option<&[&str]>, permissions: &[(&str, &str)]) -> TokenRequest {
        TokenRequest {
            repositories: repositories
                .map(|names| names.iter().map(|name| (*name).to_owned()).collect()),
            permissions: permissions
                .iter()
                .map(|(key, level)| ((*key).to_owned(), (*level).to_owned()))
                .collect(),
        }
    }

    fn contents_read() -> TokenRequest {
        request(Some(&["infra"]), &[("contents", "read")])
    }

    #[tokio::test]
    async fn mints_a_token_that_reaches_exactly_the_requested_repositories() {
        let f = fixture().await;
        let token = f
            .client
            .create_installation_token(
                1,
                &request(Some(&["infra", "modules"]), &[("contents", "read")]),
            )
            .await
            .unwrap();
        assert_eq!(
            token.repositories.as_deref(),
            Some(&["Acme/infra".to_owned(), "Acme/modules".to_owned()][..])
        );
        assert_eq!(token.repository_selection, "selected");
        assert_eq!(token.permissions["contents"], "read");
        assert_eq!(token.permissions["metadata"], "read");
        assert!(token.expires_at > OffsetDateTime::now_utc() + time::Duration::minutes(50));

        let listed: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/installation/repositories", f.running.url))
            .bearer_auth(token.token.expose_secret())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut names: Vec<&str> = listed["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|repo| repo["full_name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["Acme/infra", "Acme/modules"]);
        assert_eq!(f.calls.lock().unwrap().as_slice(), [("create_token", 201)]);
    }

    #[tokio::test]
    async fn maps_refused_mints_to_domain_errors() {
        let f = fixture().await;
        f.sim.add_installation(
            SimInstallation::organization(5, "Frozen", 1005).with_repo(1, "x", false),
        );
        f.sim.set_suspended(5, true);
        let cases: [(i64, TokenRequest, &str); 5] = [
            (
                1,
                request(Some(&["infra"]), &[("issues", "write")]),
                "github_permission_not_granted",
            ),
            (
                1,
                request(Some(&["infra"]), &[("contents", "writ")]),
                "github_permission_not_granted",
            ),
            (
                1,
                request(Some(&["elsewhere"]), &[("contents", "read")]),
                "github_repository_not_accessible",
            ),
            (404, contents_read(), "github_not_found"),
            (
                5,
                request(None, &[("contents", "read")]),
                "github_installation_suspended",
            ),
        ];
        for (installation, token_request, code) in cases {
            let error = f
                .client
                .create_installation_token(installation, &token_request)
                .await
                .unwrap_err();
            assert_eq!(
                error.code(),
                code,
                "{installation} {token_request:?}: {error}"
            );
        }
        assert_eq!(f.sim.counts(), (0, 0));
    }

    #[tokio::test]
    async fn revoking_kills_the_token_and_revoking_again_is_fine() {
        let f = fixture().await;
        let token = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap();
        let raw = token.token.expose_secret().to_owned();
        assert!(f.sim.token_is_live(&raw));
        f.client
            .revoke_installation_token(&token.token)
            .await
            .unwrap();
        assert!(!f.sim.token_is_live(&raw));
        assert!(f.sim.token_info(&raw).unwrap().revoked);
        f.client
            .revoke_installation_token(&token.token)
            .await
            .unwrap();
        assert_eq!(f.sim.counts(), (1, 1));
        let calls = f.calls.lock().unwrap().clone();
        assert_eq!(calls[1..], [("revoke_token", 204), ("revoke_token", 401)]);
    }

    #[tokio::test]
    async fn a_client_signing_with_another_key_is_unauthorized() {
        let f = fixture().await;
        let stranger = client_for(
            &f.running.url,
            RsaKeyPair::generate().private_pkcs8_pem(),
            &Calls::default(),
        );
        let error = stranger.installation(1).await.unwrap_err();
        assert!(matches!(error, GitHubError::Unauthorized), "{error:?}");
        let error = stranger
            .create_installation_token(1, &contents_read())
            .await
            .unwrap_err();
        assert!(matches!(error, GitHubError::Unauthorized), "{error:?}");
    }

    #[tokio::test]
    async fn pkcs1_and_pkcs8_keys_both_authenticate() {
        let f = fixture().await;
        for pem in [app_key().private_pkcs1_pem(), app_key().private_pkcs8_pem()] {
            let client = client_for(&f.running.url, pem, &Calls::default());
            let installation = client.installation(1).await.unwrap();
            assert_eq!(installation.account_login, "Acme");
        }
    }

    #[tokio::test]
    async fn a_key_that_is_not_an_rsa_pem_fails_construction() {
        let result = GitHubClient::new(GitHubClientConfig {
            api_url: Url::parse("https://api.github.com").unwrap(),
            app_id: APP_ID.into(),
            private_key_pem: SecretString::from(
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            ),
            observer: None,
        });
        assert!(matches!(result, Err(GitHubError::Signing(_))));
    }

    #[tokio::test]
    async fn installation_lookups_are_cached_positively_and_negatively() {
        let f = fixture().await;
        let first = f.client.installation_for_owner("ACME").await.unwrap();
        assert_eq!(first.account_login, "Acme");
        assert_eq!(first.id, 1);
        assert_eq!(first.account_type, "Organization");
        assert!(!first.suspended);
        let second = f.client.installation_for_owner("acme").await.unwrap();
        assert_eq!(first, second);
        // The lookup by owner also filled the cache by id.
        assert_eq!(f.client.installation(1).await.unwrap(), first);
        assert_eq!(f.sim.request_count("/"), 1);

        for _ in 0..2 {
            let error = f.client.installation_for_owner("ghost").await.unwrap_err();
            assert!(matches!(error, GitHubError::NotFound));
            let error = f.client.installation(77).await.unwrap_err();
            assert!(matches!(error, GitHubError::NotFound));
        }
        assert_eq!(f.sim.request_count("/users/ghost/installation"), 1);
        assert_eq!(f.sim.request_count("/app/installations/77"), 1);
    }

    #[tokio::test]
    async fn a_mint_refused_for_suspension_refreshes_the_cached_installation() {
        let f = fixture().await;
        assert!(
            !f.client
                .installation_for_owner("acme")
                .await
                .unwrap()
                .suspended
        );
        f.sim.set_suspended(1, true);
        let error = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap_err();
        assert!(matches!(error, GitHubError::Suspended), "{error:?}");
        assert!(
            f.client
                .installation_for_owner("acme")
                .await
                .unwrap()
                .suspended
        );
        assert!(f.client.installation(1).await.unwrap().suspended);
        assert_eq!(f.sim.request_count("/users/acme/installation"), 2);
    }

    #[tokio::test]
    async fn every_request_carries_githubs_required_headers() {
        let f = fixture().await;
        let token = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap();
        f.client.installation(1).await.unwrap();
        f.client
            .revoke_installation_token(&token.token)
            .await
            .unwrap();
        let requests = f.sim.requests();
        assert_eq!(requests.len(), 3);
        for request in requests {
            assert_eq!(
                request.accept.as_deref(),
                Some("application/vnd.github+json")
            );
            assert_eq!(request.api_version.as_deref(), Some("2022-11-28"));
            let agent = request.user_agent.unwrap_or_default();
            assert!(agent.starts_with("sts-broker/"), "{agent}");
        }
    }

    #[tokio::test]
    async fn owner_logins_cannot_change_the_request_path() {
        let f = fixture().await;
        let error = f
            .client
            .installation_for_owner("acme/../../app/installations/1?x=")
            .await
            .unwrap_err();
        assert!(matches!(error, GitHubError::NotFound), "{error:?}");
        assert_eq!(f.sim.request_count("/users/"), 1);
        assert_eq!(f.sim.request_count("/app/"), 0);
    }

    #[test]
    fn endpoints_keep_the_path_of_a_ghes_api_url() {
        for base in ["https://ghe.example/api/v3", "https://ghe.example/api/v3/"] {
            let client = GitHubClient::new(GitHubClientConfig {
                api_url: Url::parse(base).unwrap(),
                app_id: APP_ID.into(),
                private_key_pem: app_key().private_pkcs1_pem(),
                observer: None,
            })
            .unwrap();
            let url = client.endpoint(&["users", "acme", "installation"]).unwrap();
            assert_eq!(
                url.as_str(),
                "https://ghe.example/api/v3/users/acme/installation"
            );
        }
    }

    #[tokio::test]
    async fn lists_every_page_of_repositories_and_revokes_the_listing_token() {
        let f = fixture().await;
        let mut big = SimInstallation::organization(3, "big", 1003);
        for id in 0..230 {
            big = big.with_repo(10_000 + id, &format!("repo-{id}"), true);
        }
        f.sim.add_installation(big);
        let repositories = f.client.installation_repositories(3).await.unwrap();
        assert_eq!(repositories.len(), 230);
        assert_eq!(repositories[229].full_name, "big/repo-229");
        assert_eq!(f.sim.request_count("/installation/repositories"), 3);
        assert_eq!(f.sim.counts(), (1, 1));

        let again = f.client.installation_repositories(3).await.unwrap();
        assert_eq!(again, repositories);
        assert_eq!(f.sim.counts(), (1, 1));
        let operations: Vec<&str> = f.calls.lock().unwrap().iter().map(|(op, _)| *op).collect();
        assert_eq!(
            operations,
            [
                "create_token",
                "list_repositories",
                "list_repositories",
                "list_repositories",
                "revoke_token"
            ]
        );
    }

    #[tokio::test]
    async fn a_get_succeeds_after_two_injected_502s() {
        let f = fixture().await;
        f.sim.fail_next(2, 502, None);
        let installation = f.client.installation(1).await.unwrap();
        assert_eq!(installation.id, 1);
        assert_eq!(f.sim.request_count("/app/installations/1"), 3);
        assert_eq!(
            f.calls.lock().unwrap().as_slice(),
            [
                ("get_installation", 502),
                ("get_installation", 502),
                ("get_installation", 200)
            ]
        );
    }

    #[tokio::test]
    async fn a_get_gives_up_after_three_502s() {
        let f = fixture().await;
        f.sim.fail_next(3, 502, None);
        let error = f.client.installation(1).await.unwrap_err();
        assert!(
            matches!(error, GitHubError::Upstream { status: 502 }),
            "{error:?}"
        );
        assert_eq!(f.sim.request_count("/"), 3);
    }

    #[tokio::test]
    async fn the_mint_is_not_retried_after_a_502() {
        let f = fixture().await;
        f.sim.fail_next(1, 502, None);
        let error = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap_err();
        assert!(
            matches!(error, GitHubError::Upstream { status: 502 }),
            "{error:?}"
        );
        assert_eq!(f.sim.request_count("/app/installations/1/access_tokens"), 1);
        assert_eq!(f.sim.counts(), (0, 0));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_even_for_the_mint() {
        // Nothing listens on a port we bound and released: every attempt is a connect error,
        // which proves GitHub never saw the request.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let calls = Calls::default();
        let client = client_for(
            &format!("http://127.0.0.1:{port}"),
            app_key().private_pkcs1_pem(),
            &calls,
        );
        let error = client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap_err();
        assert!(matches!(error, GitHubError::Transport(_)), "{error:?}");
        assert_eq!(error.code(), "github_unreachable");
        assert_eq!(
            calls.lock().unwrap().as_slice(),
            [
                ("create_token", 0),
                ("create_token", 0),
                ("create_token", 0)
            ]
        );
    }

    #[tokio::test]
    async fn the_mint_is_retried_after_a_429_with_a_short_retry_after() {
        let f = fixture().await;
        f.sim.fail_next(1, 429, Some(1));
        let token = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap();
        assert!(f.sim.token_is_live(token.token.expose_secret()));
        assert_eq!(f.sim.request_count("/app/installations/1/access_tokens"), 2);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_cap_is_rate_limited_without_a_retry() {
        let f = fixture().await;
        f.sim.fail_next(1, 429, Some(120));
        let error = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap_err();
        match error {
            GitHubError::RateLimited { retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs(120)));
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert_eq!(f.sim.request_count("/"), 1);
    }

    #[tokio::test]
    async fn an_exhausted_primary_rate_limit_is_reported_without_a_retry() {
        let f = fixture().await;
        // The simulator's 403 says the limit resets in 60 s: longer than we are willing to wait.
        f.sim.fail_next(1, 403, None);
        let error = f.client.installation(1).await.unwrap_err();
        assert!(
            matches!(
                error,
                GitHubError::RateLimited {
                    retry_after: Some(_)
                }
            ),
            "{error:?}"
        );
        assert_eq!(f.sim.request_count("/"), 1);
    }

    #[tokio::test]
    async fn debug_output_shows_no_secret() {
        let f = fixture().await;
        let token = f
            .client
            .create_installation_token(1, &contents_read())
            .await
            .unwrap();
        let raw = token.token.expose_secret().to_owned();
        let jwt = f.client.signer.jwt().unwrap().expose_secret().to_owned();
        let pem = app_key().private_pkcs1_pem().expose_secret().to_owned();
        let key_body: String = pem.lines().nth(1).unwrap().to_owned();
        let config = GitHubClientConfig {
            api_url: Url::parse(&f.running.url).unwrap(),
            app_id: APP_ID.into(),
            private_key_pem: SecretString::from(pem),
            observer: None,
        };
        let shown = [
            format!("{:?}", f.client),
            format!("{token:?}"),
            format!("{config:?}"),
        ];
        for text in shown {
            assert!(!text.contains(&raw), "{text}");
            assert!(!text.contains(&jwt), "{text}");
            assert!(!text.contains(&key_body), "{text}");
        }
        assert!(format!("{:?}", f.client).contains(APP_ID));
    }

    #[test]
    fn classifies_error_responses() {
        fn response(status: u16, message: &str, headers: &[(&'static str, &str)]) -> ApiResponse {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            ApiResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers: map,
                body: Bytes::from(serde_json::json!({ "message": message }).to_string()),
            }
        }
        let cases = [
            (response(404, "Not Found", &[]), "github_not_found"),
            (response(401, "Bad credentials", &[]), "github_unauthorized"),
            (response(422, "There is at least one repository that does not exist or is not accessible to the parent installation.", &[]), "github_repository_not_accessible"),
            (response(422, "The permissions requested are not granted to this installation.", &[]), "github_permission_not_granted"),
            (response(403, "This installation has been suspended", &[]), "github_installation_suspended"),
            (response(403, "API rate limit exceeded", &[("x-ratelimit-remaining", "0")]), "github_rate_limited"),
            (response(403, "You have exceeded a secondary rate limit", &[]), "github_rate_limited"),
            (response(429, "slow down", &[]), "github_rate_limited"),
            (response(403, "Resource not accessible by integration", &[("x-ratelimit-remaining", "4999")]), "github_forbidden"),
            (response(500, "boom", &[]), "github_upstream_error"),
            (response(409, "conflict", &[]), "github_upstream_error"),
        ];
        for (response, code) in cases {
            let status = response.status;
            assert_eq!(map_error(&response).code(), code, "{status}");
        }
    }

    #[test]
    fn reads_link_headers_and_retry_after() {
        let mut headers = HeaderMap::new();
        assert_eq!(link_has_next(&headers), None);
        headers.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<http://x/a?page=2>; rel=\"next\", <http://x/a?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(link_has_next(&headers), Some(true));
        headers.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<http://x/a?page=1>; rel=\"first\", <http://x/a?page=4>; rel=\"prev\"",
            ),
        );
        assert_eq!(link_has_next(&headers), Some(false));
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    }
}
