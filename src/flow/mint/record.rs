//! Fourth step of the mint: record the tokens and the audit event in one write, or, when that
//! (or GitHub) fails, revoke what was minted and record the failure.

use super::issue::revoke_minted;
use super::plan::Plan;
use super::validate::MintRequest;
use super::{Group, MintedToken};
use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditToken, Exclusion, Outcome};
use crate::crypto::fingerprint;
use crate::flow::{record_audit, FlowError, FlowResult, Internal};
use crate::github::{GitHubError, InstallationToken};
use crate::metrics::Metrics;
use crate::session::Authenticated;
use crate::store::{IssuedToken, SessionRecord};
use secrecy::{ExposeSecret as _, SecretString};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The mint's audit event, before anything is decided.
pub(super) fn event(auth: &Authenticated, request: &MintRequest, request_id: &str) -> AuditEvent {
    let session = &auth.session;
    let mut audit = AuditEvent::new(AuditKind::Mint, "mint");
    audit.workspace_id = Some(session.workspace_id.clone());
    audit.request_id = Some(request_id.to_owned());
    audit.actor = Actor::from_claims(&session.claims, Some(&session.id));
    audit.policy_name = Some(request.policy.as_str().to_owned());
    audit
}

/// Details every mint event carries: what was asked, and why the policy is invalid if it is.
fn base_details(request: &MintRequest, plan: &Plan) -> serde_json::Map<String, serde_json::Value> {
    let mut details = serde_json::Map::new();
    details.insert("sources".into(), serde_json::json!(request.requested));
    if let Some(errors) = &plan.policy_errors {
        details.insert("policyErrors".into(), serde_json::json!(errors));
    }
    details
}

/// GitHub failed: revoke what was minted, record the failure, and answer with GitHub's error.
pub(super) async fn failure(
    app: &App,
    mut audit: AuditEvent,
    request: &MintRequest,
    plan: &Plan,
    minted: &[(Group, InstallationToken)],
    error: GitHubError,
) -> FlowError {
    let ids = revoke_minted(app, minted).await;
    let mut details = base_details(request, plan);
    details.insert("revokedAfterFailure".into(), serde_json::json!(ids));
    audit.outcome = Outcome::Failure;
    audit.reason = Some(error.code().to_owned());
    audit.details = serde_json::Value::Object(details);
    record_audit(app, &audit).await;
    Metrics::outcome(&app.metrics.mints, "failure", error.code());
    error.into()
}

/// One token's row, audit entry and answer.
fn token(
    app: &App,
    session: &SessionRecord,
    request: &MintRequest,
    policy_version: Option<i64>,
    (group, minted): &(Group, InstallationToken),
    now: OffsetDateTime,
) -> (IssuedToken, AuditToken, MintedToken) {
    let id = format!("tok_{}", uuid::Uuid::new_v4().simple());
    let value = minted.token.expose_secret();
    let owner = group.installation.account_login.clone();
    let repositories = group.repos.as_ref().map(|r| {
        r.iter()
            .map(|name| format!("{owner}/{name}"))
            .collect::<Vec<_>>()
    });
    let permissions = if minted.permissions.is_empty() {
        group.permissions.to_strings()
    } else {
        minted.permissions.clone()
    };
    let row = IssuedToken {
        id: id.clone(),
        workspace_id: session.workspace_id.clone(),
        session_id: Some(session.id.clone()),
        installation_id: group.installation.id,
        owner: owner.clone(),
        host: app.config.github.host.clone(),
        repositories: repositories.clone(),
        permissions: permissions.clone(),
        fingerprint: fingerprint(value),
        sealed_token: Some(app.sealer.seal(&id, value)),
        policy_name: request.policy.as_str().to_owned(),
        policy_version: policy_version.unwrap_or_default(),
        created_at: now,
        expires_at: minted.expires_at,
        revoked_at: None,
    };
    let audited = AuditToken {
        id: id.clone(),
        fingerprint: fingerprint(value),
        installation_id: group.installation.id,
        owner: owner.clone(),
        repositories: repositories.clone(),
        permissions: permissions.clone(),
        expires_at: Some(minted.expires_at),
    };
    let answer = MintedToken {
        id,
        host: app.config.github.host.clone(),
        owner,
        token: SecretString::from(value.to_owned()),
        expires_at: minted.expires_at,
        repositories,
        permissions,
        installation_id: group.installation.id,
    };
    (row, audited, answer)
}

/// Record the minted tokens and the success event in one write. If that fails, no token is
/// handed out: all are revoked at GitHub and the failure is recorded (best effort).
pub(super) async fn record(
    app: &App,
    session: &SessionRecord,
    request: &MintRequest,
    plan: &Plan,
    minted: Vec<(Group, InstallationToken)>,
    mut audit: AuditEvent,
) -> FlowResult<Vec<MintedToken>> {
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    let mut tokens = Vec::new();
    let mut granted_by = BTreeMap::new();
    for entry in &minted {
        let (row, audited, answer) = token(app, session, request, audit.policy_version, entry, now);
        let installation_id = entry.0.installation.id;
        if !audit.installation_ids.contains(&installation_id) {
            audit.installation_ids.push(installation_id);
        }
        granted_by.insert(row.id.clone(), entry.0.rules.clone());
        rows.push(row);
        audit.tokens.push(audited);
        tokens.push(answer);
    }
    audit.exclusions = plan
        .exclusions
        .iter()
        .map(|e| Exclusion::new(e.repo.clone(), e.reason))
        .collect();
    let mut details = base_details(request, plan);
    if !plan.skipped.is_empty() {
        let skipped: Vec<Exclusion> = plan
            .skipped
            .iter()
            .map(|e| Exclusion::new(e.repo.clone(), e.reason))
            .collect();
        details.insert("skipped".into(), serde_json::json!(skipped));
    }
    if !plan.denials.is_empty() {
        details.insert("denials".into(), serde_json::json!(plan.denials));
    }
    if !granted_by.is_empty() {
        details.insert("grantedBy".into(), serde_json::json!(granted_by));
    }
    audit.details = serde_json::Value::Object(details);
    audit.outcome = Outcome::Success;

    if let Err(e) = app.store.record_issuance(&rows, &audit).await {
        // The invariant: a token that cannot be recorded is not handed out.
        let ids = revoke_minted(app, &minted).await;
        tracing::error!(error = %e, revoked = ids.len(), "could not record issuance; minted tokens revoked");
        let mut failure = AuditEvent::new(AuditKind::Mint, "mint");
        failure.workspace_id = audit.workspace_id.clone();
        failure.request_id = audit.request_id.clone();
        failure.actor = audit.actor.clone();
        failure.policy_name = audit.policy_name.clone();
        failure.policy_version = audit.policy_version;
        failure.reason = Some(Internal::AuditWrite.code().to_owned());
        failure.tokens = audit.tokens.clone();
        failure.details = serde_json::json!({ "revokedAtGitHub": ids.len() });
        record_audit(app, &failure).await;
        Metrics::outcome(&app.metrics.mints, "failure", Internal::AuditWrite.code());
        return Err(FlowError::Internal {
            kind: Internal::AuditWrite,
            source: e.into(),
        });
    }
    Ok(tokens)
}
