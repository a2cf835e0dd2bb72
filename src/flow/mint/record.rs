//! Fourth step of the mint: describe what happened in the mint's event, record the tokens, the
//! intent's resolution and the event in one transaction, or, when the mint does not hand its
//! tokens out, revoke them and say so per token.

use super::issue::revoke_minted;
use super::plan::Plan;
use super::validate::MintRequest;
use super::{Group, Minted, MintedToken};
use crate::app::App;
use crate::audit::{AuditEvent, AuditKind, AuditToken, Exclusion, Outcome};
use crate::crypto::fingerprint;
use crate::flow::audited::detail;
use crate::flow::{
    Audited, Counted, FlowError, FlowResult, Forbidden, Internal, Missing, Unauthenticated,
};
use crate::github::InstallationToken;
use crate::store::{Issuance, IssuanceRefusal, IssuedToken, MintRecord, SessionRecord};
use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

/// A token GitHub minted for this request, with the broker id it is known by from the moment it
/// exists: every event about it, handed out or revoked, names it by this id and its fingerprint.
pub(in crate::flow) struct Fresh {
    /// `tok_…`.
    pub(super) id: String,
    /// What was asked for.
    pub(super) group: Group,
    /// What GitHub answered.
    pub(super) token: InstallationToken,
}

impl Fresh {
    /// A new id for `token`.
    pub(super) fn new(group: Group, token: InstallationToken) -> Self {
        Self {
            // Time-ordered, like session ids: appended to the index, not scattered over it.
            id: format!("tok_{}", uuid::Uuid::now_v7().simple()),
            group,
            token,
        }
    }

    fn owner(&self) -> &str {
        &self.group.installation.account_login
    }

    fn repositories(&self) -> Option<Vec<String>> {
        let owner = self.owner();
        self.group
            .repos
            .as_ref()
            .map(|r| r.iter().map(|name| format!("{owner}/{name}")).collect())
    }

    /// What GitHub granted; what was asked for if GitHub did not say.
    fn permissions(&self) -> std::collections::BTreeMap<String, String> {
        if self.token.permissions.is_empty() {
            self.group.permissions.to_strings()
        } else {
            self.token.permissions.clone()
        }
    }

    fn fingerprint(&self) -> String {
        fingerprint(self.token.token.expose_secret())
    }

    /// How the audit log names it: never the token.
    fn audited(&self, policy_version: Option<i64>) -> AuditToken {
        AuditToken {
            id: self.id.clone(),
            fingerprint: self.fingerprint(),
            installation_id: self.group.installation.id,
            owner: self.owner().to_owned(),
            repositories: self.repositories(),
            permissions: self.permissions(),
            expires_at: Some(self.token.expires_at),
            policy_version,
            rules: self.group.rules.iter().cloned().collect(),
            revoked: None,
            attempts: Some(self.token.attempts),
        }
    }

    /// Its row, the token sealed so that it can be revoked later.
    fn row(
        &self,
        app: &App,
        session: &SessionRecord,
        request: &MintRequest,
        policy_version: Option<i64>,
        now: OffsetDateTime,
    ) -> IssuedToken {
        IssuedToken {
            id: self.id.clone(),
            workspace_id: session.workspace_id.clone(),
            session_id: Some(session.id.clone()),
            installation_id: self.group.installation.id,
            owner: self.owner().to_owned(),
            host: app.config.github.host.clone(),
            repositories: self.repositories(),
            permissions: self.permissions(),
            fingerprint: self.fingerprint(),
            sealed_token: Some(app.sealer.seal(&self.id, self.token.token.expose_secret())),
            policy_name: request.policy.as_str().to_owned(),
            policy_version: policy_version.unwrap_or_default(),
            created_at: now,
            expires_at: self.token.expires_at,
            revoked_at: None,
        }
    }

    /// The caller's copy.
    fn answer(self, app: &App) -> MintedToken {
        MintedToken {
            host: app.config.github.host.clone(),
            owner: self.owner().to_owned(),
            repositories: self.repositories(),
            permissions: self.permissions(),
            installation_id: self.group.installation.id,
            expires_at: self.token.expires_at,
            token: self.token.token,
            id: self.id,
        }
    }
}

/// What was asked: the policy and the sources as sent.
pub(super) fn describe_request(event: &mut AuditEvent, request: &MintRequest) {
    event.policy_name = Some(request.policy.as_str().to_owned());
    detail(event, "sources", &request.requested);
    if let Some(wanted) = &request.wanted {
        detail(event, "permissionsAsked", wanted.to_strings());
    }
}

/// What the plan decided and GitHub minted so far: exclusions, skipped owners, per-source
/// denials, why the policy is invalid, and each minted token with its policy version and rules.
pub(super) fn describe_plan(
    event: &mut AuditEvent,
    request: &MintRequest,
    plan: &Plan,
    minted: &[Fresh],
) {
    describe_request(event, request);
    if let Some(errors) = &plan.policy_errors {
        detail(event, "policyErrors", errors);
    }
    if !plan.skipped.is_empty() {
        let skipped: Vec<Exclusion> = plan
            .skipped
            .iter()
            .map(|e| Exclusion::new(e.repo.clone(), e.reason))
            .collect();
        detail(event, "skipped", skipped);
    }
    if !plan.denials.is_empty() {
        detail(event, "denials", &plan.denials);
    }
    event.exclusions = plan
        .exclusions
        .iter()
        .map(|e| Exclusion::new(e.repo.clone(), e.reason))
        .collect();
    event.tokens = minted
        .iter()
        .map(|fresh| fresh.audited(event.policy_version))
        .collect();
    event.installation_ids = Vec::new();
    for fresh in minted {
        let id = fresh.group.installation.id;
        if !event.installation_ids.contains(&id) {
            event.installation_ids.push(id);
        }
    }
}

/// The mint will not hand `minted` out: revoke each at GitHub and mark in the event whether
/// GitHub confirmed it.
pub(super) async fn revoke_unrecorded(app: &App, event: &mut AuditEvent, minted: &[Fresh]) {
    let confirmed = revoke_minted(app, minted).await;
    let revoked = confirmed.iter().filter(|ok| **ok).count();
    app.metrics.tokens_revoked.inc_by(revoked as u64);
    for (fresh, ok) in minted.iter().zip(confirmed) {
        if let Some(audited) = event.tokens.iter_mut().find(|t| t.id == fresh.id) {
            audited.revoked = Some(ok);
        }
    }
}

/// The error a refused record answers with: the same as if the change had come first.
fn refusal(why: IssuanceRefusal) -> FlowError {
    match why {
        IssuanceRefusal::WorkspaceMissing => FlowError::NotFound(Missing::Workspace),
        IssuanceRefusal::WorkspaceDisabled => FlowError::Forbidden(Forbidden::StsNotEntitled),
        IssuanceRefusal::SessionMissing => {
            FlowError::Unauthenticated(Unauthenticated::InvalidSession)
        }
        IssuanceRefusal::SessionRevoked => {
            FlowError::Unauthenticated(Unauthenticated::SessionRevoked)
        }
    }
}

/// Record the minted tokens, the intent's resolution and the success event in one write. If
/// the store refuses (the workspace or session changed meanwhile) or fails, no token is handed
/// out: all are revoked at GitHub, and the failure event says so per token.
pub(super) async fn record(
    app: &App,
    session: &SessionRecord,
    request: &MintRequest,
    minted: Vec<Fresh>,
    audited: &mut Audited,
) -> FlowResult<Vec<MintedToken>> {
    let now = OffsetDateTime::now_utc();
    let policy_version = audited.event.policy_version;
    let rows: Vec<IssuedToken> = minted
        .iter()
        .map(|fresh| fresh.row(app, session, request, policy_version, now))
        .collect();
    let mut success = audited.event.clone();
    success.outcome = Outcome::Success;
    success.reason = None;
    let record = MintRecord {
        workspace_id: &session.workspace_id,
        session_id: &session.id,
        intent_id: audited.intent(),
        tokens: &rows,
        audit: &success,
    };
    let error = match app.store.record_mint(&record).await {
        Ok(Issuance::Recorded) => {
            audited.written_as(success);
            return Ok(minted.into_iter().map(|fresh| fresh.answer(app)).collect());
        }
        Ok(Issuance::Refused(why)) => {
            tracing::warn!(refusal = ?why, "the workspace or session changed while github minted; revoking");
            detail(&mut audited.event, "refusedAtRecord", true);
            refusal(why)
        }
        Err(e) => {
            // The invariant: a token that cannot be recorded is not handed out.
            tracing::error!(error = %e, "could not record issuance; revoking the minted tokens");
            FlowError::Internal {
                kind: Internal::AuditWrite,
                source: e.into(),
            }
        }
    };
    revoke_unrecorded(app, &mut audited.event, &minted).await;
    Err(error)
}

/// The caller was gone in the instant between the record and the answer: revoke the recorded
/// tokens at GitHub, mark their rows, and audit that as a revocation of the mint `mint` (whose
/// own event, already written, says the tokens were recorded).
pub(super) async fn undelivered(app: &App, mint: &AuditEvent, minted: Minted) {
    tracing::warn!(
        tokens = minted.tokens.len(),
        "the caller left before the minted tokens were handed over; revoking them"
    );
    let request_id = mint.request_id.as_deref().unwrap_or_default();
    let mut audited = Audited::new(
        AuditKind::Revoke,
        "mint.undelivered",
        request_id,
        Counted::Nothing,
    );
    audited.event.workspace_id.clone_from(&mint.workspace_id);
    audited.event.actor = mint.actor.clone();
    audited.event.policy_name.clone_from(&mint.policy_name);
    audited.event.policy_version = mint.policy_version;
    audited
        .event
        .installation_ids
        .clone_from(&mint.installation_ids);
    audited.event.tokens.clone_from(&mint.tokens);
    let result = revoke_undelivered(app, &mut audited.event, minted).await;
    // Nobody is left to tell: the event is the only answer.
    let _ = audited.finish(app, result).await;
}

async fn revoke_undelivered(app: &App, event: &mut AuditEvent, minted: Minted) -> FlowResult<()> {
    let confirmed = futures::future::join_all(
        minted
            .tokens
            .iter()
            .map(|t| app.github.revoke_installation_token(&t.token)),
    )
    .await;
    let mut revoked = Vec::new();
    for (token, result) in minted.tokens.iter().zip(confirmed) {
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(token.id = %token.id, error = %e, "could not revoke undelivered token {}", token.id);
                false
            }
        };
        if ok {
            revoked.push(token.id.clone());
        }
        if let Some(audited) = event.tokens.iter_mut().find(|t| t.id == token.id) {
            audited.revoked = Some(ok);
        }
    }
    app.metrics.tokens_revoked.inc_by(revoked.len() as u64);
    app.store
        .mark_tokens_revoked(&revoked, OffsetDateTime::now_utc())
        .await?;
    let not_revoked = minted.tokens.len() - revoked.len();
    if not_revoked > 0 {
        return Err(FlowError::RevokeIncomplete {
            not_revoked,
            workspace_kept: false,
        });
    }
    Ok(())
}
