//! Exchanges (replay keys, sessions) and the session signing key.

use super::fixtures::*;

pub(super) async fn an_exchange_writes_the_session_and_its_audit_event(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let ses = session("ses-1", "acme");
    let event = mint_audit("acme", &[]);

    store
        .record_exchange(&replay_key("jti-1", at(10)), &ses, &event)
        .await
        .unwrap();

    assert_eq!(store.get_session("ses-1").await.unwrap(), Some(ses));
    assert_eq!(store.get_session("ses-2").await.unwrap(), None);
    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(events(page), vec![event]);
}

pub(super) async fn a_replayed_token_is_refused_and_nothing_of_the_second_attempt_is_written(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme"]).await;
    let key = replay_key("jti-1", at(10));
    exchange(&*store, &key, "ses-1", "acme", "first")
        .await
        .unwrap();

    let err = exchange(&*store, &key, "ses-2", "acme", "second")
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::Replay), "{err:?}");
    assert_eq!(store.get_session("ses-2").await.unwrap(), None);
    assert_eq!(audit_actions(&*store, "acme").await, vec!["first"]);

    // The same jti from another issuer is another token.
    let other_issuer = JtiRecord {
        issuer: "https://issuer.example".to_owned(),
        ..key
    };
    exchange(&*store, &other_issuer, "ses-3", "acme", "third")
        .await
        .unwrap();
    assert!(store.get_session("ses-3").await.unwrap().is_some());
}

pub(super) async fn an_exchange_into_a_missing_workspace_writes_nothing(store: Arc<dyn Store>) {
    let key = replay_key("jti-1", at(10));
    let err = exchange(&*store, &key, "ses-1", "ghost", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.get_session("ses-1").await.unwrap(), None);
    assert!(audit_actions(&*store, "ghost").await.is_empty());

    // The replay key was rolled back with the rest: the token can still be exchanged.
    with_workspaces(&*store, &["acme"]).await;
    exchange(&*store, &key, "ses-1", "acme", "y").await.unwrap();
}

pub(super) async fn revoking_a_session_is_idempotent(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    with_session(&*store, "acme", "ses-1").await;

    assert!(store.revoke_session("ses-1", at(5)).await.unwrap());
    assert!(!store.revoke_session("ses-1", at(6)).await.unwrap());
    assert!(!store.revoke_session("ses-missing", at(6)).await.unwrap());

    let revoked = store.get_session("ses-1").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(5)));
}

pub(super) async fn the_first_signing_key_stored_wins(store: Arc<dyn Store>) {
    let first = signing_key("kid-1");
    assert_eq!(
        store.load_or_store_signing_key(&first).await.unwrap(),
        first
    );
    assert_eq!(
        store
            .load_or_store_signing_key(&signing_key("kid-2"))
            .await
            .unwrap(),
        first
    );
    // Offering the winner again is harmless.
    assert_eq!(
        store.load_or_store_signing_key(&first).await.unwrap(),
        first
    );
}
