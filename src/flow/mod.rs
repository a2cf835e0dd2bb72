//! Flows: what the broker does for each request, in domain terms. A flow takes the [`App`], a
//! parsed request and the request id (for the audit log), records its metrics and audit events,
//! and answers with a domain value or a [`FlowError`]. Flows know no HTTP: the http layer turns
//! their inputs and outputs into wire bodies and [`FlowError`] into a status.
//!
//! May import: `app`, `audit`, `config`, `crypto`, `github`, `ids`, `metrics`, `oidc`, `policy`,
//! `session`, `store`. Never the web framework or the http layer.

pub mod admin;
mod audited;
pub mod exchange;
pub mod mint;
pub mod revoke;

pub(crate) use audited::{Audited, Counted};

use crate::app::App;
use crate::audit::{Actor, ActorKind, AuditEvent, Outcome};
use crate::github::GitHubError;
use crate::oidc::VerifyError;
use crate::session::{Authenticated, Purpose, SessionClaims, SessionError};
use crate::store::StoreError;
use secrecy::SecretString;
use std::time::Duration;

/// Why a caller is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// The OIDC token failed verification.
    #[error("the oidc token was not accepted")]
    InvalidToken,
    /// The session token is malformed, forged, or names no session of its workspace.
    #[error("the session token is not valid")]
    InvalidSession,
    /// The session is past its expiry.
    #[error("the session has expired")]
    SessionExpired,
    /// The session was ended.
    #[error("the session was revoked")]
    SessionRevoked,
}

impl Unauthenticated {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidToken => "invalid_token",
            Self::InvalidSession => "invalid_session",
            Self::SessionExpired => "session_expired",
            Self::SessionRevoked => "session_revoked",
        }
    }
}

/// Why an authenticated caller may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// The workspace is not entitled to GitHub STS, or the feature is off for it.
    #[error("the workspace is not entitled to github sts")]
    StsNotEntitled,
}

impl Forbidden {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::StsNotEntitled => "sts_not_entitled",
        }
    }
}

/// What was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// No such workspace.
    #[error("workspace")]
    Workspace,
    /// No live policy of that name in the workspace.
    #[error("policy")]
    Policy,
    /// The GitHub App is not installed on `owner`.
    #[error("installation on {owner}")]
    Installation {
        /// The owner asked for.
        owner: String,
    },
    /// No installation linked for the owner in the workspace.
    #[error("installation link")]
    InstallationLink,
    /// No session of that id in the workspace (it may exist in another one).
    #[error("session")]
    Session,
}

impl Missing {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Workspace => "workspace_not_found",
            Self::Policy => "policy_not_found",
            Self::Installation { .. } => "installation_not_found",
            Self::InstallationLink => "installation_not_linked",
            Self::Session => "session_not_found",
        }
    }
}

/// What a change clashed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A workspace with this id exists.
    #[error("a workspace with this id exists")]
    WorkspaceExists,
    /// The installation is linked to another workspace.
    #[error("the installation is linked to another workspace")]
    InstallationLinkedElsewhere,
}

impl Conflict {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::WorkspaceExists => "workspace_exists",
            Self::InstallationLinkedElsewhere => "installation_linked_elsewhere",
        }
    }
}

/// A failure the caller can only report, never fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Internal {
    /// The session JWT could not be signed.
    #[error("session signing failed")]
    SessionSigning,
    /// Minted tokens could not be recorded (they were revoked at GitHub).
    #[error("audit write failed")]
    AuditWrite,
    /// The task running a mint ended without an answer (it panicked).
    #[error("the mint task ended without an answer")]
    MintTask,
}

impl Internal {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::SessionSigning => "session_signing_failed",
            Self::AuditWrite => "audit_write_failed",
            Self::MintTask => "mint_task_failed",
        }
    }
}

/// Why a flow did not do what was asked. Each variant has a stable [`code`](Self::code) (the
/// wire's `errorTag`); the http layer alone decides the status.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The request is malformed; one message per problem, each naming its field.
    #[error("invalid request: {}", .0.join("; "))]
    InvalidRequest(Vec<String>),
    /// The session was made from a token that is not a GitHub Actions job's.
    #[error("the session was not made from a github actions oidc token")]
    NotGitHubActionsSession,
    /// The caller is not authenticated.
    #[error(transparent)]
    Unauthenticated(Unauthenticated),
    /// The caller may not do this.
    #[error(transparent)]
    Forbidden(Forbidden),
    /// What the request names does not exist.
    #[error("{0} not found")]
    NotFound(Missing),
    /// The change clashes with what exists.
    #[error(transparent)]
    Conflict(Conflict),
    /// The OIDC token was exchanged before.
    #[error("the oidc token was already used")]
    Replayed,
    /// Too many requests: a mint quota of `[limits]` is spent.
    #[error("rate limited")]
    RateLimited {
        /// When the caller may try again.
        retry_after: Option<Duration>,
    },
    /// The OIDC issuer's keys could not be fetched.
    #[error("the oidc issuer is unavailable")]
    IssuerUnavailable(#[source] VerifyError),
    /// A trust policy failed validation; one message per problem.
    #[error("the policy is invalid: {}", .0.join("; "))]
    PolicyInvalid(Vec<String>),
    /// GitHub refused to revoke some tokens; the caller may retry.
    #[error("{not_revoked} tokens could not be revoked at github")]
    RevokeIncomplete {
        /// How many were not revoked.
        not_revoked: usize,
        /// The revoke was a step of deleting a workspace, which was therefore kept.
        workspace_kept: bool,
    },
    /// The caller stopped waiting for a mint (it disconnected, or the answer deadline passed
    /// while GitHub was slow): nothing was handed out, and whatever GitHub minted was revoked.
    #[error("the mint was abandoned before github answered")]
    Abandoned,
    /// GitHub failed.
    #[error("github request failed")]
    GitHub(#[from] GitHubError),
    /// The database failed, or refused a write.
    #[error("store request failed")]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error("{kind}")]
    Internal {
        /// What failed.
        kind: Internal,
        /// Why, for the log.
        #[source]
        source: anyhow::Error,
    },
}

impl FlowError {
    /// The stable snake_case code of this error: the wire's `errorTag`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::NotGitHubActionsSession => "not_github_actions_session",
            Self::Unauthenticated(why) => why.code(),
            Self::Forbidden(why) => why.code(),
            Self::NotFound(what) => what.code(),
            Self::Conflict(what) => what.code(),
            Self::Replayed => "token_replayed",
            Self::RateLimited { .. } => "rate_limited",
            Self::IssuerUnavailable(_) => "issuer_unavailable",
            Self::PolicyInvalid(_) => "policy_invalid",
            Self::RevokeIncomplete { .. } => "github_revoke_failed",
            Self::Abandoned => "mint_abandoned",
            Self::GitHub(e) => e.code(),
            Self::Store(StoreError::Conflict(_)) => "conflict",
            Self::Store(StoreError::NotFound(_)) => "not_found",
            Self::Store(StoreError::Replay) => "token_replayed",
            Self::Store(_) => "database_error",
            Self::Internal { kind, .. } => kind.code(),
        }
    }

    /// One validation message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(vec![message.into()])
    }

    /// How the audit log files this error: a refusal on purpose (`Denied`: the request, the
    /// caller or the state it names is wrong) or something that could not be done (`Failure`:
    /// GitHub, the issuer, the database or the broker failed).
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::InvalidRequest(_)
            | Self::NotGitHubActionsSession
            | Self::Unauthenticated(_)
            | Self::Forbidden(_)
            | Self::NotFound(_)
            | Self::Conflict(_)
            | Self::Replayed
            | Self::RateLimited { .. }
            | Self::PolicyInvalid(_)
            | Self::Store(StoreError::Conflict(_) | StoreError::NotFound(_) | StoreError::Replay) => {
                Outcome::Denied
            }
            Self::IssuerUnavailable(_)
            | Self::RevokeIncomplete { .. }
            | Self::Abandoned
            | Self::GitHub(_)
            | Self::Store(_)
            | Self::Internal { .. } => Outcome::Failure,
        }
    }
}

impl From<SessionError> for FlowError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Invalid => Self::Unauthenticated(Unauthenticated::InvalidSession),
            SessionError::Expired => Self::Unauthenticated(Unauthenticated::SessionExpired),
            SessionError::Revoked => Self::Unauthenticated(Unauthenticated::SessionRevoked),
            SessionError::Store(e) => Self::Store(e),
        }
    }
}

impl From<crate::limits::Throttled> for FlowError {
    fn from(t: crate::limits::Throttled) -> Self {
        Self::RateLimited {
            retry_after: Some(t.retry_after),
        }
    }
}

/// Result of a flow.
pub type FlowResult<T> = Result<T, FlowError>;

/// Check a session bearer token's signature, issuer, audience and expiry for `purpose`, reading
/// no session row (only the signing keys, when they are due a refresh). A token refused here names nobody the broker has verified, so its refusal is counted
/// but not audited; every decision after it is (see [`load_session`]).
pub async fn verify_session(
    app: &App,
    token: &SecretString,
    purpose: Purpose,
) -> FlowResult<SessionClaims> {
    crate::session::verify_token(&app.sessions, token, purpose)
        .await
        .map_err(|e| {
            let e = FlowError::from(e);
            app.metrics.deny(e.code());
            e
        })
}

/// The session row behind verified claims, checked for `purpose`. Names the caller in `event`
/// (by the row's claims when there is a row), so that a refusal here is audited with who it was.
pub async fn load_session(
    app: &App,
    claims: SessionClaims,
    purpose: Purpose,
    event: &mut AuditEvent,
) -> FlowResult<Authenticated> {
    event.workspace_id = Some(claims.ws.clone());
    event.actor = Actor {
        session_id: Some(claims.sid.clone()),
        ..Actor::of(ActorKind::Oidc)
    };
    let row = app.store.get_session(&claims.sid).await?;
    if let Some(session) = row.as_ref().filter(|s| s.workspace_id == claims.ws) {
        event.actor = Actor::from_claims(&session.claims, Some(&session.id));
    }
    let session = crate::session::check_row(&claims, row, purpose)?;
    Ok(Authenticated { claims, session })
}

/// The workspace, or [`Missing::Workspace`].
async fn existing_workspace(
    app: &App,
    id: &crate::ids::WorkspaceId,
) -> FlowResult<crate::store::Workspace> {
    app.store
        .get_workspace(id.as_str())
        .await?
        .ok_or(FlowError::NotFound(Missing::Workspace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_wire_tags() {
        let cases = [
            (FlowError::invalid("x"), "invalid_request"),
            (
                FlowError::NotGitHubActionsSession,
                "not_github_actions_session",
            ),
            (
                FlowError::Unauthenticated(Unauthenticated::InvalidToken),
                "invalid_token",
            ),
            (
                FlowError::Forbidden(Forbidden::StsNotEntitled),
                "sts_not_entitled",
            ),
            (
                FlowError::NotFound(Missing::Workspace),
                "workspace_not_found",
            ),
            (
                FlowError::Conflict(Conflict::WorkspaceExists),
                "workspace_exists",
            ),
            (FlowError::Replayed, "token_replayed"),
            (FlowError::Abandoned, "mint_abandoned"),
            (FlowError::RateLimited { retry_after: None }, "rate_limited"),
            (FlowError::PolicyInvalid(Vec::new()), "policy_invalid"),
            (
                FlowError::Store(StoreError::Corrupt("x".into())),
                "database_error",
            ),
            (
                FlowError::GitHub(GitHubError::Suspended),
                "github_installation_suspended",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn refusals_are_denied_and_what_could_not_be_done_is_a_failure() {
        let denied = [
            FlowError::invalid("x"),
            FlowError::Unauthenticated(Unauthenticated::SessionRevoked),
            FlowError::Forbidden(Forbidden::StsNotEntitled),
            FlowError::Replayed,
            FlowError::Store(StoreError::Conflict("x".into())),
        ];
        for error in denied {
            assert_eq!(error.outcome(), Outcome::Denied, "{error}");
        }
        let failed = [
            FlowError::Abandoned,
            FlowError::GitHub(GitHubError::Suspended),
            FlowError::Store(StoreError::Corrupt("x".into())),
            FlowError::RevokeIncomplete {
                not_revoked: 1,
                workspace_kept: false,
            },
        ];
        for error in failed {
            assert_eq!(error.outcome(), Outcome::Failure, "{error}");
        }
    }
}
