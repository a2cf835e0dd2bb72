//! Issued tokens: issuance, listing filters, revocation, purge.

use super::fixtures::*;

pub(super) async fn an_issuance_writes_every_token_and_its_audit_event(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    with_session(&*store, "acme", "ses-1").await;
    let first = token("tok-1", "acme", Some("ses-1"));
    let whole_installation = IssuedToken {
        repositories: None,
        sealed_token: None,
        session_id: None,
        created_at: at(1),
        ..token("tok-2", "acme", None)
    };
    let event = mint_audit("acme", &["tok-1", "tok-2"]);

    store
        .record_issuance(&[first.clone(), whole_installation.clone()], &event)
        .await
        .unwrap();

    let listed = all_tokens(&*store, "acme").await;
    assert_eq!(listed, vec![whole_installation, first]);
    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(events(page).first(), Some(&event));
}

pub(super) async fn an_issuance_with_a_duplicate_token_id_writes_nothing(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let batch = [
        token("tok-1", "acme", None),
        token("tok-2", "acme", None),
        token("tok-1", "acme", None),
    ];

    let err = issue(&*store, "acme", &batch).await.unwrap_err();

    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(all_tokens(&*store, "acme").await, vec![]);
    assert!(audit_actions(&*store, "acme").await.is_empty());

    // A token naming a session that does not exist is refused the same way.
    let orphan = token("tok-3", "acme", Some("ses-missing"));
    let err = issue(&*store, "acme", &[orphan]).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(audit_actions(&*store, "acme").await.is_empty());
}

pub(super) async fn list_tokens_applies_every_filter_newest_first(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    with_session(&*store, "acme", "ses-1").await;
    with_session(&*store, "acme", "ses-2").await;
    with_session(&*store, "other", "ses-9").await;
    let active_s1 = token("tok-a", "acme", Some("ses-1"));
    let revoked_s1 = IssuedToken {
        created_at: at(1),
        revoked_at: Some(at(2)),
        ..token("tok-b", "acme", Some("ses-1"))
    };
    let expired_s2 = IssuedToken {
        created_at: at(2),
        expires_at: at(3),
        ..token("tok-c", "acme", Some("ses-2"))
    };
    let active_s2 = IssuedToken {
        created_at: at(3),
        ..token("tok-d", "acme", Some("ses-2"))
    };
    let elsewhere = IssuedToken {
        created_at: at(4),
        ..token("tok-e", "other", Some("ses-9"))
    };
    issue(
        &*store,
        "acme",
        &[active_s1, revoked_s1, expired_s2, active_s2],
    )
    .await
    .unwrap();
    issue(&*store, "other", &[elsewhere]).await.unwrap();

    let cases: Vec<(&str, TokenFilter, Vec<&str>)> = vec![
        (
            "no filter",
            TokenFilter::default(),
            vec!["tok-d", "tok-c", "tok-b", "tok-a"],
        ),
        (
            "active at minute 10",
            TokenFilter {
                state: Some((TokenState::Active, at(10))),
                ..TokenFilter::default()
            },
            vec!["tok-d", "tok-a"],
        ),
        (
            "active exactly at expiry is not active",
            TokenFilter {
                state: Some((TokenState::Active, at(60))),
                ..TokenFilter::default()
            },
            vec![],
        ),
        (
            "revoked",
            TokenFilter {
                state: Some((TokenState::Revoked, at(10))),
                ..TokenFilter::default()
            },
            vec!["tok-b"],
        ),
        (
            "expired at minute 10",
            TokenFilter {
                state: Some((TokenState::Expired, at(10))),
                ..TokenFilter::default()
            },
            vec!["tok-c"],
        ),
        (
            "expired at expiry; a revoked token stays revoked",
            TokenFilter {
                state: Some((TokenState::Expired, at(60))),
                ..TokenFilter::default()
            },
            vec!["tok-d", "tok-c", "tok-a"],
        ),
        (
            "the state filter applies before the limit",
            TokenFilter {
                state: Some((TokenState::Revoked, at(10))),
                limit: Some(1),
                ..TokenFilter::default()
            },
            vec!["tok-b"],
        ),
        (
            "expired, limit 1",
            TokenFilter {
                state: Some((TokenState::Expired, at(60))),
                limit: Some(1),
                ..TokenFilter::default()
            },
            vec!["tok-d"],
        ),
        (
            "session",
            TokenFilter {
                session_id: Some("ses-1".to_owned()),
                ..TokenFilter::default()
            },
            vec!["tok-b", "tok-a"],
        ),
        (
            "ids, unknown and foreign ones ignored",
            TokenFilter {
                ids: Some(vec![
                    "tok-a".into(),
                    "tok-c".into(),
                    "tok-e".into(),
                    "tok-zz".into(),
                ]),
                ..TokenFilter::default()
            },
            vec!["tok-c", "tok-a"],
        ),
        (
            "empty id list",
            TokenFilter {
                ids: Some(vec![]),
                ..TokenFilter::default()
            },
            vec![],
        ),
        (
            "limit",
            TokenFilter {
                limit: Some(2),
                ..TokenFilter::default()
            },
            vec!["tok-d", "tok-c"],
        ),
        (
            "active and session",
            TokenFilter {
                state: Some((TokenState::Active, at(10))),
                session_id: Some("ses-2".to_owned()),
                ..TokenFilter::default()
            },
            vec!["tok-d"],
        ),
    ];
    for (name, filter, expected) in cases {
        let listed = store.list_tokens("acme", &filter).await.unwrap();
        assert_eq!(ids(&listed), expected, "{name}");
    }

    // The SQL and `IssuedToken::state_at` (what the admin API shows) agree at every moment.
    let all = all_tokens(&*store, "acme").await;
    for minute in [0, 1, 2, 3, 10, 59, 60, 61] {
        for state in [TokenState::Active, TokenState::Revoked, TokenState::Expired] {
            let filter = TokenFilter {
                state: Some((state, at(minute))),
                ..TokenFilter::default()
            };
            let listed = store.list_tokens("acme", &filter).await.unwrap();
            let expected: Vec<&IssuedToken> = all
                .iter()
                .filter(|t| t.state_at(at(minute)) == state)
                .collect();
            assert_eq!(
                ids(&listed),
                expected.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
                "{state:?} at minute {minute}"
            );
        }
    }
}

pub(super) async fn marking_tokens_revoked_counts_only_newly_revoked_ones(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let already = IssuedToken {
        revoked_at: Some(at(1)),
        ..token("tok-b", "acme", None)
    };
    issue(&*store, "acme", &[token("tok-a", "acme", None), already])
        .await
        .unwrap();
    let both = vec!["tok-a".to_owned(), "tok-b".to_owned(), "tok-zz".to_owned()];

    assert_eq!(store.mark_tokens_revoked(&both, at(5)).await.unwrap(), 1);
    assert_eq!(store.mark_tokens_revoked(&both, at(6)).await.unwrap(), 0);
    assert_eq!(store.mark_tokens_revoked(&[], at(6)).await.unwrap(), 0);

    let listed = all_tokens(&*store, "acme").await;
    let revoked: Vec<_> = listed
        .iter()
        .map(|t| (t.id.as_str(), t.revoked_at))
        .collect();
    assert_eq!(
        revoked,
        vec![("tok-b", Some(at(1))), ("tok-a", Some(at(5)))]
    );
}

pub(super) async fn purge_clears_expired_sealed_tokens_and_old_replay_keys(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let expired = IssuedToken {
        expires_at: at(1),
        ..token("tok-old", "acme", None)
    };
    issue(&*store, "acme", &[expired, token("tok-live", "acme", None)])
        .await
        .unwrap();
    let old_key = replay_key("jti-old", at(1));
    let live_key = replay_key("jti-live", at(90));
    exchange(&*store, &old_key, "ses-1", "acme", "x")
        .await
        .unwrap();
    exchange(&*store, &live_key, "ses-2", "acme", "y")
        .await
        .unwrap();

    let stats = store.purge_expired(at(2), retention()).await.unwrap();

    assert_eq!(
        stats,
        PurgeStats {
            sealed_tokens_cleared: 1,
            replay_keys_deleted: 1,
            ..PurgeStats::default()
        }
    );
    let listed = all_tokens(&*store, "acme").await;
    let sealed: Vec<_> = listed
        .iter()
        .map(|t| (t.id.as_str(), t.sealed_token.as_deref()))
        .collect();
    assert_eq!(
        sealed,
        vec![("tok-old", None), ("tok-live", Some("sealed-tok-live"))]
    );
    assert_eq!(
        store.purge_expired(at(2), retention()).await.unwrap(),
        PurgeStats::default()
    );
    // The purged key no longer blocks; the live one still does.
    exchange(&*store, &old_key, "ses-3", "acme", "z")
        .await
        .unwrap();
    let err = exchange(&*store, &live_key, "ses-4", "acme", "w")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Replay), "{err:?}");
}

/// Minutes in a day, for times counted in days from [`T0`].
const DAY: i64 = 24 * 60;

pub(super) async fn purge_deletes_session_and_token_rows_past_retention_but_never_the_audit_log(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme"]).await;
    let now = at(200 * DAY);
    // Retention 30 days for sessions, 90 for tokens: the cutoffs are days 170 and 110.
    let session_expiring = |id: &str, day: i64| SessionRecord {
        expires_at: at(day * DAY),
        ..session(id, "acme")
    };
    let token_expiring = |id: &str, session: Option<&str>, day: i64| IssuedToken {
        expires_at: at(day * DAY),
        sealed_token: None,
        ..token(id, "acme", session)
    };
    for (id, day) in [
        ("ses-old", 100),
        ("ses-recent", 171),
        ("ses-at-cutoff", 170),
        ("ses-held", 100),
        ("ses-freed", 100),
    ] {
        store
            .record_exchange(
                &replay_key(&format!("jti-{id}"), at(10)),
                &session_expiring(id, day),
                &audit(Some("acme"), &format!("exchange {id}")),
            )
            .await
            .unwrap();
    }
    issue(
        &*store,
        "acme",
        &[
            token_expiring("tok-old", None, 100),
            token_expiring("tok-at-cutoff", None, 110),
            token_expiring("tok-holds-session", Some("ses-held"), 111),
            token_expiring("tok-of-freed-session", Some("ses-freed"), 100),
        ],
    )
    .await
    .unwrap();
    let audited = audit_actions(&*store, "acme").await;

    let stats = store
        .purge_expired(now, Retention::days(30, 90))
        .await
        .unwrap();

    assert_eq!(
        stats,
        PurgeStats {
            sealed_tokens_cleared: 0,
            replay_keys_deleted: 5,
            tokens_deleted: 2,
            sessions_deleted: 2,
        }
    );
    let kept: Vec<String> = all_tokens(&*store, "acme")
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(kept, ["tok-holds-session", "tok-at-cutoff"]);
    for (id, kept) in [
        ("ses-old", false),
        ("ses-recent", true),
        ("ses-at-cutoff", true),
        // Past its own retention, but a kept token row still names it.
        ("ses-held", true),
        // Its only token row went in the same purge.
        ("ses-freed", false),
    ] {
        assert_eq!(store.get_session(id).await.unwrap().is_some(), kept, "{id}");
    }
    assert_eq!(audit_actions(&*store, "acme").await, audited);
    assert!(crate::audit::verify::verify(&*store, None)
        .await
        .unwrap()
        .intact());
    assert_eq!(
        store
            .purge_expired(now, Retention::days(30, 90))
            .await
            .unwrap(),
        PurgeStats::default()
    );
}
