//! Mint intents and the conditional issuance record: a mint survives its caller and a crash, and
//! never records tokens into a workspace or session that changed while GitHub was minting.

use super::fixtures::*;
use crate::audit::{Actor, AuditKind, Outcome};
use crate::store::{Issuance, IssuanceRefusal, MintIntent, MintRecord, PlannedToken};
use std::collections::BTreeMap;

pub(super) fn intent(id: &str, workspace_id: &str, session_id: &str, minutes: i64) -> MintIntent {
    MintIntent {
        id: id.to_owned(),
        workspace_id: workspace_id.to_owned(),
        session_id: session_id.to_owned(),
        request_id: Some(format!("req-{id}")),
        policy_name: "default".to_owned(),
        policy_version: Some(3),
        actor: Actor {
            kind: crate::audit::ActorKind::Oidc,
            session_id: Some(session_id.to_owned()),
            claims: BTreeMap::from([("repository".to_owned(), "acme/infra".to_owned())]),
        },
        planned: vec![PlannedToken {
            installation_id: 42,
            owner: "Acme".to_owned(),
            repositories: Some(vec!["Acme/infra".to_owned()]),
            permissions: BTreeMap::from([("contents".to_owned(), "write".to_owned())]),
            rules: vec!["infra-main".to_owned()],
        }],
        created_at: at(minutes),
    }
}

/// What the broker writes at start for an intent left without a result.
fn outcome_unknown(intent: &MintIntent) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::Mint, "mint");
    event.outcome = Outcome::Failure;
    event.reason = Some("outcome_unknown".to_owned());
    event.workspace_id = Some(intent.workspace_id.clone());
    event.details = serde_json::json!({ "intentId": intent.id });
    event
}

async fn entitled_workspace_with_session(store: &dyn Store, workspace_id: &str, session_id: &str) {
    with_workspaces(store, &[workspace_id]).await;
    store
        .set_workspace_sts_enabled(workspace_id, true, T0)
        .await
        .expect("entitle");
    with_session(store, workspace_id, session_id).await;
}

async fn unresolved(store: &dyn Store) -> Vec<String> {
    store
        .unresolved_mint_intents(at(1_000))
        .await
        .expect("unresolved intents")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

pub(super) async fn an_intent_without_a_result_becomes_one_outcome_unknown_event_at_start(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme"]).await;
    let crashed = intent("int-1", "acme", "ses-1", 0);
    let live = intent("int-2", "acme", "ses-1", 5);
    store.record_mint_intent(&crashed).await.unwrap();
    store.record_mint_intent(&live).await.unwrap();
    assert!(matches!(
        store.record_mint_intent(&crashed).await.unwrap_err(),
        StoreError::Conflict(_)
    ));

    // At start, intents older than the cutoff are a dead process's; younger ones may be live.
    let found = store.unresolved_mint_intents(at(1)).await.unwrap();
    assert_eq!(
        found,
        vec![crashed.clone()],
        "round trip, and only the old one"
    );

    let event = outcome_unknown(&crashed);
    assert!(store.resolve_mint_intent("int-1", &event).await.unwrap());
    // A second broker starting at the same time resolves nothing and writes nothing.
    let again = outcome_unknown(&crashed);
    assert!(!store.resolve_mint_intent("int-1", &again).await.unwrap());

    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(
        events(page),
        vec![event],
        "exactly one outcome_unknown event"
    );
    assert_eq!(unresolved(&*store).await, vec!["int-2"]);
}

/// A mint under way: intent `int-1` of session `ses-1` in `acme` is recorded, and GitHub is
/// minting the one token whose row and success event the mint will record.
struct MintInFlight {
    rows: [IssuedToken; 1],
    event: AuditEvent,
}

impl MintInFlight {
    async fn begin(store: &dyn Store) -> Self {
        store
            .record_mint_intent(&intent("int-1", "acme", "ses-1", 0))
            .await
            .unwrap();
        Self {
            rows: [token("tok-1", "acme", Some("ses-1"))],
            event: mint_audit("acme", &["tok-1"]),
        }
    }

    /// The record resolving `int-1`, checked against `workspace_id` and `session_id`.
    fn record<'a>(&'a self, workspace_id: &'a str, session_id: &'a str) -> MintRecord<'a> {
        MintRecord {
            workspace_id,
            session_id,
            intent_id: Some("int-1"),
            tokens: &self.rows,
            audit: &self.event,
        }
    }
}

pub(super) async fn a_mint_record_writes_rows_event_and_resolves_its_intent_in_one_transaction(
    store: Arc<dyn Store>,
) {
    entitled_workspace_with_session(&*store, "acme", "ses-1").await;
    let mint = MintInFlight::begin(&*store).await;

    assert_eq!(
        store
            .record_mint(&mint.record("acme", "ses-1"))
            .await
            .unwrap(),
        Issuance::Recorded
    );

    assert_eq!(all_tokens(&*store, "acme").await, mint.rows.to_vec());
    assert_eq!(
        events(store.list_audit("acme", 10, None).await.unwrap())[0],
        mint.event
    );
    assert!(unresolved(&*store).await.is_empty());
    // The intent is resolved: a late sweep reports nothing.
    let late = outcome_unknown(&intent("int-1", "acme", "ses-1", 0));
    assert!(!store.resolve_mint_intent("int-1", &late).await.unwrap());
}

pub(super) async fn a_mint_record_is_refused_when_the_workspace_or_session_changed_meanwhile(
    store: Arc<dyn Store>,
) {
    entitled_workspace_with_session(&*store, "acme", "ses-1").await;
    with_session(&*store, "acme", "ses-2").await;
    let mint = MintInFlight::begin(&*store).await;
    let record = |workspace_id, session_id| mint.record(workspace_id, session_id);
    let events_before = events(store.list_audit("acme", 10, None).await.unwrap());
    let refused = |why| Issuance::Refused(why);

    store.revoke_session("ses-1", at(1)).await.unwrap();
    assert_eq!(
        store.record_mint(&record("acme", "ses-1")).await.unwrap(),
        refused(IssuanceRefusal::SessionRevoked)
    );
    assert_eq!(
        store.record_mint(&record("acme", "ses-9")).await.unwrap(),
        refused(IssuanceRefusal::SessionMissing)
    );
    store
        .set_workspace_sts_enabled("acme", false, at(1))
        .await
        .unwrap();
    assert_eq!(
        store.record_mint(&record("acme", "ses-2")).await.unwrap(),
        refused(IssuanceRefusal::WorkspaceDisabled)
    );
    assert_eq!(
        store.record_mint(&record("gone", "ses-2")).await.unwrap(),
        refused(IssuanceRefusal::WorkspaceMissing)
    );

    assert_eq!(all_tokens(&*store, "acme").await, vec![], "nothing written");
    assert_eq!(
        events(store.list_audit("acme", 10, None).await.unwrap()),
        events_before
    );
    assert_eq!(unresolved(&*store).await, vec!["int-1"], "still open");
    // The refused mint closes its intent with its own failure event.
    let failure = AuditEvent {
        outcome: Outcome::Failure,
        reason: Some("session_revoked".to_owned()),
        ..mint_audit("acme", &["tok-1"])
    };
    assert!(store.resolve_mint_intent("int-1", &failure).await.unwrap());
    assert!(unresolved(&*store).await.is_empty());
}

pub(super) async fn revoking_a_workspaces_sessions_ends_only_its_live_ones(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    with_session(&*store, "acme", "ses-1").await;
    with_session(&*store, "acme", "ses-2").await;
    with_session(&*store, "other", "ses-3").await;
    store.revoke_session("ses-2", at(1)).await.unwrap();

    assert_eq!(
        store
            .revoke_workspace_sessions("acme", at(2))
            .await
            .unwrap(),
        1
    );

    let revoked_at = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.get_session(id).await.unwrap().unwrap().revoked_at }
    };
    assert_eq!(revoked_at("ses-1").await, Some(at(2)));
    assert_eq!(revoked_at("ses-2").await, Some(at(1)), "kept its own time");
    assert_eq!(revoked_at("ses-3").await, None, "another workspace's");
}
