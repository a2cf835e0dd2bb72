//! Group commit: writes that arrive together share a transaction, yet each keeps its own
//! outcome, and the store's other writes are not starved by a stream of batches.

use super::fixtures::*;
use crate::audit::verify::verify;
use crate::store::{Issuance, IssuanceRefusal, MintRecord};
use std::sync::atomic::{AtomicBool, Ordering};

/// Exchanges raced at once: enough to fill several batches.
const RACED_EXCHANGES: usize = 48;

pub(super) async fn each_write_of_a_batch_keeps_its_own_outcome(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    // Every token is exchanged twice, and every sixth exchange names a missing workspace: in
    // one batch, a replay or a missing row must fail alone and undo only its own rows.
    let outcomes = race(RACED_EXCHANGES, |i| {
        let store = Arc::clone(&store);
        async move {
            let workspace = if i % 6 == 5 { "gone" } else { "acme" };
            raced_exchange(&*store, &format!("jti-{}", i / 2), i, workspace).await
        }
    })
    .await;
    let mut accepted = Vec::new();
    let (mut replays, mut missing) = (0, 0);
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(()) => accepted.push(i),
            Err(StoreError::Replay) => replays += 1,
            Err(StoreError::NotFound(_)) => missing += 1,
            Err(other) => panic!("exchange {i}: {other:?}"),
        }
    }

    // Each token whose pair holds a good exchange is accepted exactly once.
    let pairs = RACED_EXCHANGES / 2;
    let tokens_accepted: std::collections::BTreeSet<_> = accepted.iter().map(|i| i / 2).collect();
    assert_eq!(tokens_accepted.len(), pairs, "accepted: {accepted:?}");
    assert_eq!(accepted.len(), pairs);
    assert_eq!(replays + missing, RACED_EXCHANGES - pairs);
    for i in &accepted {
        let session = store.get_session(&format!("ses-{i}")).await.unwrap();
        assert!(session.is_some(), "ses-{i} was accepted but not stored");
    }
    let report = verify(&*store, Some("acme")).await.unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(
        report.events, pairs as u64,
        "one audit event per accepted exchange"
    );
}

/// Workspaces that [`exchanges_raced_into_several_workspaces_are_each_written_once_and_chained`]
/// spreads its exchanges over: one batch then appends to several chains.
const RACED_WORKSPACES: [&str; 3] = ["acme", "globex", "initech"];

pub(super) async fn exchanges_raced_into_several_workspaces_are_each_written_once_and_chained(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &RACED_WORKSPACES).await;
    exchange(
        &*store,
        &replay_key("jti-used", at(10)),
        "ses-before",
        "acme",
        "before",
    )
    .await
    .unwrap();
    // Pairs share a token, and every eighth exchange reuses the one stored before: a batch
    // holds replays of its own writes and of older ones, and no write that can fail otherwise
    // (PostgreSQL then writes the batch's exchanges together, `postgres/bulk.rs`).
    let key_of = |i: usize| {
        if i % 8 == 7 {
            "jti-used".to_owned()
        } else {
            format!("jti-{}", i / 2)
        }
    };
    let outcomes = race(RACED_EXCHANGES, |i| {
        let (store, key) = (Arc::clone(&store), key_of(i));
        async move {
            let workspace = RACED_WORKSPACES[i % RACED_WORKSPACES.len()];
            raced_exchange(&*store, &key, i, workspace).await
        }
    })
    .await;
    let mut accepted = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(()) => accepted.push(i),
            Err(StoreError::Replay) => {}
            Err(other) => panic!("exchange {i}: {other:?}"),
        }
    }

    let keys: std::collections::BTreeSet<_> = (0..RACED_EXCHANGES)
        .map(key_of)
        .filter(|k| k != "jti-used")
        .collect();
    let accepted_keys: std::collections::BTreeSet<_> =
        accepted.iter().map(|&i| key_of(i)).collect();
    assert_eq!(
        accepted_keys, keys,
        "every fresh token once, the used one never"
    );
    assert_eq!(accepted.len(), keys.len(), "accepted: {accepted:?}");
    for i in 0..RACED_EXCHANGES {
        let stored = store.get_session(&format!("ses-{i}")).await.unwrap();
        assert_eq!(stored.is_some(), accepted.contains(&i), "ses-{i}");
    }
    let report = verify(&*store, None).await.unwrap();
    assert!(report.intact(), "{report}");
    let events = accepted.len() as u64 + 1;
    assert_eq!(
        report.events, events,
        "one audit event per accepted exchange"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().pending, events);
}

/// Mints raced at once, each with its intent: enough to fill several batches of each.
const RACED_MINTS: usize = 24;

/// Of the sessions the raced mints use, these were ended before the race.
const ENDED_SESSIONS: [usize; 2] = [6, 7];

pub(super) async fn mints_raced_with_their_intents_each_keep_their_own_outcome(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme"]).await;
    store
        .set_workspace_sts_enabled("acme", true, T0)
        .await
        .unwrap();
    for s in 0..8 {
        with_session(&*store, "acme", &format!("ses-{s}")).await;
    }
    for s in ENDED_SESSIONS {
        assert!(store
            .revoke_session(&format!("ses-{s}"), at(1))
            .await
            .unwrap());
    }
    let before = verify(&*store, Some("acme")).await.unwrap().events;
    let session_of = |i: usize| format!("ses-{}", i % 8);

    // Every intent at once, then every record at once, as concurrent mints write them: on
    // PostgreSQL a batch's intents, and its records, are written together (`postgres/bulk.rs`).
    let intents = race(RACED_MINTS, |i| {
        let store = Arc::clone(&store);
        let intent = super::intents::intent(&format!("int-{i}"), "acme", &session_of(i), 0);
        async move { store.record_mint_intent(&intent).await }
    })
    .await;
    for intent in intents {
        intent.unwrap();
    }
    let records = race(RACED_MINTS, |i| {
        let (store, session) = (Arc::clone(&store), session_of(i));
        async move {
            let tokens = [token(&format!("tok-{i}"), "acme", Some(&session))];
            let event = mint_audit("acme", &[&format!("tok-{i}")]);
            let intent = format!("int-{i}");
            store
                .record_mint(&MintRecord {
                    workspace_id: "acme",
                    session_id: &session,
                    intent_id: Some(&intent),
                    tokens: &tokens,
                    audit: &event,
                })
                .await
        }
    })
    .await;
    let mut recorded = 0;
    for (i, record) in records.into_iter().enumerate() {
        let expected = if ENDED_SESSIONS.contains(&(i % 8)) {
            Issuance::Refused(IssuanceRefusal::SessionRevoked)
        } else {
            recorded += 1;
            Issuance::Recorded
        };
        assert_eq!(record.unwrap(), expected, "mint {i}");
    }

    assert_eq!(all_tokens(&*store, "acme").await.len(), recorded);
    // A refused record writes nothing: its intent stays open, for the sweep to report.
    let mut open: Vec<String> = store
        .unresolved_mint_intents(at(1_000))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    open.sort();
    let mut refused: Vec<String> = (0..RACED_MINTS)
        .filter(|i| ENDED_SESSIONS.contains(&(i % 8)))
        .map(|i| format!("int-{i}"))
        .collect();
    refused.sort();
    assert_eq!(open, refused);
    let report = verify(&*store, Some("acme")).await.unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(report.events, before + recorded as u64);
}

/// Writers that keep the group-commit writer busy.
const FLOODERS: usize = 8;

/// Writes made outside the group commit while the flood runs.
const TURN_WRITES: usize = 20;

pub(super) async fn other_writes_get_their_turn_during_a_flood_of_batches(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    for i in 0..TURN_WRITES {
        with_session(&*store, "acme", &format!("ses-{i}")).await;
    }
    // Threads of their own, so that the flood keeps the queue full whatever the test's runtime
    // is doing: batches then follow each other with no gap between them.
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Handle::current();
    let flood: Vec<_> = (0..FLOODERS)
        .map(|f| {
            let (store, stop, runtime) = (Arc::clone(&store), Arc::clone(&stop), runtime.clone());
            std::thread::spawn(move || {
                let mut written = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let event = audit(Some("acme"), &format!("flood-{f}-{written}"));
                    runtime
                        .block_on(store.append_audit(&event))
                        .expect("flood append");
                    written += 1;
                }
                written
            })
        })
        .collect();

    // Revocations and policy writes use the store's own write connection, not the batches:
    // each must get the write lock in its turn rather than fail on a busy database.
    for i in 0..TURN_WRITES {
        let revoked = store
            .revoke_session(&format!("ses-{i}"), at(5))
            .await
            .expect("revoke during the flood");
        assert!(revoked);
        put(&*store, "acme", "p", &format!("# version {i}\n")).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut flooded = 0;
    for thread in flood {
        // Joined off the runtime's thread, which the flood's last writes may still need.
        flooded += tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }

    assert!(flooded > 0, "the flood wrote nothing");
    let versions = store.policy_versions("acme", "p").await.unwrap();
    assert_eq!(versions.len(), TURN_WRITES);
    let report = verify(&*store, Some("acme")).await.unwrap();
    assert!(report.intact(), "{report}");
}
