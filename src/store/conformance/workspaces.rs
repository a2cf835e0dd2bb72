//! Workspaces and their installation links.

use super::fixtures::*;

pub(super) async fn answers_a_ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

pub(super) async fn workspaces_round_trip_and_list_in_id_order(store: Arc<dyn Store>) {
    let mut beta = workspace("beta");
    beta.sts_enabled = true;
    beta.updated_at = at(5);
    store.create_workspace(&beta).await.unwrap();
    store.create_workspace(&workspace("alpha")).await.unwrap();

    assert_eq!(
        store.get_workspace("beta").await.unwrap(),
        Some(beta.clone())
    );
    assert_eq!(store.get_workspace("gamma").await.unwrap(), None);
    assert_eq!(
        store.list_workspaces().await.unwrap(),
        vec![workspace("alpha"), beta]
    );
}

pub(super) async fn creating_an_existing_workspace_is_a_conflict(store: Arc<dyn Store>) {
    store.create_workspace(&workspace("acme")).await.unwrap();
    let mut again = workspace("acme");
    again.name = "Impostor".to_owned();

    let err = store.create_workspace(&again).await.unwrap_err();

    assert!(
        matches!(&err, StoreError::Conflict(m) if m == "workspace exists"),
        "{err:?}"
    );
    assert_eq!(
        store.get_workspace("acme").await.unwrap(),
        Some(workspace("acme"))
    );
}

pub(super) async fn the_sts_entitlement_flips_and_a_missing_workspace_gives_none(
    store: Arc<dyn Store>,
) {
    store.create_workspace(&workspace("acme")).await.unwrap();

    let enabled = store
        .set_workspace_sts_enabled("acme", true, at(1))
        .await
        .unwrap();
    let expected = Workspace {
        sts_enabled: true,
        updated_at: at(1),
        ..workspace("acme")
    };
    assert_eq!(enabled, Some(expected.clone()));
    assert_eq!(store.get_workspace("acme").await.unwrap(), Some(expected));

    let disabled = store
        .set_workspace_sts_enabled("acme", false, at(2))
        .await
        .unwrap();
    assert_eq!(
        disabled.map(|w| (w.sts_enabled, w.updated_at)),
        Some((false, at(2)))
    );

    assert_eq!(
        store
            .set_workspace_sts_enabled("nope", true, at(3))
            .await
            .unwrap(),
        None
    );
}

pub(super) async fn links_round_trip_and_owner_lookup_ignores_case(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    let acme = link("acme", "AcMe", 42);
    let zeta = link("acme", "zeta", 7);
    let beta = link("acme", "Beta", 9);
    for l in [&acme, &zeta, &beta] {
        assert_eq!(&store.link_installation(l).await.unwrap(), l);
    }

    assert_eq!(
        store.find_installation("acme", "acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.find_installation("acme", "ACME").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.find_installation("other", "acme").await.unwrap(),
        None
    );
    assert_eq!(
        store.find_installation("acme", "nobody").await.unwrap(),
        None
    );
    assert_eq!(
        store.list_installations("acme").await.unwrap(),
        vec![acme, beta, zeta]
    );
    assert_eq!(store.list_installations("other").await.unwrap(), vec![]);
}

pub(super) async fn an_installation_linked_to_another_workspace_is_a_conflict(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["ws-a", "ws-b"]).await;
    linked(&*store, "ws-a", "acme", 42).await;

    let err = link_error(&*store, &link("ws-b", "acme", 42)).await;

    assert_conflict(&err, "installation linked to workspace ws-a");
    assert_eq!(store.list_installations("ws-b").await.unwrap(), vec![]);
    assert_eq!(
        store.list_installations("ws-a").await.unwrap(),
        vec![link("ws-a", "acme", 42)]
    );
}

pub(super) async fn relinking_the_same_installation_updates_the_row(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    linked(&*store, "acme", "acme", 42).await;
    let relink = InstallationLink {
        owner: "ACME".to_owned(),
        repository_selection: "selected".to_owned(),
        created_at: at(30),
        ..link("acme", "acme", 42)
    };

    let stored = store.link_installation(&relink).await.unwrap();

    // The link time stays the original one; what GitHub reports is refreshed.
    let expected = InstallationLink {
        created_at: T0,
        ..relink
    };
    assert_eq!(stored, expected);
    assert_eq!(
        store.list_installations("acme").await.unwrap(),
        vec![expected]
    );
}

pub(super) async fn a_second_installation_for_the_same_owner_is_a_conflict(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    linked(&*store, "acme", "acme", 42).await;

    let err = link_error(&*store, &link("acme", "ACME", 43)).await;

    assert_conflict(&err, "owner already linked");
    assert_eq!(
        store.list_installations("acme").await.unwrap(),
        vec![link("acme", "acme", 42)]
    );
}

pub(super) async fn linking_into_a_missing_workspace_is_not_found(store: Arc<dyn Store>) {
    let err = link_error(&*store, &link("ghost", "acme", 42)).await;
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub(super) async fn unlinking_ignores_case_and_frees_the_installation(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["ws-a", "ws-b"]).await;
    linked(&*store, "ws-a", "Acme", 42).await;

    assert!(!store.unlink_installation("ws-b", "acme").await.unwrap());
    assert!(store.unlink_installation("ws-a", "ACME").await.unwrap());
    assert!(!store.unlink_installation("ws-a", "acme").await.unwrap());
    assert_eq!(store.find_installation("ws-a", "acme").await.unwrap(), None);

    let moved = linked(&*store, "ws-b", "Acme", 42).await;
    assert_eq!(moved.workspace_id, "ws-b");
}

pub(super) async fn deleting_a_workspace_removes_its_rows_but_keeps_its_audit_trail(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme", "other"]).await;
    linked(&*store, "acme", "acme", 42).await;
    linked(&*store, "other", "other", 7).await;
    put(&*store, "acme", "default", "v1").await;
    put(&*store, "other", "default", "o1").await;
    with_session(&*store, "acme", "ses-1").await;
    with_session(&*store, "other", "ses-9").await;
    issue(&*store, "acme", &[token("tok-1", "acme", Some("ses-1"))])
        .await
        .unwrap();
    issue(&*store, "other", &[token("tok-9", "other", Some("ses-9"))])
        .await
        .unwrap();

    assert!(store.delete_workspace("acme").await.unwrap());
    assert!(!store.delete_workspace("acme").await.unwrap());

    assert_eq!(store.get_workspace("acme").await.unwrap(), None);
    assert_eq!(store.list_installations("acme").await.unwrap(), vec![]);
    assert_eq!(store.get_policy("acme", "default").await.unwrap(), None);
    assert_eq!(store.get_session("ses-1").await.unwrap(), None);
    assert_eq!(all_tokens(&*store, "acme").await, vec![]);
    assert_eq!(
        audit_actions(&*store, "acme").await,
        vec!["mint", "exchange"]
    );

    // The rows are gone, not hidden: the installation is free and versions restart.
    linked(&*store, "other", "acme", 42).await;
    store.create_workspace(&workspace("acme")).await.unwrap();
    assert_eq!(put(&*store, "acme", "default", "v1").await.version, 1);

    // The other workspace is untouched.
    assert_eq!(
        store
            .get_policy("other", "default")
            .await
            .unwrap()
            .unwrap()
            .source,
        "o1"
    );
    assert!(store.get_session("ses-9").await.unwrap().is_some());
    assert_eq!(ids(&all_tokens(&*store, "other").await), vec!["tok-9"]);
}

/// The error `link` is refused with.
async fn link_error(store: &dyn Store, link: &InstallationLink) -> StoreError {
    store.link_installation(link).await.unwrap_err()
}

fn assert_conflict(err: &StoreError, message: &str) {
    assert!(
        matches!(err, StoreError::Conflict(m) if m == message),
        "{err:?}"
    );
}
