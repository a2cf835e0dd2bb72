//! The audit log and its paging.

use super::fixtures::*;

pub(super) async fn audit_pages_run_newest_first_with_cursors_within_one_workspace(
    store: Arc<dyn Store>,
) {
    let mut written = Vec::new();
    for i in 1..=7 {
        let event = audit(Some("acme"), &format!("a{i}"));
        store.append_audit(&event).await.unwrap();
        written.push(event);
        store
            .append_audit(&audit(Some("other"), &format!("o{i}")))
            .await
            .unwrap();
        store
            .append_audit(&audit(None, &format!("n{i}")))
            .await
            .unwrap();
    }

    let first = store.list_audit("acme", 3, None).await.unwrap();
    assert_eq!(actions(&first.events), vec!["a7", "a6", "a5"]);
    let cursor = first.next_cursor.expect("a second page");
    let second = store.list_audit("acme", 3, Some(cursor)).await.unwrap();
    assert_eq!(actions(&second.events), vec!["a4", "a3", "a2"]);
    let cursor = second.next_cursor.expect("a third page");
    let third = store.list_audit("acme", 3, Some(cursor)).await.unwrap();
    assert_eq!(actions(&third.events), vec!["a1"]);
    assert_eq!(third.next_cursor, None);

    // The events come back exactly as written.
    written.reverse();
    let all: Vec<_> = [events(first), events(second), events(third)].concat();
    assert_eq!(all, written);
}

pub(super) async fn a_full_last_audit_page_has_no_cursor(store: Arc<dyn Store>) {
    append_acme_events(&*store, 6).await;
    let first = store.list_audit("acme", 3, None).await.unwrap();
    let second = store
        .list_audit("acme", 3, first.next_cursor)
        .await
        .unwrap();
    assert_eq!(actions(&second.events), vec!["a3", "a2", "a1"]);
    assert_eq!(second.next_cursor, None);
    assert!(store
        .list_audit("nobody", 3, None)
        .await
        .unwrap()
        .events
        .is_empty());
}

pub(super) async fn the_audit_limit_is_clamped_to_at_least_one(store: Arc<dyn Store>) {
    append_acme_events(&*store, 2).await;
    let page = store.list_audit("acme", 0, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["a2"]);
    assert!(page.next_cursor.is_some());
    let page = store.list_audit("acme", u32::MAX, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["a2", "a1"]);
}

pub(super) async fn an_audit_event_id_is_stored_once(store: Arc<dyn Store>) {
    let event = audit(Some("acme"), "once");
    store.append_audit(&event).await.unwrap();
    let err = store.append_audit(&event).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store
            .list_audit("acme", 10, None)
            .await
            .unwrap()
            .events
            .len(),
        1
    );
}

/// Events `a1` to `a{count}` in workspace `acme`, in that order.
async fn append_acme_events(store: &dyn Store, count: u32) {
    for i in 1..=count {
        store
            .append_audit(&audit(Some("acme"), &format!("a{i}")))
            .await
            .unwrap();
    }
}
