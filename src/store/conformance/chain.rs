//! The audit log's hash chains: how appends link, under concurrency and failure, what
//! `audit verify` finds after someone edited the database, and rows older than the chain.

use super::fixtures::*;
use super::harness::{self, Raw};
use crate::audit::chain::{chain_hash, ChainRow, Mismatch, GENESIS_HASH};
use crate::audit::verify::verify;
use crate::store::sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

/// Every row of `chain` in chain order, as `audit verify` reads them.
async fn chain_rows(store: &dyn Store, chain: &str) -> Vec<ChainRow> {
    store
        .audit_chain_page(chain, None, 1000)
        .await
        .expect("read the chain")
}

/// The page of `workspace` holds one chain: sequences count down to 1, each `prevHash` is the
/// next older event's `hash`, the oldest links to the genesis hash.
fn assert_linked(page: &AuditPage, len: usize) {
    assert_eq!(page.events.len(), len);
    let links: Vec<_> = page
        .events
        .iter()
        .map(|e| e.link.clone().expect("every event is linked"))
        .collect();
    let sequences: Vec<i64> = links.iter().map(|l| l.sequence).collect();
    let want: Vec<i64> = (1..=len as i64).rev().collect();
    assert_eq!(sequences, want);
    for pair in links.windows(2) {
        assert_eq!(pair[0].prev_hash, pair[1].hash);
    }
    if let Some(oldest) = links.last() {
        assert_eq!(oldest.prev_hash, GENESIS_HASH);
    }
    for link in &links {
        assert_eq!(link.hash.len(), 64);
        assert!(link
            .hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}

pub(super) async fn every_append_path_links_events_into_one_chain_per_workspace(
    store: Arc<dyn Store>,
) {
    with_workspaces(&*store, &["acme", "other"]).await;
    store
        .append_audit(&audit(Some("acme"), "a1"))
        .await
        .unwrap();
    with_session(&*store, "acme", "ses-1").await;
    store
        .append_audit(&audit(Some("other"), "o1"))
        .await
        .unwrap();
    store.append_audit(&audit(None, "n1")).await.unwrap();
    issue(&*store, "acme", &[token("tok-1", "acme", Some("ses-1"))])
        .await
        .unwrap();
    store
        .append_audit(&audit(Some("acme"), "a2"))
        .await
        .unwrap();
    store.append_audit(&audit(None, "n2")).await.unwrap();

    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["a2", "mint", "exchange", "a1"]);
    assert_linked(&page, 4);
    assert_linked(&store.list_audit("other", 10, None).await.unwrap(), 1);
    // Events of no workspace have a chain of their own, under the empty key.
    let none = chain_rows(&*store, "").await;
    assert_eq!(none.len(), 2);
    assert_eq!(none[1].prev_hash, none[0].hash);

    assert_eq!(
        store.audit_chains().await.unwrap(),
        vec!["".to_owned(), "acme".to_owned(), "other".to_owned()]
    );
    let report = verify(&*store, None).await.unwrap();
    assert_eq!((report.chains, report.events), (3, 7), "{report}");
    assert!(report.intact(), "{report}");
    let report = verify(&*store, Some("acme")).await.unwrap();
    assert_eq!((report.chains, report.events), (1, 4), "{report}");
}

/// Appends racing on one workspace (more than the pool has connections).
const CONCURRENT_APPENDS: usize = 24;

pub(super) async fn concurrent_appends_to_one_workspace_keep_one_chain(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let tasks: Vec<_> = (0..CONCURRENT_APPENDS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if i % 4 == 0 {
                    exchange(
                        &*store,
                        &replay_key(&format!("jti-{i}"), at(10)),
                        &format!("ses-{i}"),
                        "acme",
                        &format!("e{i}"),
                    )
                    .await
                } else {
                    store
                        .append_audit(&audit(Some("acme"), &format!("a{i}")))
                        .await
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let page = store.list_audit("acme", 100, None).await.unwrap();
    assert_linked(&page, CONCURRENT_APPENDS);
    let report = verify(&*store, None).await.unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(report.events, CONCURRENT_APPENDS as u64);
}

pub(super) async fn a_refused_write_leaves_no_hole_in_the_chain(store: Arc<dyn Store>) {
    with_workspaces(&*store, &["acme"]).await;
    let once = audit(Some("acme"), "once");
    store.append_audit(&once).await.unwrap();
    // A duplicate event id, a replayed exchange, a token batch with a duplicate id: each
    // rolls back its audit row with the rest.
    assert!(store.append_audit(&once).await.is_err());
    let key = replay_key("jti-1", at(10));
    exchange(&*store, &key, "ses-1", "acme", "first")
        .await
        .unwrap();
    exchange(&*store, &key, "ses-2", "acme", "replay")
        .await
        .unwrap_err();
    issue(
        &*store,
        "acme",
        &[token("tok-1", "acme", None), token("tok-1", "acme", None)],
    )
    .await
    .unwrap_err();
    store
        .append_audit(&audit(Some("acme"), "last"))
        .await
        .unwrap();

    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_eq!(actions(&page.events), vec!["last", "first", "once"]);
    assert_linked(&page, 3);
    assert!(verify(&*store, None).await.unwrap().intact());
}

/// Four events in `workspace`, its rows in chain order.
async fn four_events(store: &dyn Store, workspace: &str) -> Vec<ChainRow> {
    for i in 1..=4 {
        store
            .append_audit(&audit(Some(workspace), &format!("{workspace}-{i}")))
            .await
            .unwrap();
    }
    chain_rows(store, workspace).await
}

fn id(row: &ChainRow) -> &str {
    &row.columns.id
}

pub(super) async fn verify_names_the_first_event_whose_content_or_link_does_not_match(
    store: Arc<dyn Store>,
    raw: Raw,
) {
    // One workspace per way of tampering, each with its own chain of four events, and one
    // left alone. (workspace, the event verify must name, what it must say.)
    let mut want: Vec<(&str, String, &str)> = Vec::new();
    let intact = four_events(&*store, "intact").await;

    // One statement on one event each: (workspace, statement, the event it changes, the event
    // verify must name, what it must say). A deleted event is named by the one after it.
    let one_statement = [
        (
            "body",
            "update audit_events set body = replace(body, 'body-2', 'body-9') where id = $1",
            1,
            1,
            "content",
        ),
        (
            "outcome",
            "update audit_events set outcome = 'denied' where id = $1",
            2,
            2,
            "content",
        ),
        (
            "deleted",
            "delete from audit_events where id = $1",
            1,
            2,
            "link",
        ),
        // The last event taken out of its chain.
        (
            "unchained",
            "update audit_events set chain_seq = null where id = $1",
            3,
            3,
            "unchained",
        ),
    ];
    for (workspace, sql, changed, named, what) in one_statement {
        let rows = four_events(&*store, workspace).await;
        raw.execute(sql, &[id(&rows[changed])]).await;
        want.push((workspace, id(&rows[named]).to_owned(), what));
    }

    // Events 2 and 3 trade places (through a free place: the index keeps places unique).
    let rows = four_events(&*store, "swapped").await;
    for (place, row) in [(100, &rows[1]), (2, &rows[2]), (3, &rows[1])] {
        raw.execute(
            &format!("update audit_events set chain_seq = {place} where id = $1"),
            &[id(row)],
        )
        .await;
    }
    want.push(("swapped", id(&rows[2]).to_owned(), "link"));

    // Edited, and re-hashed by someone who knows the scheme: the next link breaks.
    let rows = four_events(&*store, "rehashed").await;
    let mut edited = rows[1].clone();
    edited.columns.body = edited.columns.body.replace("rehashed-2", "rehashed-9");
    let prev = edited.prev_hash.clone().unwrap_or_default();
    let hash = chain_hash(&edited.columns, 2, &prev);
    raw.execute(
        "update audit_events set body = $1, hash = $2 where id = $3",
        &[&edited.columns.body, &hash, id(&rows[1])],
    )
    .await;
    want.push(("rehashed", id(&rows[2]).to_owned(), "link"));

    let report = verify(&*store, None).await.unwrap();

    assert!(!report.intact());
    let got: Vec<(&str, String, &str)> = report
        .breaks
        .iter()
        .map(|b| {
            let kind = match b.mismatch {
                Mismatch::Link(_) => "link",
                Mismatch::Content(_) => "content",
                Mismatch::Unchained => "unchained",
            };
            (b.chain.as_str(), b.event_id.clone(), kind)
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "{report}");
    assert_eq!(report.chains, 7);
    let report = verify(&*store, Some("intact")).await.unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(report.events, intact.len() as u64);
}

/// The columns [`crate::audit::chain::canonical_bytes`] covers, and `hash` itself.
const CHAINED_COLUMNS: &[&str] = &[
    "body",
    "chain_seq",
    "hash",
    "id",
    "kind",
    "outcome",
    "prev_hash",
    "seq",
    "time",
    "workspace_id",
];

pub(super) async fn every_stored_column_of_an_audit_event_is_chained(_: Arc<dyn Store>, raw: Raw) {
    // A column added to audit_events later must join the canonical encoding (a new version of
    // it), or verify would vouch for a value no hash covers.
    assert_eq!(raw.columns("audit_events").await, CHAINED_COLUMNS);
}

/// Rows a broker older than the chain stored: acme ×3, other, and one of no workspace,
/// inserted with migration 0001 only. Returns their ids in insertion order.
async fn legacy_rows(raw: &Raw) -> Vec<(Option<&'static str>, String)> {
    let mut rows = Vec::new();
    for (i, workspace) in [
        Some("acme"),
        Some("other"),
        Some("acme"),
        None,
        Some("acme"),
    ]
    .into_iter()
    .enumerate()
    {
        let event = audit(workspace, &format!("legacy-{i}"));
        let body = serde_json::to_string(&event).unwrap();
        let time = event.time.unix_timestamp() * 1000;
        let workspace_sql = match workspace {
            Some(ws) => format!("'{ws}'"),
            None => "null".to_owned(),
        };
        raw.execute(
            &format!(
                "insert into audit_events (id, time, workspace_id, kind, outcome, body)
                 values ($1, {time}, {workspace_sql}, 'admin', 'success', $2)"
            ),
            &[&event.id, &body],
        )
        .await;
        rows.push((workspace, event.id));
    }
    rows
}

/// What a store opened on the legacy rows must show: each chain linked in `seq` order, and new
/// events appended after them.
async fn legacy_rows_are_linked_in_order(
    store: &dyn Store,
    legacy: &[(Option<&'static str>, String)],
) {
    let report = verify(store, None).await.unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!((report.chains, report.events), (3, 5), "{report}");
    let acme: Vec<&str> = legacy
        .iter()
        .filter(|(ws, _)| *ws == Some("acme"))
        .map(|(_, id)| id.as_str())
        .collect();
    let linked: Vec<String> = chain_rows(store, "acme")
        .await
        .into_iter()
        .map(|r| r.columns.id)
        .collect();
    assert_eq!(linked, acme);
    store
        .append_audit(&audit(Some("acme"), "new"))
        .await
        .unwrap();
    let page = store.list_audit("acme", 10, None).await.unwrap();
    assert_linked(&page, 4);
    assert!(verify(store, None).await.unwrap().intact());
}

/// A directory holding only migration `0001_init.sql` of `backend`: the schema as a broker
/// without the chain left it.
fn first_migration_only(backend: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let from = format!(
        "{}/migrations/{backend}/0001_init.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(from, dir.path().join("0001_init.sql")).expect("copy migration 0001");
    dir
}

#[tokio::test]
async fn sqlite_rows_stored_before_the_chain_are_linked_at_start_in_seq_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("store.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options.clone()).await.unwrap();
    let migrations = first_migration_only("sqlite");
    sqlx::migrate::Migrator::new(migrations.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let raw = Raw::Sqlite(pool);
    let legacy = legacy_rows(&raw).await;

    let store = sqlite::connect_with(options, 2).await.unwrap();

    legacy_rows_are_linked_in_order(&*store, &legacy).await;
}

#[tokio::test]
async fn postgres_rows_stored_before_the_chain_are_linked_at_start_in_seq_order() {
    let schema = harness::Schema::create().await;
    let raw = schema.raw().await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let Raw::Postgres(pool) = &raw else {
            unreachable!("a postgres schema")
        };
        let migrations = first_migration_only("postgres");
        sqlx::migrate::Migrator::new(migrations.path())
            .await
            .unwrap()
            .run(pool)
            .await
            .unwrap();
        let legacy = legacy_rows(&raw).await;
        // Two replicas starting together link each row once.
        let (first, second) = tokio::join!(schema.store(), schema.store());
        drop(second);
        legacy_rows_are_linked_in_order(&*first, &legacy).await;
    }))
    .await;
    schema.finish(outcome).await;
}

/// `open_existing` reads what the broker wrote, and refuses to write.
async fn verify_reads_without_writing(url: &str, writer: &dyn Store) {
    writer
        .append_audit(&audit(Some("acme"), "a1"))
        .await
        .unwrap();
    let report = crate::audit::verify::verify_database(url, None)
        .await
        .unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!((report.chains, report.events), (1, 1));
    let reader = crate::store::open_existing(url).await.unwrap();
    let refused = reader.append_audit(&audit(Some("acme"), "a2")).await;
    assert!(
        matches!(refused, Err(StoreError::Backend(_))),
        "{refused:?}"
    );
    assert_eq!(verify(writer, None).await.unwrap().events, 1);
}

#[tokio::test]
async fn sqlite_verify_opens_the_file_read_only_and_never_creates_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    assert!(crate::audit::verify::verify_database(&missing, None)
        .await
        .is_err());
    assert!(!dir.path().join("missing.db").exists());
    let writer = crate::store::connect(&url, 2).await.unwrap();
    verify_reads_without_writing(&url, &*writer).await;
}

#[tokio::test]
async fn postgres_verify_opens_read_only_transactions() {
    let schema = harness::Schema::create().await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let writer = schema.store().await;
        verify_reads_without_writing(&schema.url(), &*writer).await;
    }))
    .await;
    schema.finish(outcome).await;
}
