//! The audit export outbox (`store::outbox`): queued with every append, claimed one head per
//! workspace, acknowledged, retried after its backoff, and leased so two processes never hold
//! the same workspace.

use super::fixtures::*;
use super::harness;
use crate::store::{Claim, OutboxEntry, Retry};
use time::{Duration, OffsetDateTime};

/// Claim up to 10 heads due at `now` as `owner`, leased for a minute.
async fn claim(store: &dyn Store, owner: &str, now: OffsetDateTime) -> Vec<OutboxEntry> {
    store
        .claim_outbox(Claim {
            owner,
            now,
            lease_until: now + Duration::minutes(1),
            limit: 10,
        })
        .await
        .unwrap()
}

/// A failed delivery of row `seq` by `owner`, due again at `next_attempt`.
fn retry<'a>(seq: i64, owner: &'a str, next_attempt: OffsetDateTime, error: &'a str) -> Retry<'a> {
    Retry {
        seq,
        owner,
        next_attempt,
        error,
    }
}

/// The action of each claimed event, in claim order.
fn actions(entries: &[OutboxEntry]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e.chained.event.action.as_str())
        .collect()
}

/// A moment after every event a case wrote (events are stamped with the real clock).
fn soon() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::seconds(1)
}

pub(super) async fn every_append_is_queued_and_each_workspace_releases_one_event_at_a_time(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme"]).await;
    for (ws, action) in [("acme", "a1"), ("globex", "g1"), ("acme", "a2")] {
        store.append_audit(&audit(Some(ws), action)).await.unwrap();
    }
    let key = replay_key("jti-1", at(60));
    exchange(&*store, &key, "s1", "acme", "a3").await.unwrap();
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.pending, 4);
    assert!(backlog.oldest.is_some());

    let first = claim(&*store, "one", soon()).await;
    assert_eq!(actions(&first), ["a1", "g1"], "one head per workspace");
    assert_eq!(first[0].chained.link.as_ref().unwrap().sequence, 1);
    assert!(claim(&*store, "two", soon()).await.is_empty(), "leased");

    assert!(store.ack_outbox(first[0].seq, "one").await.unwrap());
    assert!(!store.ack_outbox(first[0].seq, "one").await.unwrap());
    assert_eq!(actions(&claim(&*store, "two", soon()).await), ["a2"]);
    assert!(store.ack_outbox(first[1].seq, "one").await.unwrap());
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 2);
}

pub(super) async fn a_failed_event_waits_its_backoff_and_holds_back_its_workspace(
    store: Arc<dyn Store>,
) {
    for action in ["a1", "a2"] {
        store
            .append_audit(&audit(Some("acme"), action))
            .await
            .unwrap();
    }
    store
        .append_audit(&audit(Some("globex"), "g1"))
        .await
        .unwrap();
    let heads = claim(&*store, "one", soon()).await;
    assert_eq!(actions(&heads), ["a1", "g1"]);
    let later = soon() + Duration::minutes(5);
    assert!(store
        .retry_outbox(retry(heads[0].seq, "one", later, "receiver answered 500"))
        .await
        .unwrap());
    assert!(store.ack_outbox(heads[1].seq, "one").await.unwrap());

    assert!(
        claim(&*store, "two", soon()).await.is_empty(),
        "neither the failed event nor the one after it is due"
    );
    let retried = claim(&*store, "three", later).await;
    assert_eq!(actions(&retried), ["a1"]);
    assert_eq!(retried[0].attempts, 1);
    // A lease that ran out is claimed again; its old holder can no longer settle it.
    let expired = later + Duration::minutes(2);
    assert_eq!(actions(&claim(&*store, "four", expired).await), ["a1"]);
    assert!(!store.ack_outbox(retried[0].seq, "three").await.unwrap());
    assert!(!store
        .retry_outbox(retry(retried[0].seq, "three", later, "late"))
        .await
        .unwrap());
    assert!(store.ack_outbox(retried[0].seq, "four").await.unwrap());
    assert_eq!(actions(&claim(&*store, "five", expired).await), ["a2"]);
}

pub(super) async fn unexported_rows_older_than_the_cutoff_are_dropped(store: Arc<dyn Store>) {
    store
        .append_audit(&audit(Some("acme"), "a1"))
        .await
        .unwrap();
    assert_eq!(
        store
            .drop_outbox_before(OffsetDateTime::now_utc() - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.drop_outbox_before(soon()).await.unwrap(), 1);
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 0);
    assert_eq!(store.outbox_backlog().await.unwrap().oldest, None);
}

/// Rounds of the two-process claim race: one round could pass by luck of scheduling.
const CLAIM_RACE_ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_claiming_at_once_never_hold_one_workspace_twice() {
    harness::postgres_pair(|first, second| async move {
        for round in 0..CLAIM_RACE_ROUNDS {
            for ws in ["acme", "globex", "initech"] {
                for n in 0..2 {
                    let action = format!("{ws}-{round}-{n}");
                    first.append_audit(&audit(Some(ws), &action)).await.unwrap();
                }
            }
            let (a_owner, b_owner) = (format!("a{round}"), format!("b{round}"));
            let (a, b) = tokio::join!(
                claim(&*first, &a_owner, soon()),
                claim(&*second, &b_owner, soon())
            );
            let mut held: Vec<_> = a
                .iter()
                .chain(&b)
                .map(|e| e.chained.event.workspace_id.clone())
                .collect();
            held.sort();
            held.dedup();
            assert_eq!(
                held.len(),
                a.len() + b.len(),
                "round {round}: a workspace claimed twice"
            );
            for (owner, entries) in [(format!("a{round}"), &a), (format!("b{round}"), &b)] {
                for e in entries.iter() {
                    assert!(first.ack_outbox(e.seq, &owner).await.unwrap());
                }
            }
            // Drain the round's rest, in order, before the next round.
            let rest = claim(&*second, &format!("c{round}"), soon()).await;
            for e in &rest {
                assert!(
                    e.chained.event.action.ends_with("-1"),
                    "{}",
                    e.chained.event.action
                );
                assert!(second
                    .ack_outbox(e.seq, &format!("c{round}"))
                    .await
                    .unwrap());
            }
            let leftover = claim(&*second, &format!("d{round}"), soon()).await;
            for e in &leftover {
                assert!(second
                    .ack_outbox(e.seq, &format!("d{round}"))
                    .await
                    .unwrap());
            }
        }
        assert_eq!(first.outbox_backlog().await.unwrap().pending, 0);
    })
    .await;
}
