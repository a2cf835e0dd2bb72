//! What can go wrong, worded so that the person reading the CI log knows what to do next.

/// Every failure the client reports. Messages never carry a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Bad flags or environment.
    #[error("{0}")]
    Usage(String),
    /// No OIDC token could be had.
    #[error("{0}")]
    Oidc(String),
    /// The broker could not be reached at all.
    #[error("cannot reach the broker at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// `POST /sts` answered 403 (Atmos: `ErrSTSNoEntitlement`).
    #[error(
        "workspace `{workspace}` is not entitled to GitHub STS, or the feature is disabled \
         (ask the broker's operator to enable `sts` for the workspace)"
    )]
    NotEntitled { workspace: String },
    /// `POST /sts` answered 400 (Atmos: `ErrNotGitHubActionsSession`).
    #[error(
        "the broker says this is not a GitHub Actions session: GitHub STS requires a session \
         from a GitHub Actions OIDC token (does the job have `permissions: id-token: write`?)"
    )]
    NotActionsSession,
    /// The session was refused even after authenticating again.
    #[error("the broker refused the session: {0}")]
    SessionRejected(String),
    /// Any other broker answer that is not success.
    #[error("{0}")]
    Broker(String),
    /// The local state could not be written (reading damage is never fatal).
    #[error("state: {0}")]
    State(String),
}

/// A transport error in words, without the URL's query (which may carry a credential).
pub(crate) fn describe_reqwest(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "refused to follow a redirect"
    } else if error.is_decode() {
        "could not decode the answer"
    } else {
        "request failed"
    };
    let mut detail = String::from(kind);
    let mut source = std::error::Error::source(error);
    // The innermost cause (e.g. "Connection refused", "invalid peer certificate") is the useful one.
    let mut last = None;
    while let Some(cause) = source {
        last = Some(cause.to_string());
        source = cause.source();
    }
    if let Some(last) = last {
        detail.push_str(": ");
        detail.push_str(&last);
    }
    detail
}
