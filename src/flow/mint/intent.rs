//! Mint intents: written before GitHub is asked for a caller's tokens, resolved in the same
//! transaction as the mint's outcome. One still open when no broker can be working on it any
//! more is the trace of a crash between GitHub's answer and the record: GitHub may have minted
//! tokens that nobody recorded (and that nobody can revoke, since GitHub revokes a token only
//! when shown it). The audit log must say so: [`report_orphaned_intents`].

use super::plan::Plan;
use super::validate::MintRequest;
use super::Group;
use crate::app::App;
use crate::audit::{format_time, AuditEvent, AuditKind};
use crate::flow::FlowResult;
use crate::metrics::Metrics;
use crate::store::{MintIntent, PlannedToken, SessionRecord};
use std::time::Duration;
use time::OffsetDateTime;

/// How old an unresolved intent must be before a broker takes it for a crash's. A live mint
/// resolves its intent within the GitHub client's bounds: every token POST and every revoke is
/// cut off by its request timeout after a few attempts, well under three minutes for the whole
/// mint with the store's own timeouts. Ten minutes leaves room for a loaded replica, so the
/// sweep never calls another replica's live mint orphaned.
pub const ORPHANED_INTENT_AGE: Duration = Duration::from_secs(600);

/// The audit reason of a mint whose outcome nobody recorded.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// What the group asks GitHub for, as an intent names it.
fn planned(group: &Group) -> PlannedToken {
    let owner = &group.installation.account_login;
    PlannedToken {
        installation_id: group.installation.id,
        owner: owner.clone(),
        repositories: group
            .repos
            .as_ref()
            .map(|r| r.iter().map(|name| format!("{owner}/{name}")).collect()),
        permissions: group.permissions.to_strings(),
        rules: group.rules.iter().cloned().collect(),
    }
}

/// Write the intent to mint `groups`, before the first call to GitHub; answers its id.
pub(super) async fn open(
    app: &App,
    session: &SessionRecord,
    request: &MintRequest,
    plan: &Plan,
    groups: &[Group],
    event: &AuditEvent,
) -> FlowResult<String> {
    let intent = MintIntent {
        id: format!("int_{}", uuid::Uuid::now_v7().simple()),
        workspace_id: session.workspace_id.clone(),
        session_id: session.id.clone(),
        request_id: event.request_id.clone(),
        policy_name: request.policy.as_str().to_owned(),
        policy_version: plan.policy_version,
        actor: event.actor.clone(),
        planned: groups.iter().map(planned).collect(),
        created_at: OffsetDateTime::now_utc(),
    };
    app.store.record_mint_intent(&intent).await?;
    Ok(intent.id)
}

/// The event of an intent left without a result.
fn outcome_unknown(intent: &MintIntent) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::Mint, "mint");
    event.reason = Some(OUTCOME_UNKNOWN.to_owned());
    event.workspace_id = Some(intent.workspace_id.clone());
    event.request_id.clone_from(&intent.request_id);
    event.actor = intent.actor.clone();
    event.policy_name = Some(intent.policy_name.clone());
    event.policy_version = intent.policy_version;
    for planned in &intent.planned {
        if !event.installation_ids.contains(&planned.installation_id) {
            event.installation_ids.push(planned.installation_id);
        }
    }
    event.details = serde_json::json!({
        "intentId": intent.id,
        "intentCreatedAt": format_time(intent.created_at),
        "planned": intent.planned,
    });
    event
}

/// Report every intent written before `before` that still has no result as one
/// `outcome_unknown` mint event, written in the transaction that resolves it (so brokers
/// sweeping together report each once). Answers how many this call reported.
///
/// Run at start with `before` = the start of this process on SQLite (one process per file: every
/// open intent is a dead process's), and with `before` = now − [`ORPHANED_INTENT_AGE`] where
/// replicas share the database, and then periodically, for replicas that crashed meanwhile.
pub async fn report_orphaned_intents(app: &App, before: OffsetDateTime) -> FlowResult<usize> {
    let mut reported = 0;
    for intent in app.store.unresolved_mint_intents(before).await? {
        if app
            .store
            .resolve_mint_intent(&intent.id, &outcome_unknown(&intent))
            .await?
        {
            reported += 1;
            Metrics::outcome(&app.metrics.mints, "failure", OUTCOME_UNKNOWN);
            tracing::error!(
                intent.id = %intent.id,
                workspace.id = %intent.workspace_id,
                planned = intent.planned.len(),
                "mint {} ended without a result (a crash?): github may have minted tokens that \
                 nobody recorded; reported as {OUTCOME_UNKNOWN}",
                intent.id
            );
        }
    }
    Ok(reported)
}
