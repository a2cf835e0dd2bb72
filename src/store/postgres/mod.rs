//! PostgreSQL backend, for stateless replicas: migrations in `migrations/postgres`.
//!
//! Several broker processes may share one database, so no check-then-write trusts its check:
//! each one is a single statement, locks the row it depends on, or retries when a unique index
//! shows that another process won the race.
//!
//! Statements called as `Postgres::…` are the ones both backends share (`sql/`); what is
//! PostgreSQL's own is here: the row lock of `put_policy`, the retried link, and id lists
//! passed as `text[]`.

pub(super) mod bulk;

use super::batch::{OwnedMintRecord, Writer};
use super::codec::{is_unique_violation, missing_or_backend, to_ms};
use super::rows::{InstallationLinkRow, IssuedTokenRow};
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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Postgres;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a request waits for a pooled connection. When the database is down or the pool is
/// exhausted, failing fast (503 from `/readyz`, 500 on a request) beats piling up requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `link_installation` is retried after losing a race to another process (a unique
/// violation on insert). The retry re-reads the winner's row and then answers precisely; more
/// than a couple of losses in a row means something else is wrong.
const RACE_RETRIES: usize = 3;

/// PostgreSQL store.
pub(crate) struct PgStore {
    pub(super) pool: PgPool,
    /// The group-committing writer task: the writes of exchanges and mints, which arrive many
    /// at a time, share a transaction and its WAL flush (see `batch.rs`); a batch's exchanges,
    /// mint intents and mint records are written together, a few statements in all (`bulk.rs`).
    writes: Writer<Postgres>,
}

/// Connect, configure and migrate; the store as a trait object.
pub(crate) async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    // The URL may hold a password: the error must not echo it.
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::UnsupportedUrl("invalid postgres url".to_owned()))?;
    connect_with(options, max_connections).await
}

/// Like [`connect`], from already parsed options (tests set `search_path` to a fresh schema).
pub(crate) async fn connect_with(
    options: PgConnectOptions,
    max_connections: u32,
) -> StoreResult<Arc<dyn Store>> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    // sqlx holds a database-wide advisory lock while migrating, so replicas starting together
    // apply each migration once.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    let store = PgStore::new(pool);
    super::report_linked_at_start(store.link_unlinked_audit_rows().await?);
    Ok(Arc::new(store))
}

/// See [`crate::store::open_existing`]: one connection whose transactions are read-only.
pub(crate) async fn open_existing(url: &str) -> StoreResult<Arc<dyn Store>> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::UnsupportedUrl("invalid postgres url".to_owned()))?
        .options([("default_transaction_read_only", "on")]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(Arc::new(PgStore::new(pool)))
}

/// First key of the advisory lock that serialises appends to one audit chain; the second is
/// `hashtext(chain)`. A class of its own keeps these locks apart from any other advisory lock
/// on the database (two-key locks never collide with the one-key lock sqlx migrates under). Two
/// chains whose keys hash alike only wait for each other, which is harmless.
const AUDIT_CHAIN_LOCK_CLASS: i32 = 0x5354_5301;

impl CatalogSql for Postgres {}
impl AuditSql for Postgres {}

impl SharedSql for Postgres {
    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn lock_audit_chain(conn: &mut PgConnection, chain: &str) -> StoreResult<()> {
        // Held until the transaction ends: the next append to the chain, from this replica or
        // another, reads the head only after this one committed (or rolled back).
        sqlx::query(r#"select pg_advisory_xact_lock($1, hashtext($2))"#)
            .bind(AUDIT_CHAIN_LOCK_CLASS)
            .bind(chain)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

impl PgStore {
    fn new(pool: PgPool) -> Self {
        Self {
            writes: Writer::spawn(pool.clone(), "begin", Some(bulk::WRITE)),
            pool,
        }
    }

    /// Link the rows stored before the audit chain existed (see `audit::chain`): one
    /// transaction per chain, under the chain's lock, so replicas starting together and
    /// serving already link each row once.
    async fn link_unlinked_audit_rows(&self) -> StoreResult<u64> {
        let chains = Postgres::select_unlinked_chains()
            .fetch_all(&self.pool)
            .await?;
        let mut linked = 0;
        for chain in chains {
            let mut tx = self.pool.begin().await?;
            linked += Postgres::link_unlinked_rows(&mut tx, &chain.chain).await?;
            tx.commit().await?;
        }
        Ok(linked)
    }

    /// One attempt at `link_installation`; `None` when a concurrent link won the race between
    /// our checks and our write (the caller retries and then sees the winner's row).
    async fn link_once(&self, link: &InstallationLink) -> StoreResult<Option<InstallationLinkRow>> {
        let mut tx = self.pool.begin().await?;
        let relink = Postgres::checked_existing_link(&mut tx, link)
            .await?
            .is_some();
        // A re-link finds no row when the link was removed since our read: retry.
        let written = if relink {
            Postgres::update_link(link)
        } else {
            Postgres::insert_link(link)
        };
        let row = match written.fetch_optional(&mut *tx).await {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(None),
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(missing_or_backend(e, "workspace")),
        };
        tx.commit().await?;
        Ok(Some(row))
    }
}

store_impl! {
    PgStore, Postgres, "postgres", read: pool, write: pool;

    async fn link_installation(&self, link: &InstallationLink) -> StoreResult<InstallationLink> {
        for _ in 0..RACE_RETRIES {
            if let Some(row) = self.link_once(link).await? {
                return row.into_model();
            }
        }
        Err(installation_already_linked())
    }

    async fn put_policy(&self, new: &NewPolicy) -> StoreResult<StoredPolicy> {
        let mut tx = self.pool.begin().await?;
        // Locking the workspace row serialises puts to one workspace across processes, so two
        // puts never compute the same next version. `no key update` leaves the row's key share
        // locks (foreign-key checks of concurrent session and token inserts) unblocked.
        let workspace = sqlx::query(r#"select id from workspaces where id = $1 for no key update"#)
            .bind(&new.workspace_id)
            .fetch_optional(&mut *tx)
            .await?;
        if workspace.is_none() {
            return Err(StoreError::NotFound("workspace".to_owned()));
        }
        let row = Postgres::insert_policy_version(new)
            .fetch_one(&mut *tx)
            .await
            .map_err(on_insert_policy)?;
        tx.commit().await?;
        row.into_model()
    }

    async fn list_tokens(
        &self,
        workspace_id: &str,
        filter: &TokenFilter,
    ) -> StoreResult<Vec<IssuedToken>> {
        // The state rule is `IssuedToken::state_at`'s. The ids travel as one text[]
        // (`= any`), and `limit null` is `limit all` in PostgreSQL.
        let rows = sqlx::query_as::<_, IssuedTokenRow>(
            r#"select id, workspace_id, session_id, installation_id, owner, host, repositories,
                      permissions, fingerprint, sealed_token, policy_name, policy_version,
                      created_at, expires_at, revoked_at
               from issued_tokens
               where workspace_id = $1
                 and ($2::text is null
                      or ($2 = 'revoked' and revoked_at is not null)
                      or ($2 = 'active' and revoked_at is null and expires_at > $3::bigint)
                      or ($2 = 'expired' and revoked_at is null and expires_at <= $3::bigint))
                 and ($4::text is null or session_id = $4)
                 and ($5::text[] is null or id = any($5))
               order by created_at desc, id desc
               limit $6"#,
        )
        .bind(workspace_id)
        .bind(filter.state.map(|(state, _)| state.as_str()))
        .bind(filter.state.map(|(_, at)| to_ms(at)))
        .bind(&filter.session_id)
        .bind(filter.ids.as_deref())
        .bind(filter.limit.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        all(rows, IssuedTokenRow::into_model)
    }

    async fn mark_tokens_revoked(&self, ids: &[String], at: OffsetDateTime) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        // One text[] parameter: no placeholder list, no limit on the number of ids.
        let done = sqlx::query(
            r#"update issued_tokens set revoked_at = $1
               where revoked_at is null and id = any($2)"#,
        )
        .bind(to_ms(at))
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        retention: Retention,
    ) -> StoreResult<PurgeStats> {
        let mut tx = self.pool.begin().await?;
        let stats = Postgres::write_purge(&mut tx, now, retention).await?;
        tx.commit().await?;
        Ok(stats)
    }

    async fn record_mint(&self, record: &MintRecord<'_>) -> StoreResult<Issuance> {
        self.writes
            .write_together(OwnedMintRecord::from(record), |conn, record| {
                Box::pin(async move {
                    let record = record.borrowed();
                    // Row locks that a concurrent disable, deletion or logout must wait for (or
                    // that wait for it, and then read its result): the check in `write_mint`
                    // cannot be overtaken before commit. A refusal writes nothing.
                    sqlx::query(r#"select id from workspaces where id = $1 for share"#)
                        .bind(record.workspace_id)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(r#"select id from sessions where id = $1 for share"#)
                        .bind(record.session_id)
                        .execute(&mut *conn)
                        .await?;
                    Postgres::write_mint(conn, &record).await
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_malformed_url_is_refused_without_echoing_its_password() {
        let err = crate::store::connect("postgres://broker:hunter2@db:notaport/sts", 1)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }
}
