//! Revocation: by the session that holds the tokens (`POST /sts/revoke`, `DELETE /auth/session`)
//! or by an administrator. Every path reaches GitHub (`DELETE /installation/token` with the
//! unsealed token) before the row is marked revoked; all are idempotent.

use super::{existing_workspace, FlowError, FlowResult, Missing};
use crate::app::App;
use crate::audit::{Actor, ActorKind, AuditEvent, AuditKind, AuditToken, Outcome};
use crate::ids::WorkspaceId;
use crate::session::Authenticated;
use crate::store::{IssuedToken, TokenFilter, TokenState};
use futures::stream::{self, StreamExt as _};
use serde::Serialize;
use time::OffsetDateTime;

/// How many GitHub revoke calls run at once: fast for a job's handful of tokens, gentle on
/// GitHub's secondary rate limits for a workspace-wide revoke.
pub const REVOKE_CONCURRENCY: usize = 8;

/// What a revocation did.
#[derive(Debug, Default)]
pub struct RevokeOutcome {
    /// Tokens revoked now.
    pub revoked: Vec<IssuedToken>,
    /// Tokens GitHub could not revoke (retry later).
    pub failed: Vec<String>,
}

/// Revoke `tokens` at GitHub and mark them revoked. Tokens already revoked are skipped; expired
/// ones are marked without a call (GitHub no longer honours them).
pub async fn revoke_tokens(app: &App, tokens: Vec<IssuedToken>) -> FlowResult<RevokeOutcome> {
    let now = OffsetDateTime::now_utc();
    let live: Vec<IssuedToken> = tokens
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    let results: Vec<(IssuedToken, Result<(), String>)> = stream::iter(live)
        .map(|t| async move {
            if t.expires_at <= now {
                return (t, Ok(()));
            }
            let Some(sealed) = t.sealed_token.as_deref() else {
                return (t, Ok(()));
            };
            let result = match app.sealer.open(&t.id, sealed) {
                Ok(token) => app
                    .github
                    .revoke_installation_token(&token)
                    .await
                    .map_err(|e| e.code().to_owned()),
                Err(e) => Err(format!("unseal failed: {e}")),
            };
            (t, result)
        })
        .buffer_unordered(REVOKE_CONCURRENCY)
        .collect()
        .await;
    let mut outcome = RevokeOutcome::default();
    for (token, result) in results {
        match result {
            Ok(()) => outcome.revoked.push(token),
            Err(why) => {
                tracing::warn!(token.id = %token.id, reason = %why, "could not revoke token {}", token.id);
                outcome.failed.push(token.id);
            }
        }
    }
    let ids: Vec<String> = outcome.revoked.iter().map(|t| t.id.clone()).collect();
    if !ids.is_empty() {
        app.store.mark_tokens_revoked(&ids, now).await?;
        app.metrics.tokens_revoked.inc_by(ids.len() as u64);
    }
    Ok(outcome)
}

fn audit_tokens(tokens: &[IssuedToken]) -> Vec<AuditToken> {
    tokens
        .iter()
        .map(|t| AuditToken {
            id: t.id.clone(),
            fingerprint: t.fingerprint.clone(),
            installation_id: t.installation_id,
            owner: t.owner.clone(),
            repositories: t.repositories.clone(),
            permissions: t.permissions.clone(),
            expires_at: Some(t.expires_at),
        })
        .collect()
}

/// Finish a revoke flow: audit, then error if GitHub refused some (the caller may retry).
async fn finish(app: &App, mut audit: AuditEvent, outcome: RevokeOutcome) -> FlowResult<u64> {
    audit.tokens = audit_tokens(&outcome.revoked);
    let mut ids: Vec<i64> = outcome.revoked.iter().map(|t| t.installation_id).collect();
    ids.sort_unstable();
    ids.dedup();
    audit.installation_ids = ids;
    let revoked = outcome.revoked.len() as u64;
    if outcome.failed.is_empty() {
        audit.outcome = Outcome::Success;
    } else {
        audit.outcome = Outcome::Failure;
        audit.reason = Some("github_revoke_failed".to_owned());
        audit.details = serde_json::json!({ "notRevoked": outcome.failed });
    }
    app.store.append_audit(&audit).await?;
    if outcome.failed.is_empty() {
        Ok(revoked)
    } else {
        Err(FlowError::RevokeIncomplete {
            not_revoked: outcome.failed.len(),
            workspace_kept: false,
        })
    }
}

fn session_audit(
    auth: &Authenticated,
    kind: AuditKind,
    action: &str,
    request_id: &str,
) -> AuditEvent {
    let mut audit = AuditEvent::new(kind, action);
    audit.workspace_id = Some(auth.session.workspace_id.clone());
    audit.request_id = Some(request_id.to_owned());
    audit.actor = Actor::from_claims(&auth.session.claims, Some(&auth.session.id));
    audit
}

/// `POST /sts/revoke`: the session's tokens (all, or the given ids among them).
#[tracing::instrument(skip_all, fields(session.id = %auth.session.id))]
pub async fn revoke_session_tokens(
    app: &App,
    auth: &Authenticated,
    ids: Option<Vec<String>>,
    request_id: &str,
) -> FlowResult<u64> {
    let filter = TokenFilter {
        session_id: Some(auth.session.id.clone()),
        ids,
        ..TokenFilter::default()
    };
    let tokens = app
        .store
        .list_tokens(&auth.session.workspace_id, &filter)
        .await?;
    let outcome = revoke_tokens(app, tokens).await?;
    finish(
        app,
        session_audit(auth, AuditKind::Revoke, "revoke", request_id),
        outcome,
    )
    .await
}

/// `DELETE /auth/session`: the session and all its tokens.
#[tracing::instrument(skip_all, fields(session.id = %auth.session.id))]
pub async fn end_session(app: &App, auth: &Authenticated, request_id: &str) -> FlowResult<u64> {
    let filter = TokenFilter {
        session_id: Some(auth.session.id.clone()),
        ..TokenFilter::default()
    };
    let tokens = app
        .store
        .list_tokens(&auth.session.workspace_id, &filter)
        .await?;
    let outcome = revoke_tokens(app, tokens).await?;
    app.store
        .revoke_session(&auth.session.id, OffsetDateTime::now_utc())
        .await?;
    finish(
        app,
        session_audit(auth, AuditKind::SessionRevoke, "session.revoke", request_id),
        outcome,
    )
    .await
}

/// Which tokens an administrator revokes; selectors combine with AND, `all` alone selects every
/// active token of the workspace. Serialized as it is kept in the audit event (absent selectors
/// as `null`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    token_ids: Option<Vec<String>>,
    session_id: Option<String>,
    repository: Option<String>,
    all: Option<bool>,
}

impl Revocation {
    /// Token ids, every token (and the session) of `session_id`, every token that reaches
    /// `repository` (`owner/repo`, whole-installation tokens of the owner included), or `all`.
    /// At least one must be given.
    pub fn new(
        token_ids: Option<Vec<String>>,
        session_id: Option<String>,
        repository: Option<String>,
        all: Option<bool>,
    ) -> FlowResult<Self> {
        if !all.unwrap_or(false)
            && token_ids.is_none()
            && session_id.is_none()
            && repository.is_none()
        {
            return Err(FlowError::invalid(
                "name at least one of tokenIds, sessionId, repository, or set all: true",
            ));
        }
        Ok(Self {
            token_ids,
            session_id,
            repository,
            all,
        })
    }
}

/// An administrator's revocation in `workspace`.
#[tracing::instrument(skip_all, fields(workspace.id = %workspace))]
pub async fn admin_revoke(
    app: &App,
    workspace: &WorkspaceId,
    revocation: Revocation,
    request_id: &str,
) -> FlowResult<u64> {
    existing_workspace(app, workspace).await?;
    if let Some(session_id) = &revocation.session_id {
        // The session is revoked by id, not through the workspace's token rows: one of another
        // workspace must be as absent here as one that never existed, or the operator of one
        // workspace could end the sessions of every other.
        let session = app.store.get_session(session_id).await?;
        if session.is_none_or(|s| s.workspace_id != workspace.as_str()) {
            return Err(FlowError::NotFound(Missing::Session));
        }
    }
    let filter = TokenFilter {
        state: Some((TokenState::Active, OffsetDateTime::now_utc())),
        session_id: revocation.session_id.clone(),
        ids: revocation.token_ids.clone(),
        limit: None,
    };
    let mut tokens = app.store.list_tokens(workspace.as_str(), &filter).await?;
    if let Some(repo) = &revocation.repository {
        let owner = repo.split('/').next().unwrap_or_default();
        tokens.retain(|t| match &t.repositories {
            Some(list) => list.iter().any(|r| r.eq_ignore_ascii_case(repo)),
            None => t.owner.eq_ignore_ascii_case(owner),
        });
    }
    let outcome = revoke_tokens(app, tokens).await?;
    if let Some(session_id) = &revocation.session_id {
        app.store
            .revoke_session(session_id, OffsetDateTime::now_utc())
            .await?;
    }
    let mut audit = AuditEvent::new(AuditKind::Revoke, "admin.revoke");
    audit.workspace_id = Some(workspace.as_str().to_owned());
    audit.request_id = Some(request_id.to_owned());
    audit.actor = Actor::of(ActorKind::Admin);
    audit.details = serde_json::json!({ "selectors": revocation });
    finish(app, audit, outcome).await
}
