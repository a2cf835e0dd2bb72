//! Policy versions.

use super::fixtures::*;

pub(super) async fn policy_versions_count_up_and_continue_after_a_delete(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    for (expected, source) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        let stored = put(&*store, "acme", "default", source).await;
        assert_eq!(stored.version, expected);
        assert_eq!(stored.source, source);
    }
    let current = store.get_policy("acme", "default").await.unwrap().unwrap();
    assert_eq!((current.version, current.source.as_str()), (3, "v3"));

    assert!(store.delete_policy("acme", "default", at(1)).await.unwrap());
    assert!(!store.delete_policy("acme", "default", at(2)).await.unwrap());
    assert_eq!(store.get_policy("acme", "default").await.unwrap(), None);
    assert_eq!(store.list_policies("acme").await.unwrap(), vec![]);

    let mut again = policy("acme", "default", "v4");
    again.format = PolicyFormat::Json;
    again.created_at = at(3);
    let stored = store.put_policy(&again).await.unwrap();
    let expected = StoredPolicy {
        workspace_id: "acme".to_owned(),
        name: "default".to_owned(),
        version: 4,
        source: "v4".to_owned(),
        format: PolicyFormat::Json,
        created_at: at(3),
    };
    assert_eq!(stored, expected);
    assert_eq!(
        store.get_policy("acme", "default").await.unwrap(),
        Some(expected)
    );
    assert!(!store
        .delete_policy("acme", "never-existed", at(4))
        .await
        .unwrap());
}

pub(super) async fn list_policies_returns_current_versions_of_live_policies_by_name(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme", "other"]).await;
    for (name, source) in [("b", "b1"), ("a", "a1"), ("b", "b2"), ("c", "c1")] {
        store
            .put_policy(&policy("acme", name, source))
            .await
            .unwrap();
    }
    put(&*store, "other", "z", "z1").await;
    store.delete_policy("acme", "c", at(1)).await.unwrap();

    let listed = store.list_policies("acme").await.unwrap();

    let summary: Vec<_> = listed
        .iter()
        .map(|p| (p.name.as_str(), p.version, p.source.as_str()))
        .collect();
    assert_eq!(summary, vec![("a", 1, "a1"), ("b", 2, "b2")]);
}

pub(super) async fn policy_versions_are_counted_per_workspace(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    put(&*store, "acme", "default", "a1").await;
    put(&*store, "acme", "default", "a2").await;

    let other = put(&*store, "other", "default", "o1").await;

    assert_eq!(other.version, 1);
    assert_eq!(
        store
            .get_policy("acme", "default")
            .await
            .unwrap()
            .unwrap()
            .source,
        "a2"
    );
}

pub(super) async fn putting_a_policy_into_a_missing_workspace_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .put_policy(&policy("ghost", "default", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub(super) async fn every_policy_version_is_listed_newest_first_deleted_ones_too(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme", "other"]).await;
    for source in ["v1", "v2"] {
        put(&*store, "acme", "default", source).await;
    }
    put(&*store, "other", "default", "elsewhere").await;
    put(&*store, "acme", "another", "a1").await;
    store.delete_policy("acme", "default", at(1)).await.unwrap();
    put(&*store, "acme", "default", "v3").await;

    let versions = store.policy_versions("acme", "default").await.unwrap();
    let summary: Vec<_> = versions
        .iter()
        .map(|p| {
            (
                p.workspace_id.as_str(),
                p.name.as_str(),
                p.version,
                p.source.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("acme", "default", 3, "v3"),
            ("acme", "default", 2, "v2"),
            ("acme", "default", 1, "v1"),
        ]
    );
    assert_eq!(
        store.policy_versions("acme", "never").await.unwrap(),
        vec![]
    );
}
