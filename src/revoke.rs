//! Revocation: by the session that holds the tokens (`POST /sts/revoke`, `DELETE /auth/session`)
//! or by an administrator. Every path reaches GitHub (`DELETE /installation/token` with the
//! unsealed token) before the row is marked revoked; all are idempotent.

use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditToken, Outcome};
use crate::exchange::{actor_from_claims, Authenticated};
use crate::http::error::{ApiError, ApiResult};
use crate::store::{IssuedToken, TokenFilter, TokenState};
use futures::stream::{self, StreamExt as _};
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
pub async fn revoke_tokens(app: &App, tokens: Vec<IssuedToken>) -> ApiResult<RevokeOutcome> {
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
async fn finish(app: &App, mut audit: AuditEvent, outcome: RevokeOutcome) -> ApiResult<u64> {
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
        Err(ApiError::upstream(
            "github_revoke_failed",
            "some tokens could not be revoked at github; retry the request",
            anyhow::anyhow!("{} tokens not revoked", outcome.failed.len()),
        ))
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
    audit.actor = actor_from_claims(&auth.session.claims, Some(&auth.session.id));
    audit
}

/// `POST /sts/revoke`: the session's tokens (all, or the given ids among them).
#[tracing::instrument(skip_all, fields(session.id = %auth.session.id))]
pub async fn revoke_session_tokens(
    app: &App,
    auth: &Authenticated,
    ids: Option<Vec<String>>,
    request_id: &str,
) -> ApiResult<u64> {
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
pub async fn end_session(app: &App, auth: &Authenticated, request_id: &str) -> ApiResult<u64> {
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
/// active token of the workspace.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminRevocation {
    /// Token ids.
    #[serde(default)]
    pub token_ids: Option<Vec<String>>,
    /// Every token of this session (the session is revoked too).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Every token that reaches `owner/repo` (including whole-installation tokens of the owner).
    #[serde(default)]
    pub repository: Option<String>,
    /// Every active token of the workspace.
    #[serde(default)]
    pub all: Option<bool>,
}

/// `POST /admin/workspaces/{ws}/revocations`.
#[tracing::instrument(skip_all, fields(workspace.id = %workspace_id))]
pub async fn admin_revoke(
    app: &App,
    workspace_id: &str,
    req: AdminRevocation,
    request_id: &str,
) -> ApiResult<u64> {
    let all = req.all.unwrap_or(false);
    if !all && req.token_ids.is_none() && req.session_id.is_none() && req.repository.is_none() {
        return Err(ApiError::invalid(vec![
            "name at least one of tokenIds, sessionId, repository, or set all: true".to_owned(),
        ]));
    }
    if app.store.get_workspace(workspace_id).await?.is_none() {
        return Err(ApiError::not_found(
            "workspace_not_found",
            "no such workspace",
        ));
    }
    let filter = TokenFilter {
        state: Some((TokenState::Active, OffsetDateTime::now_utc())),
        session_id: req.session_id.clone(),
        ids: req.token_ids.clone(),
        limit: None,
    };
    let mut tokens = app.store.list_tokens(workspace_id, &filter).await?;
    if let Some(repo) = &req.repository {
        let owner = repo.split('/').next().unwrap_or_default();
        tokens.retain(|t| match &t.repositories {
            Some(list) => list.iter().any(|r| r.eq_ignore_ascii_case(repo)),
            None => t.owner.eq_ignore_ascii_case(owner),
        });
    }
    let outcome = revoke_tokens(app, tokens).await?;
    if let Some(session_id) = &req.session_id {
        app.store
            .revoke_session(session_id, OffsetDateTime::now_utc())
            .await?;
    }
    let mut audit = AuditEvent::new(AuditKind::Revoke, "admin.revoke");
    audit.workspace_id = Some(workspace_id.to_owned());
    audit.request_id = Some(request_id.to_owned());
    audit.actor = Actor {
        kind: "admin".to_owned(),
        ..Actor::default()
    };
    let selectors = serde_json::to_value(&req).unwrap_or_default();
    let revoked = finish(app, audit_with_details(audit, selectors), outcome).await?;
    Ok(revoked)
}

fn audit_with_details(mut audit: AuditEvent, details: serde_json::Value) -> AuditEvent {
    audit.details = serde_json::json!({ "selectors": details });
    audit
}
