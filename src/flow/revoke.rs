//! Revocation: by the session that holds the tokens (`POST /sts/revoke`, `DELETE /auth/session`)
//! or by an administrator. Every path reaches GitHub (`DELETE /installation/token` with the
//! unsealed token) before the row is marked revoked; all are idempotent.

use super::audited::detail;
use super::{
    existing_workspace, load_session, verify_session, Audited, Counted, FlowError, FlowResult,
    Missing,
};
use crate::app::App;
use crate::audit::{Actor, ActorKind, AuditEvent, AuditKind, AuditToken};
use crate::ids::WorkspaceId;
use crate::session::{Purpose, SessionClaims};
use crate::store::{IssuedToken, SessionRecord, TokenFilter, TokenState};
use futures::stream::{self, StreamExt as _};
use secrecy::SecretString;
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
/// ones are marked without a call (GitHub no longer honours them). Every token GitHub confirmed
/// is named in `event` before the store is written, so a failing write still leaves an event
/// that says which tokens are dead.
pub async fn revoke_tokens(
    app: &App,
    tokens: Vec<IssuedToken>,
    event: &mut AuditEvent,
) -> FlowResult<RevokeOutcome> {
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
    event.tokens.extend(audit_tokens(&outcome.revoked));
    for token in &outcome.revoked {
        if !event.installation_ids.contains(&token.installation_id) {
            event.installation_ids.push(token.installation_id);
        }
    }
    event.installation_ids.sort_unstable();
    if !outcome.failed.is_empty() {
        detail(event, "notRevoked", &outcome.failed);
    }
    let ids: Vec<String> = outcome.revoked.iter().map(|t| t.id.clone()).collect();
    if !ids.is_empty() {
        app.metrics.tokens_revoked.inc_by(ids.len() as u64);
        app.store.mark_tokens_revoked(&ids, now).await?;
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
            policy_version: Some(t.policy_version),
            rules: Vec::new(),
            revoked: None,
            attempts: None,
        })
        .collect()
}

/// How many were revoked, or an error if GitHub refused some (the caller may retry).
fn counted(outcome: &RevokeOutcome) -> FlowResult<u64> {
    if outcome.failed.is_empty() {
        Ok(outcome.revoked.len() as u64)
    } else {
        Err(FlowError::RevokeIncomplete {
            not_revoked: outcome.failed.len(),
            workspace_kept: false,
        })
    }
}

/// `POST /sts/revoke`: the session's tokens (all, or the given ids among them). `ids` is the
/// parsed body, or why it did not parse (refused, and audited, once the session is known).
#[tracing::instrument(skip_all)]
pub async fn revoke_session_tokens(
    app: &App,
    token: &SecretString,
    ids: FlowResult<Option<Vec<String>>>,
    request_id: &str,
) -> FlowResult<u64> {
    let claims = verify_session(app, token, Purpose::Revoke).await?;
    let mut audited = Audited::new(AuditKind::Revoke, "revoke", request_id, Counted::Nothing);
    let result = revoke_session_tokens_inner(app, claims, ids, &mut audited.event).await;
    audited.finish(app, result).await
}

async fn revoke_session_tokens_inner(
    app: &App,
    claims: SessionClaims,
    ids: FlowResult<Option<Vec<String>>>,
    event: &mut AuditEvent,
) -> FlowResult<u64> {
    let auth = load_session(app, claims, Purpose::Revoke, event).await?;
    revoke_tokens_of(app, &auth.session, ids?, event).await
}

/// `DELETE /auth/session`: the session and all its tokens.
#[tracing::instrument(skip_all)]
pub async fn end_session(app: &App, token: &SecretString, request_id: &str) -> FlowResult<u64> {
    let claims = verify_session(app, token, Purpose::Revoke).await?;
    let mut audited = Audited::new(
        AuditKind::SessionRevoke,
        "session.revoke",
        request_id,
        Counted::Nothing,
    );
    let result = end_session_inner(app, claims, &mut audited.event).await;
    audited.finish(app, result).await
}

async fn end_session_inner(
    app: &App,
    claims: SessionClaims,
    event: &mut AuditEvent,
) -> FlowResult<u64> {
    let auth = load_session(app, claims, Purpose::Revoke, event).await?;
    // The session ends first: a mint of this session still at GitHub then finds it revoked when
    // it records, and revokes its own tokens, instead of recording them after our listing.
    app.store
        .revoke_session(&auth.session.id, OffsetDateTime::now_utc())
        .await?;
    revoke_tokens_of(app, &auth.session, None, event).await
}

/// Revoke the tokens of `session`: all of them, or only those among `ids`.
async fn revoke_tokens_of(
    app: &App,
    session: &SessionRecord,
    ids: Option<Vec<String>>,
    event: &mut AuditEvent,
) -> FlowResult<u64> {
    let filter = TokenFilter {
        session_id: Some(session.id.clone()),
        ids,
        ..TokenFilter::default()
    };
    let tokens = app
        .store
        .list_tokens(&session.workspace_id, &filter)
        .await?;
    counted(&revoke_tokens(app, tokens, event).await?)
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
    let mut audited = Audited::new(
        AuditKind::Revoke,
        "admin.revoke",
        request_id,
        Counted::Nothing,
    )
    .in_workspace(workspace);
    audited.event.actor = Actor::of(ActorKind::Admin);
    detail(&mut audited.event, "selectors", &revocation);
    let result = admin_revoke_inner(app, workspace, revocation, &mut audited.event).await;
    audited.finish(app, result).await
}

async fn admin_revoke_inner(
    app: &App,
    workspace: &WorkspaceId,
    revocation: Revocation,
    event: &mut AuditEvent,
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
    let outcome = revoke_tokens(app, tokens, event).await?;
    if let Some(session_id) = &revocation.session_id {
        app.store
            .revoke_session(session_id, OffsetDateTime::now_utc())
            .await?;
    }
    counted(&outcome)
}
