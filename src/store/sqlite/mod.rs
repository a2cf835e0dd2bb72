//! SQLite backend (the default): one file, WAL, migrations in `migrations/sqlite`.
//!
//! Statements called as `Sqlite::…` are the ones both backends share (`sql/`); what is
//! SQLite's own is here: a read pool beside a single-connection writer, `BEGIN IMMEDIATE`, id
//! lists passed as JSON for `json_each`, and the group-committed writes on a thread of their own
//! (`thread.rs`, running `writes.rs`).

mod checkpoint;
mod thread;
mod writes;

use super::batch::{OwnedMintRecord, Writer};
use super::codec::{to_json, to_ms, write_err};
use super::rows::IssuedTokenRow;
use super::shared_impl::store_impl;
use super::sql::{
    installation_already_linked, no_active_signing_key, on_insert_policy, on_insert_workspace,
    AuditSql, CatalogSql, SharedSql,
};
use super::{
    AuditPage, InstallationLink, Issuance, IssuedToken, JtiRecord, MintIntent, MintRecord,
    NewPolicy, PurgeStats, Retention, SessionRecord, SigningKeyRecord, Store, StoreError,
    StoreResult, StoredPolicy, TokenFilter, Workspace,
};
use crate::audit::chain::ChainRow;
use crate::audit::AuditEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use sqlx::{Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use thread::ThreadWriter;
use time::OffsetDateTime;

/// How long a connection waits for another writer's lock before failing with `SQLITE_BUSY`.
/// SQLite has one writer at a time; short write transactions queue behind each other well
/// within this, while a stuck writer still surfaces as an error instead of a hung request.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `BEGIN IMMEDIATE` takes the write lock up front. A deferred transaction that reads first and
/// writes later fails with `SQLITE_BUSY_SNAPSHOT` (which the busy timeout does not retry) when
/// another connection committed in between; check-then-write transactions must not read stale.
const BEGIN_WRITE: &str = "begin immediate";

/// SQLite store.
pub(crate) struct SqliteStore {
    /// Reads: WAL lets any number run beside the writer.
    pub(super) pool: SqlitePool,
    /// Writes: one connection, so this process's writers queue in the pool (first come, first
    /// served) instead of in SQLite's busy handler, whose sleeps grow to 100 ms per retry and
    /// gave p99 write latencies of ~250 ms under 16 concurrent clients. Other processes on the
    /// same file still meet [`BUSY_TIMEOUT`].
    pub(super) writer: SqlitePool,
    /// The group-committing writer: the writes of exchanges and mints, which arrive many at a
    /// time, share a transaction and its fsync.
    writes: Writes,
}

/// Where the group-committed writes run.
enum Writes {
    /// A database file: on the writer thread's own connection (`thread.rs`).
    Thread(ThreadWriter),
    /// An in-memory database, which only the pool's connections share, or a read-only one:
    /// sqlx's writer task on `writer` (`batch.rs`).
    Task(Writer<Sqlite>),
}

/// Both writers' methods, called as `self.writes.…` by the shared `Store` implementation.
macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl Writes {
            $(
                pub(super) async fn $name(&self, $($arg: $ty),*) -> StoreResult<$out> {
                    match self {
                        Writes::Thread(thread) => thread.$name($($arg),*).await,
                        Writes::Task(task) => task.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    exchange(jti: &JtiRecord, session: &SessionRecord, audit: &AuditEvent) -> ();
    issuance(tokens: &[IssuedToken], audit: &AuditEvent) -> ();
    audit(event: &AuditEvent) -> ();
    intent_resolution(intent_id: &str, audit: &AuditEvent) -> bool;
    mint_intent(intent: &MintIntent) -> ();
}

/// Connect, configure and migrate; the store as a trait object.
pub(crate) async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|_| StoreError::UnsupportedUrl("invalid sqlite url".to_owned()))?;
    connect_with(options, max_connections).await
}

/// Like [`connect`], from already parsed options (tests point these at a temp file).
pub(crate) async fn connect_with(
    options: SqliteConnectOptions,
    max_connections: u32,
) -> StoreResult<Arc<dyn Store>> {
    let in_memory = options
        .get_filename()
        .to_string_lossy()
        .contains("in-memory")
        || options.get_filename().as_os_str() == ":memory:";
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    // A file's WAL is checkpointed by the writer's checkpoint thread, not by whichever commit
    // grows it past SQLite's threshold, and cut back when a write starts it over (see
    // `checkpoint.rs`).
    let options = if in_memory {
        options
    } else {
        options
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", checkpoint::WAL_SIZE_LIMIT.to_string())
    };
    let mut pool = SqlitePoolOptions::new().max_connections(max_connections.max(1));
    if in_memory {
        // A shared in-memory database lives as long as one connection to it: keep one open.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = pool.connect_with(options.clone()).await?;
    let writer = if in_memory {
        pool.clone()
    } else {
        SqlitePoolOptions::new()
            .max_connections(1)
            // The writer thread takes this connection as its turn once per batch: a ping on
            // each take would cost a round trip to sqlx's worker thread per batch.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?
    };
    sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
    let writes = if in_memory {
        Writes::Task(Writer::spawn(writer.clone(), BEGIN_WRITE, None))
    } else {
        let path = options.get_filename();
        Writes::Thread(ThreadWriter::spawn(path, writer.clone(), BUSY_TIMEOUT)?)
    };
    let store = SqliteStore {
        pool,
        writer,
        writes,
    };
    super::report_linked_at_start(store.link_unlinked_audit_rows().await?);
    Ok(Arc::new(store))
}

/// See [`crate::store::open_existing`]: one read-only connection, the file must exist.
pub(crate) async fn open_existing(url: &str) -> StoreResult<Arc<dyn Store>> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|_| StoreError::UnsupportedUrl("invalid sqlite url".to_owned()))?
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    Ok(Arc::new(SqliteStore {
        writes: Writes::Task(Writer::spawn(pool.clone(), BEGIN_WRITE, None)),
        writer: pool.clone(),
        pool,
    }))
}

impl CatalogSql for Sqlite {}
impl AuditSql for Sqlite {}

impl SharedSql for Sqlite {
    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn lock_audit_chain(_: &mut SqliteConnection, _: &str) -> StoreResult<()> {
        // Every audit write runs in a `BEGIN IMMEDIATE` transaction ([`BEGIN_WRITE`]), which
        // holds the database's one write lock, against other processes on the file too.
        Ok(())
    }
}

impl SqliteStore {
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with(BEGIN_WRITE).await?)
    }

    /// Link the rows stored before the audit chain existed (see `audit::chain`), in one write.
    async fn link_unlinked_audit_rows(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let chains = Sqlite::select_unlinked_chains().fetch_all(&mut *tx).await?;
        let mut linked = 0;
        for chain in chains {
            linked += Sqlite::link_unlinked_rows(&mut tx, &chain.chain).await?;
        }
        tx.commit().await?;
        Ok(linked)
    }
}

store_impl! {
    SqliteStore, Sqlite, "sqlite", read: pool, write: writer;

    async fn link_installation(&self, link: &InstallationLink) -> StoreResult<InstallationLink> {
        // The write lock, taken up front, keeps the check and the write together: no other
        // writer can link in between.
        let mut tx = self.begin_write().await?;
        let relink = Sqlite::checked_existing_link(&mut tx, link)
            .await?
            .is_some();
        let written = if relink {
            Sqlite::update_link(link)
        } else {
            Sqlite::insert_link(link)
        };
        let row = written
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| write_err(e, installation_already_linked, "workspace"))?;
        tx.commit().await?;
        row.into_model()
    }

    async fn put_policy(&self, new: &NewPolicy) -> StoreResult<StoredPolicy> {
        // One statement computes and claims the next version; SQLite serialises writers.
        let row = Sqlite::insert_policy_version(new)
            .fetch_one(&self.writer)
            .await
            .map_err(on_insert_policy)?;
        row.into_model()
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        filter: &TokenFilter,
    ) -> StoreResult<Vec<IssuedToken>> {
        let ids = filter
            .ids
            .as_ref()
            .map(|ids| to_json(ids, "token ids"))
            .transpose()?;
        // The state rule is `IssuedToken::state_at`'s. The ids travel as one JSON array
        // (`json_each`), and a negative LIMIT means no limit in SQLite.
        let rows = sqlx::query_as::<_, IssuedTokenRow>(
            r#"select id, workspace_id, session_id, installation_id, owner, host, repositories,
                      permissions, fingerprint, sealed_token, policy_name, policy_version,
                      created_at, expires_at, revoked_at
               from issued_tokens
               where workspace_id = $1
                 and ($2 is null
                      or ($2 = 'revoked' and revoked_at is not null)
                      or ($2 = 'active' and revoked_at is null and expires_at > $3)
                      or ($2 = 'expired' and revoked_at is null and expires_at <= $3))
                 and ($4 is null or session_id = $4)
                 and ($5 is null or id in (select value from json_each($5)))
               order by created_at desc, id desc
               limit coalesce($6, -1)"#,
        )
        .bind(workspace_id)
        .bind(filter.state.map(|(state, _)| state.as_str()))
        .bind(filter.state.map(|(_, at)| to_ms(at)))
        .bind(&filter.session_id)
        .bind(ids)
        .bind(filter.limit.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        all(rows, IssuedTokenRow::into_model)
    }

    async fn mark_tokens_revoked(&self, ids: &[String], at: OffsetDateTime) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        // The ids travel as one JSON array parameter, so no placeholder list and no limit on
        // the number of bound variables.
        let done = sqlx::query(
            r#"update issued_tokens set revoked_at = $1
               where revoked_at is null and id in (select value from json_each($2))"#,
        )
        .bind(to_ms(at))
        .bind(to_json(ids, "token ids")?)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        retention: Retention,
    ) -> StoreResult<PurgeStats> {
        let mut tx = self.begin_write().await?;
        let stats = Sqlite::write_purge(&mut tx, now, retention).await?;
        tx.commit().await?;
        Ok(stats)
    }

    async fn record_mint(&self, record: &MintRecord<'_>) -> StoreResult<Issuance> {
        // The write lock, taken up front by the batch, keeps the check and the writes together;
        // a refusal writes nothing.
        match &self.writes {
            Writes::Thread(thread) => thread.mint(record).await,
            Writes::Task(task) => {
                task.write(OwnedMintRecord::from(record), |conn, record| {
                    Box::pin(async move { Sqlite::write_mint(conn, &record.borrowed()).await })
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Workspace;
    use time::macros::datetime;

    fn workspace(id: &str) -> Workspace {
        let t = datetime!(2026-05-01 12:00 UTC);
        Workspace {
            id: id.to_owned(),
            name: id.to_owned(),
            sts_enabled: false,
            created_at: t,
            updated_at: t,
        }
    }

    #[tokio::test]
    async fn a_url_creates_the_file_in_wal_mode_and_reopening_keeps_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let url = format!("sqlite://{}", path.display());

        let store = crate::store::connect(&url, 2).await.unwrap();
        store.create_workspace(&workspace("acme")).await.unwrap();
        drop(store);

        assert!(path.exists());
        let reopened = crate::store::connect(&url, 2).await.unwrap();
        assert_eq!(
            reopened.list_workspaces().await.unwrap(),
            vec![workspace("acme")]
        );
        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let (mode,): (String,) = sqlx::query_as("pragma journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn an_in_memory_database_is_shared_by_every_pooled_connection() {
        let store = crate::store::connect("sqlite::memory:", 4).await.unwrap();
        store.create_workspace(&workspace("acme")).await.unwrap();

        // More concurrent reads than one connection serves: every connection sees the row.
        let reads = (0..8).map(|_| store.get_workspace("acme"));
        for found in futures::future::join_all(reads).await {
            assert_eq!(found.unwrap(), Some(workspace("acme")));
        }
    }

    #[tokio::test]
    async fn a_malformed_url_is_unsupported() {
        let err = crate::store::connect("sqlite://x?mode=bogus", 1)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err:?}");
    }
}
