//! CLIENT spans around every call the broker makes to GitHub, at the [`GitHubApp`] surface the
//! flows use, so they hold whichever client sits underneath.

use super::spans::{client_span, record_client_error};
use crate::github::{
    GitHubApp, GitHubError, Installation, InstallationToken, Repository, TokenRequest,
};
use async_trait::async_trait;
use secrecy::SecretString;
use std::future::Future;
use tracing::Instrument as _;

tokio::task_local! {
    /// The installation a GitHub call is made for, while the call runs: the client's call
    /// observer reads it to label the rate-limit gauge.
    static INSTALLATION: i64;
}

/// The installation the running GitHub call is for, if the caller named one.
pub fn current_installation() -> Option<i64> {
    INSTALLATION.try_with(|id| *id).ok()
}

/// A [`GitHubApp`] that wraps each call of `inner` in a CLIENT span.
pub struct TracedGitHub<G> {
    inner: G,
    /// `server.address` of every span: the host of the GitHub API.
    host: String,
}

impl<G> TracedGitHub<G> {
    /// Trace the calls of `inner`, which talks to the API at `api_url`.
    pub fn new(inner: G, api_url: &url::Url) -> Self {
        Self {
            inner,
            host: api_url.host_str().unwrap_or_default().to_owned(),
        }
    }

    /// Run `call` in a CLIENT span `method template`, marking the span failed on an error.
    async fn traced<T>(
        &self,
        method: &'static str,
        template: &'static str,
        installation: Option<i64>,
        call: impl Future<Output = Result<T, GitHubError>>,
    ) -> Result<T, GitHubError> {
        let span = client_span(method, template, &self.host);
        let result = match installation {
            Some(id) => INSTALLATION.scope(id, call).instrument(span.clone()).await,
            None => call.instrument(span.clone()).await,
        };
        if let Err(error) = &result {
            record_client_error(&span, error.code());
        }
        result
    }
}

#[async_trait]
impl<G: GitHubApp> GitHubApp for TracedGitHub<G> {
    async fn installation_for_owner(&self, owner: &str) -> Result<Installation, GitHubError> {
        let call = self.inner.installation_for_owner(owner);
        self.traced("GET", "/users/{owner}/installation", None, call)
            .await
    }

    async fn installation(&self, id: i64) -> Result<Installation, GitHubError> {
        let call = self.inner.installation(id);
        self.traced(
            "GET",
            "/app/installations/{installation_id}",
            Some(id),
            call,
        )
        .await
    }

    async fn installation_repositories(&self, id: i64) -> Result<Vec<Repository>, GitHubError> {
        let call = self.inner.installation_repositories(id);
        self.traced("GET", "/installation/repositories", Some(id), call)
            .await
    }

    async fn create_installation_token(
        &self,
        id: i64,
        request: &TokenRequest,
    ) -> Result<InstallationToken, GitHubError> {
        let call = self.inner.create_installation_token(id, request);
        let template = "/app/installations/{installation_id}/access_tokens";
        self.traced("POST", template, Some(id), call).await
    }

    async fn revoke_installation_token(&self, token: &SecretString) -> Result<(), GitHubError> {
        let call = self.inner.revoke_installation_token(token);
        self.traced("DELETE", "/installation/token", None, call)
            .await
    }
}
