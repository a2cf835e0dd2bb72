//! The store conformance suite: the same cases on every backend.
//!
//! Each case is an `async fn(Arc<dyn Store>)` written once; [`conformance_cases!`] turns it into
//! `sqlite::<case>` and `postgres::<case>` tests, each on a fresh database: a temp file for
//! SQLite, a fresh schema `t_<uuid>` (dropped afterwards) in the database named by
//! `STS_TEST_DATABASE_URL` for PostgreSQL. PostgreSQL being unreachable fails the tests: a
//! silent skip would let the backend that production replicas use go untested.
//!
//! Run: `cargo test --lib store::` (only one backend: `store::conformance::sqlite::`).

use super::{
    InstallationLink, IssuedToken, JtiRecord, NewPolicy, PurgeStats, SessionRecord,
    SigningKeyRecord, Store, StoreError, TokenFilter, TokenState, Workspace,
};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditToken, Exclusion, Outcome};
use crate::policy::PolicyFormat;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A fixed, millisecond-aligned clock: the schema stores epoch milliseconds, and fixed times
/// make every expected value exact.
const T0: OffsetDateTime = datetime!(2026-05-01 12:00:00 UTC);

/// `T0` plus `minutes`.
fn at(minutes: i64) -> OffsetDateTime {
    T0 + Duration::minutes(minutes)
}

mod harness {
    use crate::store::{postgres, sqlite, Store};
    use futures::FutureExt;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::Connection;
    use std::future::Future;
    use std::panic::AssertUnwindSafe;
    use std::str::FromStr;
    use std::sync::Arc;

    /// Used when `STS_TEST_DATABASE_URL` is unset: the PostgreSQL of the dev machine and CI.
    const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// Pool size of each store under test; the two-process cases run two of them at once.
    const TEST_POOL_SIZE: u32 = 4;

    /// Run `case` on a fresh SQLite file.
    pub(super) async fn sqlite<F, Fut>(case: F)
    where
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new().filename(dir.path().join("store.db"));
        let store = sqlite::connect_with(options, TEST_POOL_SIZE)
            .await
            .expect("open the sqlite store");
        assert_eq!(store.backend(), "sqlite");
        case(store).await;
    }

    /// A schema of its own in the test database, so tests run in parallel without sharing rows.
    struct Schema {
        admin: PgConnection,
        name: String,
        options: PgConnectOptions,
    }

    impl Schema {
        async fn create() -> Self {
            let url = std::env::var("STS_TEST_DATABASE_URL")
                .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
            let options = PgConnectOptions::from_str(&url)
                .unwrap_or_else(|e| panic!("STS_TEST_DATABASE_URL is not a postgres url: {e}"));
            let mut admin = PgConnection::connect_with(&options)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is unreachable at {}:{} ({e}); the postgres conformance tests \
                         need it: start it or point STS_TEST_DATABASE_URL at one",
                        options.get_host(),
                        options.get_port(),
                    )
                });
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("create schema {name}"))
                .execute(&mut admin)
                .await
                .expect("create the test schema");
            let options = options.options([("search_path", name.as_str())]);
            Self {
                admin,
                name,
                options,
            }
        }

        async fn store(&self) -> Arc<dyn Store> {
            let store = postgres::connect_with(self.options.clone(), TEST_POOL_SIZE)
                .await
                .expect("open the postgres store");
            assert_eq!(store.backend(), "postgres");
            store
        }

        /// Drop the schema, then re-raise a panic of the case, if any.
        async fn finish(mut self, outcome: std::thread::Result<()>) {
            sqlx::query(&format!("drop schema {} cascade", self.name))
                .execute(&mut self.admin)
                .await
                .expect("drop the test schema");
            self.admin
                .close()
                .await
                .expect("close the admin connection");
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Run `case` on a store in a fresh PostgreSQL schema.
    pub(super) async fn postgres<F, Fut>(case: F)
    where
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let schema = Schema::create().await;
        let store = schema.store().await;
        let outcome = AssertUnwindSafe(case(store)).catch_unwind().await;
        schema.finish(outcome).await;
    }

    /// Run `case` on two stores (two pools, like two broker processes) sharing one fresh schema.
    pub(super) async fn postgres_pair<F, Fut>(case: F)
    where
        F: FnOnce(Arc<dyn Store>, Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let schema = Schema::create().await;
        let first = schema.store().await;
        let second = schema.store().await;
        let outcome = AssertUnwindSafe(case(first, second)).catch_unwind().await;
        schema.finish(outcome).await;
    }
}

/// One `#[tokio::test]` per backend and case, in modules `sqlite` and `postgres`.
macro_rules! conformance_cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::harness::sqlite(super::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::harness::postgres(super::$case).await;
                }
            )*
        }
    };
}

conformance_cases!(
    answers_a_ping,
    workspaces_round_trip_and_list_in_id_order,
    creating_an_existing_workspace_is_a_conflict,
    the_sts_entitlement_flips_and_a_missing_workspace_gives_none,
    links_round_trip_and_owner_lookup_ignores_case,
    an_installation_linked_to_another_workspace_is_a_conflict,
    relinking_the_same_installation_updates_the_row,
    a_second_installation_for_the_same_owner_is_a_conflict,
    linking_into_a_missing_workspace_is_not_found,
    unlinking_ignores_case_and_frees_the_installation,
    policy_versions_count_up_and_continue_after_a_delete,
    list_policies_returns_current_versions_of_live_policies_by_name,
    policy_versions_are_counted_per_workspace,
    putting_a_policy_into_a_missing_workspace_is_not_found,
    an_exchange_writes_the_session_and_its_audit_event,
    a_replayed_token_is_refused_and_nothing_of_the_second_attempt_is_written,
    an_exchange_into_a_missing_workspace_writes_nothing,
    revoking_a_session_is_idempotent,
    an_issuance_writes_every_token_and_its_audit_event,
    an_issuance_with_a_duplicate_token_id_writes_nothing,
    list_tokens_applies_every_filter_newest_first,
    marking_tokens_revoked_counts_only_newly_revoked_ones,
    purge_clears_expired_sealed_tokens_and_old_replay_keys,
    audit_pages_run_newest_first_with_cursors_within_one_workspace,
    a_full_last_audit_page_has_no_cursor,
    the_audit_limit_is_clamped_to_at_least_one,
    an_audit_event_id_is_stored_once,
    the_first_signing_key_stored_wins,
    deleting_a_workspace_removes_its_rows_but_keeps_its_audit_trail,
);

// ---- fixtures ----

fn workspace(id: &str) -> Workspace {
    Workspace {
        id: id.to_owned(),
        name: format!("Workspace {id}"),
        sts_enabled: false,
        created_at: T0,
        updated_at: T0,
    }
}

async fn with_workspaces(store: &dyn Store, ids: &[&str]) {
    for id in ids {
        store
            .create_workspace(&workspace(id))
            .await
            .expect("create workspace");
    }
}

fn link(workspace_id: &str, owner: &str, installation_id: i64) -> InstallationLink {
    InstallationLink {
        workspace_id: workspace_id.to_owned(),
        owner: owner.to_owned(),
        account_id: installation_id * 10,
        installation_id,
        repository_selection: "all".to_owned(),
        created_at: T0,
    }
}

fn policy(workspace_id: &str, name: &str, source: &str) -> NewPolicy {
    NewPolicy {
        workspace_id: workspace_id.to_owned(),
        name: name.to_owned(),
        source: source.to_owned(),
        format: PolicyFormat::Yaml,
        created_at: T0,
    }
}

fn replay_key(jti: &str, expires_at: OffsetDateTime) -> JtiRecord {
    JtiRecord {
        issuer: "https://token.actions.githubusercontent.com".to_owned(),
        jti: jti.to_owned(),
        expires_at,
    }
}

fn session(id: &str, workspace_id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        workspace_id: workspace_id.to_owned(),
        issuer: "https://token.actions.githubusercontent.com".to_owned(),
        subject: "repo:acme/infra:ref:refs/heads/main".to_owned(),
        claims: serde_json::json!({
            "repository": "acme/infra",
            "repository_owner_id": "1001",
            "ref_protected": "true",
            "aud": ["atmos-pro.com"],
            "nested": {"n": 1, "f": 1.5, "null": null},
        }),
        created_at: T0,
        expires_at: at(60),
        revoked_at: None,
    }
}

fn audit(workspace_id: Option<&str>, action: &str) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::Admin, action);
    event.workspace_id = workspace_id.map(str::to_owned);
    event.outcome = Outcome::Success;
    event
}

/// A rich event, so the JSON round trip covers every field shape.
fn mint_audit(workspace_id: &str, token_ids: &[&str]) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::Mint, "mint");
    event.workspace_id = Some(workspace_id.to_owned());
    event.outcome = Outcome::Success;
    event.request_id = Some("req-1".to_owned());
    event.actor = Actor {
        kind: "oidc".to_owned(),
        session_id: Some("ses-1".to_owned()),
        claims: BTreeMap::from([("repository".to_owned(), "acme/infra".to_owned())]),
    };
    event.policy_name = Some("default".to_owned());
    event.policy_version = Some(3);
    event.installation_ids = vec![42];
    event.tokens = token_ids
        .iter()
        .map(|id| AuditToken {
            id: (*id).to_owned(),
            fingerprint: format!("sha256:{id}"),
            installation_id: 42,
            owner: "Acme".to_owned(),
            repositories: Some(vec!["Acme/infra".to_owned()]),
            permissions: BTreeMap::from([("contents".to_owned(), "read".to_owned())]),
            expires_at: Some(at(60)),
        })
        .collect();
    event.exclusions = vec![Exclusion {
        repo: "acme/secret".to_owned(),
        reason: "no_trust_policy".to_owned(),
    }];
    event.details = serde_json::json!({"sources": ["acme/infra", "acme/secret"]});
    event
}

fn token(id: &str, workspace_id: &str, session_id: Option<&str>) -> IssuedToken {
    IssuedToken {
        id: id.to_owned(),
        workspace_id: workspace_id.to_owned(),
        session_id: session_id.map(str::to_owned),
        installation_id: 42,
        owner: "Acme".to_owned(),
        host: "github.com".to_owned(),
        repositories: Some(vec!["Acme/infra".to_owned(), "Acme/modules".to_owned()]),
        permissions: BTreeMap::from([
            ("contents".to_owned(), "read".to_owned()),
            ("pull_requests".to_owned(), "write".to_owned()),
        ]),
        fingerprint: format!("sha256:{id}"),
        sealed_token: Some(format!("sealed-{id}")),
        policy_name: "default".to_owned(),
        policy_version: 1,
        created_at: T0,
        expires_at: at(60),
        revoked_at: None,
    }
}

/// A workspace with one live session `ses-1` (for token rows that name it).
async fn with_session(store: &dyn Store, workspace_id: &str, session_id: &str) {
    store
        .record_exchange(
            &replay_key(&format!("jti-{session_id}"), at(10)),
            &session(session_id, workspace_id),
            &audit(Some(workspace_id), "exchange"),
        )
        .await
        .expect("record exchange");
}

fn ids(tokens: &[IssuedToken]) -> Vec<&str> {
    tokens.iter().map(|t| t.id.as_str()).collect()
}

fn actions(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.action.as_str()).collect()
}

// ---- cases ----

async fn answers_a_ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

async fn workspaces_round_trip_and_list_in_id_order(store: Arc<dyn Store>) {
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

async fn creating_an_existing_workspace_is_a_conflict(store: Arc<dyn Store>) {
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

async fn the_sts_entitlement_flips_and_a_missing_workspace_gives_none(store: Arc<dyn Store>) {
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

async fn links_round_trip_and_owner_lookup_ignores_case(store: Arc<dyn Store>) {
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

async fn an_installation_linked_to_another_workspace_is_a_conflict(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["ws-a", "ws-b"]).await;
    store
        .link_installation(&link("ws-a", "acme", 42))
        .await
        .unwrap();

    let err = store
        .link_installation(&link("ws-b", "acme", 42))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StoreError::Conflict(m) if m == "installation linked to workspace ws-a"),
        "{err:?}"
    );
    assert_eq!(store.list_installations("ws-b").await.unwrap(), vec![]);
    assert_eq!(
        store.list_installations("ws-a").await.unwrap(),
        vec![link("ws-a", "acme", 42)]
    );
}

async fn relinking_the_same_installation_updates_the_row(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    store
        .link_installation(&link("acme", "acme", 42))
        .await
        .unwrap();
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

async fn a_second_installation_for_the_same_owner_is_a_conflict(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    store
        .link_installation(&link("acme", "acme", 42))
        .await
        .unwrap();

    let err = store
        .link_installation(&link("acme", "ACME", 43))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StoreError::Conflict(m) if m == "owner already linked"),
        "{err:?}"
    );
    assert_eq!(
        store.list_installations("acme").await.unwrap(),
        vec![link("acme", "acme", 42)]
    );
}

async fn linking_into_a_missing_workspace_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .link_installation(&link("ghost", "acme", 42))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn unlinking_ignores_case_and_frees_the_installation(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["ws-a", "ws-b"]).await;
    store
        .link_installation(&link("ws-a", "Acme", 42))
        .await
        .unwrap();

    assert!(!store.unlink_installation("ws-b", "acme").await.unwrap());
    assert!(store.unlink_installation("ws-a", "ACME").await.unwrap());
    assert!(!store.unlink_installation("ws-a", "acme").await.unwrap());
    assert_eq!(store.find_installation("ws-a", "acme").await.unwrap(), None);

    let moved = store
        .link_installation(&link("ws-b", "Acme", 42))
        .await
        .unwrap();
    assert_eq!(moved.workspace_id, "ws-b");
}

async fn policy_versions_count_up_and_continue_after_a_delete(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    for (expected, source) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        let stored = store
            .put_policy(&policy("acme", "default", source))
            .await
            .unwrap();
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
    let expected = super::StoredPolicy {
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

async fn list_policies_returns_current_versions_of_live_policies_by_name(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    for (name, source) in [("b", "b1"), ("a", "a1"), ("b", "b2"), ("c", "c1")] {
        store
            .put_policy(&policy("acme", name, source))
            .await
            .unwrap();
    }
    store.put_policy(&policy("other", "z", "z1")).await.unwrap();
    store.delete_policy("acme", "c", at(1)).await.unwrap();

    let listed = store.list_policies("acme").await.unwrap();

    let summary: Vec<_> = listed
        .iter()
        .map(|p| (p.name.as_str(), p.version, p.source.as_str()))
        .collect();
    assert_eq!(summary, vec![("a", 1, "a1"), ("b", 2, "b2")]);
}

async fn policy_versions_are_counted_per_workspace(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    store
        .put_policy(&policy("acme", "default", "a1"))
        .await
        .unwrap();
    store
        .put_policy(&policy("acme", "default", "a2"))
        .await
        .unwrap();

    let other = store
        .put_policy(&policy("other", "default", "o1"))
        .await
        .unwrap();

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

async fn putting_a_policy_into_a_missing_workspace_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .put_policy(&policy("ghost", "default", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn an_exchange_writes_the_session_and_its_audit_event(store: Arc<dyn Store>) {
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
    assert_eq!(page.events, vec![event]);
}

async fn a_replayed_token_is_refused_and_nothing_of_the_second_attempt_is_written(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme"]).await;
    let key = replay_key("jti-1", at(10));
    store
        .record_exchange(
            &key,
            &session("ses-1", "acme"),
            &audit(Some("acme"), "first"),
        )
        .await
        .unwrap();

    let err = store
        .record_exchange(
            &key,
            &session("ses-2", "acme"),
            &audit(Some("acme"), "second"),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::Replay), "{err:?}");
    assert_eq!(store.get_session("ses-2").await.unwrap(), None);
    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["first"]);

    // The same jti from another issuer is another token.
    let other_issuer = JtiRecord {
        issuer: "https://issuer.example".to_owned(),
        ..key
    };
    store
        .record_exchange(
            &other_issuer,
            &session("ses-3", "acme"),
            &audit(Some("acme"), "third"),
        )
        .await
        .unwrap();
    assert!(store.get_session("ses-3").await.unwrap().is_some());
}

async fn an_exchange_into_a_missing_workspace_writes_nothing(store: Arc<dyn Store>) {
    let key = replay_key("jti-1", at(10));
    let err = store
        .record_exchange(&key, &session("ses-1", "ghost"), &audit(Some("ghost"), "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.get_session("ses-1").await.unwrap(), None);
    assert!(store
        .list_audit("ghost", 10, None)
        .await
        .unwrap()
        .events
        .is_empty());

    // The replay key was rolled back with the rest: the token can still be exchanged.
    with_workspaces(&*store, &["acme"]).await;
    store
        .record_exchange(&key, &session("ses-1", "acme"), &audit(Some("acme"), "y"))
        .await
        .unwrap();
}

async fn revoking_a_session_is_idempotent(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    with_session(&*store, "acme", "ses-1").await;

    assert!(store.revoke_session("ses-1", at(5)).await.unwrap());
    assert!(!store.revoke_session("ses-1", at(6)).await.unwrap());
    assert!(!store.revoke_session("ses-missing", at(6)).await.unwrap());

    let revoked = store.get_session("ses-1").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(5)));
}

async fn an_issuance_writes_every_token_and_its_audit_event(store: Arc<dyn Store>) {
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

    let listed = store
        .list_tokens("acme", &TokenFilter::default())
        .await
        .unwrap();
    assert_eq!(listed, vec![whole_installation, first]);
    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(page.events.first(), Some(&event));
}

async fn an_issuance_with_a_duplicate_token_id_writes_nothing(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let batch = [
        token("tok-1", "acme", None),
        token("tok-2", "acme", None),
        token("tok-1", "acme", None),
    ];

    let err = store
        .record_issuance(&batch, &audit(Some("acme"), "mint"))
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store
            .list_tokens("acme", &TokenFilter::default())
            .await
            .unwrap(),
        vec![]
    );
    assert!(store
        .list_audit("acme", 10, None)
        .await
        .unwrap()
        .events
        .is_empty());

    // A token naming a session that does not exist is refused the same way.
    let orphan = token("tok-3", "acme", Some("ses-missing"));
    let err = store
        .record_issuance(&[orphan], &audit(Some("acme"), "mint"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(store
        .list_audit("acme", 10, None)
        .await
        .unwrap()
        .events
        .is_empty());
}

async fn list_tokens_applies_every_filter_newest_first(store: Arc<dyn Store>) {
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
    store
        .record_issuance(
            &[active_s1, revoked_s1, expired_s2, active_s2],
            &audit(Some("acme"), "mint"),
        )
        .await
        .unwrap();
    store
        .record_issuance(&[elsewhere], &audit(Some("other"), "mint"))
        .await
        .unwrap();

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
    let all = store
        .list_tokens("acme", &TokenFilter::default())
        .await
        .unwrap();
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

async fn marking_tokens_revoked_counts_only_newly_revoked_ones(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let already = IssuedToken {
        revoked_at: Some(at(1)),
        ..token("tok-b", "acme", None)
    };
    store
        .record_issuance(
            &[token("tok-a", "acme", None), already],
            &audit(Some("acme"), "m"),
        )
        .await
        .unwrap();
    let both = vec!["tok-a".to_owned(), "tok-b".to_owned(), "tok-zz".to_owned()];

    assert_eq!(store.mark_tokens_revoked(&both, at(5)).await.unwrap(), 1);
    assert_eq!(store.mark_tokens_revoked(&both, at(6)).await.unwrap(), 0);
    assert_eq!(store.mark_tokens_revoked(&[], at(6)).await.unwrap(), 0);

    let listed = store
        .list_tokens("acme", &TokenFilter::default())
        .await
        .unwrap();
    let revoked: Vec<_> = listed
        .iter()
        .map(|t| (t.id.as_str(), t.revoked_at))
        .collect();
    assert_eq!(
        revoked,
        vec![("tok-b", Some(at(1))), ("tok-a", Some(at(5)))]
    );
}

async fn purge_clears_expired_sealed_tokens_and_old_replay_keys(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let expired = IssuedToken {
        expires_at: at(1),
        ..token("tok-old", "acme", None)
    };
    store
        .record_issuance(
            &[expired, token("tok-live", "acme", None)],
            &audit(Some("acme"), "m"),
        )
        .await
        .unwrap();
    let old_key = replay_key("jti-old", at(1));
    let live_key = replay_key("jti-live", at(90));
    store
        .record_exchange(
            &old_key,
            &session("ses-1", "acme"),
            &audit(Some("acme"), "x"),
        )
        .await
        .unwrap();
    store
        .record_exchange(
            &live_key,
            &session("ses-2", "acme"),
            &audit(Some("acme"), "y"),
        )
        .await
        .unwrap();

    let stats = store.purge_expired(at(2)).await.unwrap();

    assert_eq!(
        stats,
        PurgeStats {
            sealed_tokens_cleared: 1,
            replay_keys_deleted: 1
        }
    );
    let listed = store
        .list_tokens("acme", &TokenFilter::default())
        .await
        .unwrap();
    let sealed: Vec<_> = listed
        .iter()
        .map(|t| (t.id.as_str(), t.sealed_token.as_deref()))
        .collect();
    assert_eq!(
        sealed,
        vec![("tok-old", None), ("tok-live", Some("sealed-tok-live"))]
    );
    assert_eq!(
        store.purge_expired(at(2)).await.unwrap(),
        PurgeStats::default()
    );
    // The purged key no longer blocks; the live one still does.
    store
        .record_exchange(
            &old_key,
            &session("ses-3", "acme"),
            &audit(Some("acme"), "z"),
        )
        .await
        .unwrap();
    let err = store
        .record_exchange(
            &live_key,
            &session("ses-4", "acme"),
            &audit(Some("acme"), "w"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Replay), "{err:?}");
}

async fn audit_pages_run_newest_first_with_cursors_within_one_workspace(store: Arc<dyn Store>) {
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
    let all: Vec<_> = [first.events, second.events, third.events].concat();
    assert_eq!(all, written);
}

async fn a_full_last_audit_page_has_no_cursor(store: Arc<dyn Store>) {
    for i in 1..=6 {
        store
            .append_audit(&audit(Some("acme"), &format!("a{i}")))
            .await
            .unwrap();
    }
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

async fn the_audit_limit_is_clamped_to_at_least_one(store: Arc<dyn Store>) {
    for i in 1..=2 {
        store
            .append_audit(&audit(Some("acme"), &format!("a{i}")))
            .await
            .unwrap();
    }
    let page = store.list_audit("acme", 0, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["a2"]);
    assert!(page.next_cursor.is_some());
    let page = store.list_audit("acme", u32::MAX, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["a2", "a1"]);
}

async fn an_audit_event_id_is_stored_once(store: Arc<dyn Store>) {
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

fn signing_key(kid: &str) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        private_key_sealed: format!("sealed-{kid}"),
        public_jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": "AA"}),
        created_at: T0,
    }
}

async fn the_first_signing_key_stored_wins(store: Arc<dyn Store>) {
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

async fn deleting_a_workspace_removes_its_rows_but_keeps_its_audit_trail(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme", "other"]).await;
    store
        .link_installation(&link("acme", "acme", 42))
        .await
        .unwrap();
    store
        .link_installation(&link("other", "other", 7))
        .await
        .unwrap();
    store
        .put_policy(&policy("acme", "default", "v1"))
        .await
        .unwrap();
    store
        .put_policy(&policy("other", "default", "o1"))
        .await
        .unwrap();
    with_session(&*store, "acme", "ses-1").await;
    with_session(&*store, "other", "ses-9").await;
    store
        .record_issuance(
            &[token("tok-1", "acme", Some("ses-1"))],
            &audit(Some("acme"), "mint"),
        )
        .await
        .unwrap();
    store
        .record_issuance(
            &[token("tok-9", "other", Some("ses-9"))],
            &audit(Some("other"), "m"),
        )
        .await
        .unwrap();

    assert!(store.delete_workspace("acme").await.unwrap());
    assert!(!store.delete_workspace("acme").await.unwrap());

    assert_eq!(store.get_workspace("acme").await.unwrap(), None);
    assert_eq!(store.list_installations("acme").await.unwrap(), vec![]);
    assert_eq!(store.get_policy("acme", "default").await.unwrap(), None);
    assert_eq!(store.get_session("ses-1").await.unwrap(), None);
    assert_eq!(
        store
            .list_tokens("acme", &TokenFilter::default())
            .await
            .unwrap(),
        vec![]
    );
    let kept = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(actions(&kept.events), vec!["mint", "exchange"]);

    // The rows are gone, not hidden: the installation is free and versions restart.
    store
        .link_installation(&link("other", "acme", 42))
        .await
        .unwrap();
    store.create_workspace(&workspace("acme")).await.unwrap();
    assert_eq!(
        store
            .put_policy(&policy("acme", "default", "v1"))
            .await
            .unwrap()
            .version,
        1
    );

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
    assert_eq!(
        ids(&store
            .list_tokens("other", &TokenFilter::default())
            .await
            .unwrap()),
        vec!["tok-9"]
    );
}

// ---- PostgreSQL only: two broker processes on one database ----

/// Rounds of the concurrent replay race: one round could pass by luck of scheduling.
const REPLAY_RACE_ROUNDS: usize = 20;

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
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 {
                    Arc::clone(&first)
                } else {
                    Arc::clone(&second)
                };
                let candidate = signing_key(&format!("kid-{i}"));
                tokio::spawn(async move { store.load_or_store_signing_key(&candidate).await })
            })
            .collect();
        let mut kids = Vec::new();
        for task in tasks {
            kids.push(task.await.unwrap().unwrap().kid);
        }
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
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = if i % 2 == 0 {
                    Arc::clone(&first)
                } else {
                    Arc::clone(&second)
                };
                let new = policy("acme", "default", &format!("v{i}"));
                tokio::spawn(async move { store.put_policy(&new).await })
            })
            .collect();
        let mut versions = Vec::new();
        for task in tasks {
            versions.push(task.await.unwrap().unwrap().version);
        }
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
