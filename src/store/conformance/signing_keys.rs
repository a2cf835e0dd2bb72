//! Session signing key rotation: one active key at every moment, the previous keys kept (with
//! when they were replaced) until a purge past their cutoff.

use super::fixtures::*;
use super::harness;
use crate::store::StoredSigningKey;
use std::collections::BTreeSet;

/// Rotations started at once in the race cases: two could be serialised by luck of scheduling.
const CONCURRENT_ROTATIONS: usize = 8;

/// `(kid, active, deactivated_at)` of every kept key, oldest first.
async fn states(store: &dyn Store) -> Vec<(String, bool, Option<time::OffsetDateTime>)> {
    store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.record.kid, k.active, k.deactivated_at))
        .collect()
}

fn active_kids(keys: &[StoredSigningKey]) -> Vec<&str> {
    keys.iter()
        .filter(|k| k.active)
        .map(|k| k.record.kid.as_str())
        .collect()
}

pub(super) async fn a_rotation_keeps_one_active_key_and_lists_the_previous_one_deactivated(
    store: Arc<dyn Store>,
) {
    let first = signing_key("kid-1");
    store.load_or_store_signing_key(&first).await.unwrap();
    assert_eq!(states(&*store).await, [("kid-1".to_owned(), true, None)]);

    let previous = store
        .rotate_signing_key(&signing_key("kid-2"), at(10))
        .await
        .unwrap();

    assert_eq!(previous.as_deref(), Some("kid-1"));
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys[0].record, first, "the previous key is kept as it was");
    assert_eq!(
        states(&*store).await,
        [
            ("kid-1".to_owned(), false, Some(at(10))),
            ("kid-2".to_owned(), true, None),
        ]
    );
    // Every replica starting now signs with the new key.
    let loaded = store
        .load_or_store_signing_key(&signing_key("kid-late"))
        .await
        .unwrap();
    assert_eq!(loaded.kid, "kid-2");
}

pub(super) async fn a_rotation_onto_a_kept_kid_changes_nothing(store: Arc<dyn Store>) {
    store
        .load_or_store_signing_key(&signing_key("kid-1"))
        .await
        .unwrap();
    store
        .rotate_signing_key(&signing_key("kid-2"), at(10))
        .await
        .unwrap();

    let reused = store
        .rotate_signing_key(&signing_key("kid-1"), at(20))
        .await;

    assert!(matches!(reused, Err(StoreError::Conflict(_))), "{reused:?}");
    // The deactivation ran in the same transaction: it was rolled back with the insert.
    assert_eq!(
        states(&*store).await,
        [
            ("kid-1".to_owned(), false, Some(at(10))),
            ("kid-2".to_owned(), true, None),
        ]
    );
}

pub(super) async fn a_purge_drops_only_keys_deactivated_before_its_cutoff_never_the_active_one(
    store: Arc<dyn Store>,
) {
    store
        .load_or_store_signing_key(&signing_key("kid-1"))
        .await
        .unwrap();
    for (kid, minute) in [("kid-2", 10), ("kid-3", 20)] {
        store
            .rotate_signing_key(&signing_key(kid), at(minute))
            .await
            .unwrap();
    }

    // The cutoff is exclusive: a key deactivated at it is kept.
    assert!(store.purge_signing_keys(at(10)).await.unwrap().is_empty());
    assert_eq!(store.purge_signing_keys(at(15)).await.unwrap(), ["kid-1"]);
    assert_eq!(
        states(&*store).await,
        [
            ("kid-2".to_owned(), false, Some(at(20))),
            ("kid-3".to_owned(), true, None),
        ]
    );
    // However late the cutoff, the active key stays.
    assert_eq!(
        store.purge_signing_keys(at(100_000)).await.unwrap(),
        ["kid-2"]
    );
    assert_eq!(states(&*store).await, [("kid-3".to_owned(), true, None)]);
    assert!(store
        .purge_signing_keys(at(100_000))
        .await
        .unwrap()
        .is_empty());
}

/// Rotate from `first` and `second` (the same store, or two processes on one database) at once,
/// then check that the rotations ran one after another: one active key, every other one
/// deactivated, and each rotation replaced a different key.
async fn race_rotations(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    first
        .load_or_store_signing_key(&signing_key("kid-0"))
        .await
        .unwrap();
    let rotations: Vec<_> = (1..=CONCURRENT_ROTATIONS)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &first } else { &second });
            tokio::spawn(async move {
                store
                    .rotate_signing_key(&signing_key(&format!("kid-{i}")), at(10))
                    .await
            })
        })
        .collect();
    let mut replaced = BTreeSet::new();
    for rotation in rotations {
        let previous = rotation.await.unwrap().unwrap();
        assert!(replaced.insert(previous.unwrap()), "{replaced:?}");
    }

    let keys = second.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), CONCURRENT_ROTATIONS + 1);
    let active = active_kids(&keys);
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(!replaced.contains(active[0]), "{replaced:?} {active:?}");
    assert!(keys.iter().all(|k| k.active == k.deactivated_at.is_none()));
}

pub(super) async fn concurrent_rotations_leave_one_active_key(store: Arc<dyn Store>) {
    race_rotations(Arc::clone(&store), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotations_raced_from_two_processes_leave_one_active_key() {
    harness::postgres_pair(race_rotations).await;
}
