//! The GitHub App client: App JWTs, installation lookup, minting and revoking installation
//! tokens. Knows nothing about axum or the store.
//!
//! `GitHubApp` is the seam: the broker holds an `Arc<dyn GitHubApp>`; [`GitHubClient`] is the
//! real implementation over octocrab (a thin typed client, see `client.rs`).

mod app_jwt;
mod client;

pub use client::{GitHubClient, GitHubClientConfig};

use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// An App installation as GitHub describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// Installation id.
    pub id: i64,
    /// `account.login`, exactly as GitHub spells it.
    pub account_login: String,
    /// `account.id`.
    pub account_id: i64,
    /// `account.type` (`Organization` or `User`).
    pub account_type: String,
    /// `all` or `selected`.
    pub repository_selection: String,
    /// The installation's permission ceiling.
    pub permissions: BTreeMap<String, String>,
    /// `suspended_at` is set.
    pub suspended: bool,
}

/// A repository an installation can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Repository id.
    pub id: i64,
    /// Name without owner, as GitHub spells it.
    pub name: String,
    /// `owner/name`, as GitHub spells it.
    pub full_name: String,
}

/// Body of `POST /app/installations/{id}/access_tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// Repository names (without owner); `None` = every repository of the installation.
    pub repositories: Option<Vec<String>>,
    /// Requested permissions; empty = every permission of the installation (the broker never
    /// sends it empty).
    pub permissions: BTreeMap<String, String>,
}

/// A freshly minted installation token.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    /// `ghs_…`. Never logged.
    pub token: SecretString,
    /// GitHub's `expires_at`.
    pub expires_at: OffsetDateTime,
    /// Permissions GitHub granted.
    pub permissions: BTreeMap<String, String>,
    /// `all` or `selected`.
    pub repository_selection: String,
    /// `owner/name` of each repository, when `selected`.
    pub repositories: Option<Vec<String>>,
    /// Mint requests sent to get this token, first one included: more than 1 means GitHub
    /// failed transiently (5xx, timeout, rate limit) and the mint was retried. The mint's audit
    /// event records it, because each retry after a 5xx or a timeout may have left behind a token
    /// that GitHub minted but never delivered.
    pub attempts: u32,
}

/// What can go wrong talking to GitHub, in domain terms. `Clone` because one failed lookup is
/// handed to every caller that was waiting on it (see the single-flight caches in `client`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    /// 404: no such installation, or not visible to the App.
    #[error("not found")]
    NotFound,
    /// 422: a requested permission or level is not granted to the installation.
    #[error("permission not granted to the installation: {0}")]
    PermissionNotGranted(String),
    /// 422: a requested repository does not exist or is not accessible to the installation.
    #[error("repository not accessible to the installation")]
    RepositoryNotAccessible,
    /// 403 because the installation is suspended.
    #[error("installation suspended")]
    Suspended,
    /// 403 with `X-RateLimit-Remaining: 0`, or 429, or a secondary limit; retries were exhausted.
    #[error("rate limited by github")]
    RateLimited {
        /// GitHub's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// 401: the App JWT (or the token being used) was refused.
    #[error("github refused the credentials")]
    Unauthorized,
    /// Any other 403.
    #[error("forbidden by github: {0}")]
    Forbidden(String),
    /// 5xx or another unexpected status, after retries.
    #[error("github answered {status}")]
    Upstream {
        /// HTTP status.
        status: u16,
    },
    /// Could not reach GitHub (connect, timeout, TLS), after retries.
    #[error("could not reach github")]
    Transport(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// GitHub answered something we could not parse.
    #[error("unexpected response from github: {0}")]
    InvalidResponse(String),
    /// The App's private key could not sign.
    #[error("could not sign the app jwt")]
    Signing(#[source] jsonwebtoken::errors::Error),
    /// The client configuration is unusable (e.g. an `api_url` that is not http(s)).
    #[error("invalid github client configuration: {0}")]
    InvalidConfig(String),
}

impl GitHubError {
    /// Stable snake_case code, for audit reasons and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "github_not_found",
            Self::PermissionNotGranted(_) => "github_permission_not_granted",
            Self::RepositoryNotAccessible => "github_repository_not_accessible",
            Self::Suspended => "github_installation_suspended",
            Self::RateLimited { .. } => "github_rate_limited",
            Self::Unauthorized => "github_unauthorized",
            Self::Forbidden(_) => "github_forbidden",
            Self::Upstream { .. } => "github_upstream_error",
            Self::Transport(_) => "github_unreachable",
            Self::InvalidResponse(_) => "github_invalid_response",
            Self::Signing(_) => "github_app_key_invalid",
            Self::InvalidConfig(_) => "github_config_invalid",
        }
    }
}

/// Called after every GitHub request with (operation, HTTP status or 0 on transport error,
/// latency, the answer's `x-ratelimit-remaining` if it had one). The broker feeds its
/// Prometheus histogram and rate-limit gauge from it.
pub type CallObserver = Arc<dyn Fn(&'static str, u16, Duration, Option<u64>) + Send + Sync>;

/// Everything the broker asks of GitHub.
#[async_trait]
pub trait GitHubApp: Send + Sync + 'static {
    /// `GET /users/{owner}/installation` (works for orgs and users). Cached.
    async fn installation_for_owner(&self, owner: &str) -> Result<Installation, GitHubError>;
    /// `GET /app/installations/{id}`. Cached.
    async fn installation(&self, id: i64) -> Result<Installation, GitHubError>;
    /// Every repository the installation reaches (`GET /installation/repositories`, paged,
    /// with a short-lived metadata-only token that is revoked afterwards). Cached.
    async fn installation_repositories(&self, id: i64) -> Result<Vec<Repository>, GitHubError>;
    /// `POST /app/installations/{id}/access_tokens`.
    async fn create_installation_token(
        &self,
        id: i64,
        request: &TokenRequest,
    ) -> Result<InstallationToken, GitHubError>;
    /// `DELETE /installation/token` authenticated by the token itself; 401 counts as done.
    async fn revoke_installation_token(&self, token: &SecretString) -> Result<(), GitHubError>;
}
