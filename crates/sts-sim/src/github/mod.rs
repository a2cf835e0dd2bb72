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
//!
//! Inside: `state` keeps installations, tokens and the failures to inject; `auth` checks App
//! JWTs and installation tokens; `routes` answers each endpoint; `wire` shapes every body as
//! GitHub does.

mod auth;
mod routes;
mod state;
#[cfg(test)]
mod tests;
mod wire;

pub use auth::{APP_JWT_TOLERANCE, MAX_APP_JWT_LIFETIME};
pub use routes::{RunningSimulator, GHES_API_PREFIX};
pub(crate) use state::level_rank;
pub use state::{
    GitHubSimulator, SimTokenInfo, TokenAccess, MAX_TOKEN_REPOSITORIES, TOKEN_LIFETIME,
    TOKEN_RANDOM_CHARS,
};
pub use wire::{
    DEFAULT_PER_PAGE, DOCUMENTATION_URL, MAX_PER_PAGE, MSG_BAD_CREDENTIALS, MSG_JWT_NOT_DECODED,
    MSG_PERMISSIONS_NOT_GRANTED, MSG_REPOSITORY_NOT_ACCESSIBLE, MSG_SUSPENDED,
};

use axum::http::{header, HeaderName};
use std::collections::BTreeMap;

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

    /// The repository `name`, matched case-insensitively as GitHub matches names.
    pub(crate) fn repository(&self, name: &str) -> Option<&SimRepo> {
        self.repositories
            .iter()
            .find(|repo| repo.name.eq_ignore_ascii_case(name))
    }
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
            // Under a prefix (GHES's `/api/v3`) the router sees the path without it; the log
            // keeps the path the client sent.
            path: request
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .map_or(request.uri().path(), |original| original.path())
                .to_owned(),
            user_agent: header(header::USER_AGENT),
            accept: header(header::ACCEPT),
            api_version: header(HeaderName::from_static("x-github-api-version")),
        }
    }
}
