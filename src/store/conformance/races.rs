//! PostgreSQL only: two broker processes (two pools) on one database.

use super::fixtures::*;
use super::harness;
use std::future::Future;

/// Rounds of the concurrent replay race: one round could pass by luck of scheduling.
const REPLAY_RACE_ROUNDS: usize = 20;

/// Start `count` jobs at once, job `i` on `first` when `i` is even and on `second` when odd
/// (two processes racing), and return their results in job order once all have finished.
async fn alternately<T, F, Fut>(
    first: &Arc<dyn Store>,
    second: &Arc<dyn Store>,
    count: usize,
    job: F,
) -> Vec<T>
where
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let results = race(count, |i| {
        job(Arc::clone(if i % 2 == 0 { first } else { second }), i)
    })
    .await;
    results.into_iter().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replay_key_raced_from_two_processes_is_accepted_once() {
    harness::postgres_pair(|first, second| async move {
        with_workspaces(&*first, &["acme"]).await;
        for round in 0..REPLAY_RACE_ROUNDS {
            let key = replay_key(&format!("jti-race-{round}"), at(10));
            let attempt = |store: Arc<dyn Store>, who: &str| {
                let key = key.clone();
                let session = session(&format!("ses-{round}-{who}"), "acme");
                let event = audit(Some("acme"), &format!("exchange-{round}-{who}"));
                tokio::spawn(async move { store.record_exchange(&key, &session, &event).await })
            };
            let a = attempt(Arc::clone(&first), "a");
            let b = attempt(Arc::clone(&second), "b");
            let results = [a.await.unwrap(), b.await.unwrap()];

            let accepted = results.iter().filter(|r| r.is_ok()).count();
            let replayed = results
                .iter()
                .filter(|r| matches!(r, Err(StoreError::Replay)))
                .count();
            assert_eq!((accepted, replayed), (1, 1), "round {round}: {results:?}");
            let sessions = [
                first.get_session(&format!("ses-{round}-a")).await.unwrap(),
                first.get_session(&format!("ses-{round}-b")).await.unwrap(),
            ];
            assert_eq!(sessions.iter().flatten().count(), 1, "round {round}");
        }
        let page = second.list_audit("acme", 500, None).await.unwrap();
        assert_eq!(page.events.len(), REPLAY_RACE_ROUNDS);
    })
    .await;
}

#[tokio::test]
async fn postgres_a_session_revoked_through_one_process_is_revoked_for_the_other() {
    harness::postgres_pair(|first, second| async move {
        with_workspaces(&*first, &["acme"]).await;
        with_session(&*first, "acme", "ses-1").await;
        assert_eq!(
            second
                .get_session("ses-1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            None
        );

        assert!(first.revoke_session("ses-1", at(5)).await.unwrap());

        let seen = second.get_session("ses-1").await.unwrap().unwrap();
        assert_eq!(seen.revoked_at, Some(at(5)));
        assert!(!second.revoke_session("ses-1", at(6)).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_signing_key_candidates_converge_on_one_key() {
    harness::postgres_pair(|first, second| async move {
        let mut kids = alternately(&first, &second, 8, |store, i| {
            let candidate = signing_key(&format!("kid-{i}"));
            async move { Ok(store.load_or_store_signing_key(&candidate).await?.kid) }
        })
        .await;
        kids.dedup();
        assert_eq!(kids.len(), 1, "{kids:?}");
        let again = second
            .load_or_store_signing_key(&signing_key("kid-late"))
            .await
            .unwrap();
        assert_eq!(again.kid, kids[0]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_policy_puts_from_two_processes_get_distinct_versions() {
    harness::postgres_pair(|first, second| async move {
        with_workspaces(&*first, &["acme"]).await;
        let mut versions = alternately(&first, &second, 10, |store, i| {
            let new = policy("acme", "default", &format!("v{i}"));
            async move { Ok(store.put_policy(&new).await?.version) }
        })
        .await;
        versions.sort_unstable();
        assert_eq!(versions, (1..=10).collect::<Vec<i64>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_installation_raced_into_two_workspaces_is_linked_once() {
    harness::postgres_pair(|first, second| async move {
        with_workspaces(&*first, &["ws-a", "ws-b"]).await;
        let a = {
            let store = Arc::clone(&first);
            tokio::spawn(async move { store.link_installation(&link("ws-a", "acme", 42)).await })
        };
        let b = {
            let store = Arc::clone(&second);
            tokio::spawn(async move { store.link_installation(&link("ws-b", "acme", 42)).await })
        };
        let results = [a.await.unwrap(), b.await.unwrap()];

        let linked: Vec<_> = results
            .iter()
            .flatten()
            .map(|l| l.workspace_id.clone())
            .collect();
        assert_eq!(linked.len(), 1, "{results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        let expected = format!("installation linked to workspace {}", linked[0]);
        assert!(
            matches!(loser, StoreError::Conflict(m) if *m == expected),
            "{loser:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_audit_appends_from_two_processes_keep_one_chain() {
    harness::postgres_pair(|first, second| async move {
        with_workspaces(&*first, &["acme"]).await;
        alternately(&first, &second, 40, |store, i| {
            let event = audit(Some("acme"), &format!("a{i}"));
            async move { store.append_audit(&event).await }
        })
        .await;
        let report = crate::audit::verify::verify(&*second, None).await.unwrap();
        assert!(report.intact(), "{report}");
        assert_eq!((report.chains, report.events), (1, 40));
        let page = first.list_audit("acme", 100, None).await.unwrap();
        let sequences: Vec<i64> = page
            .events
            .iter()
            .filter_map(|e| e.link.as_ref().map(|l| l.sequence))
            .collect();
        assert_eq!(sequences, (1..=40).rev().collect::<Vec<i64>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exchanges_from_two_processes_into_several_workspaces_keep_every_chain() {
    harness::postgres_pair(|first, second| async move {
        let workspaces = ["acme", "globex", "initech"];
        with_workspaces(&*first, &workspaces).await;
        // Each process writes its batches' exchanges together (`postgres/bulk.rs`), locking
        // several chains at once: the two must neither deadlock nor link two events to one head.
        let outcomes = alternately(&first, &second, 60, move |store, i| async move {
            let workspace = workspaces[i % workspaces.len()];
            raced_exchange(&*store, &format!("jti-{i}"), i, workspace).await
        })
        .await;
        assert_eq!(outcomes.len(), 60);
        let report = crate::audit::verify::verify(&*second, None).await.unwrap();
        assert!(report.intact(), "{report}");
        assert_eq!((report.chains, report.events), (3, 60));
        assert_eq!(first.outbox_backlog().await.unwrap().pending, 60);
    })
    .await;
}
