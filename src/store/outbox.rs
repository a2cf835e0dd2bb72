//! The audit export outbox (`audit_outbox`, migration 0004): the rows the export task
//! (`crate::audit::export`) still has to deliver, written in the audit append's transaction by
//! [`enqueue`] and claimed, acknowledged or rescheduled through [`AuditOutbox`].
//!
//! Order per workspace: only the lowest pending `seq` of a chain (its head) can be claimed, and a
//! claimed head keeps the rest of its chain waiting until it is acknowledged (deleted) or released
//! after a failure. A claim is a lease: on PostgreSQL the candidate heads are locked
//! `FOR UPDATE SKIP LOCKED` and stamped with the claimer and a deadline in one statement, so two
//! replicas never hold the same chain at once; a replica that dies mid-delivery leaves a lease
//! that expires, and another replica sends that event again (delivery is at least once).

use super::codec::{from_ms_opt, to_ms};
use super::rows::AuditRow;
use super::{postgres::PgStore, sqlite::SqliteStore, ChainedEvent, StoreResult};
use async_trait::async_trait;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Postgres, Sqlite, Type};
use time::OffsetDateTime;

/// Longest error text kept in `last_error`: enough for a status line, never a whole body.
const MAX_ERROR_LEN: usize = 200;

/// One audit event waiting for export, as claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The audit row's `seq`.
    pub seq: i64,
    /// Failed deliveries so far.
    pub attempts: u32,
    /// The event and its chain link, as the audit API shows them.
    pub chained: ChainedEvent,
}

/// How far the export is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    /// Events not delivered yet.
    pub pending: u64,
    /// When the oldest of them was written; `None` when nothing is pending.
    pub oldest: Option<OffsetDateTime>,
}

/// A claim on some chains' heads: the claimer's id and the lease deadline.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Unique per claim (a fresh id each time), so acknowledgements name exactly this claim.
    pub owner: &'a str,
    /// The claim's time.
    pub now: OffsetDateTime,
    /// Until when the claimed rows are this claimer's.
    pub lease_until: OffsetDateTime,
    /// At most this many rows (each the head of another chain).
    pub limit: u32,
}

/// A failed delivery to record: which row, by which claimer, when to try again and why.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// The outbox row.
    pub seq: i64,
    /// The claim that holds it; a claimer whose lease was lost changes nothing.
    pub owner: &'a str,
    /// When the row is due again.
    pub next_attempt: OffsetDateTime,
    /// A short reason, without secrets.
    pub error: &'a str,
}

/// The outbox operations of a store. Every [`Store`](super::Store) has them.
#[async_trait]
pub trait AuditOutbox {
    /// Lease, to `claim.owner`, up to `claim.limit` rows that are each the head of their chain,
    /// due (`next_attempt_at` reached) and not leased by anyone else; oldest first.
    async fn claim_outbox(&self, claim: Claim<'_>) -> StoreResult<Vec<OutboxEntry>>;
    /// Delivered: delete row `seq` if `owner` still holds it. `false` when the lease was lost.
    async fn ack_outbox(&self, seq: i64, owner: &str) -> StoreResult<bool>;
    /// Not delivered: release row `retry.seq` (if `retry.owner` still holds it), count the
    /// attempt and make it due again at `retry.next_attempt`.
    async fn retry_outbox(&self, retry: Retry<'_>) -> StoreResult<bool>;
    /// How many rows are pending and the oldest one's time.
    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog>;
    /// Delete pending rows written before `before` (used while no webhook is configured, so the
    /// outbox does not grow without end). Returns how many.
    async fn drop_outbox_before(&self, before: OffsetDateTime) -> StoreResult<u64>;
}

/// Queue audit row `$1` of chain `$2`, written at `$3`, for its first attempt at `$4`; shared
/// with SQLite's writer thread (`sqlite/writes.rs`).
pub(super) const ENQUEUE: &str = r#"insert into audit_outbox (seq, chain, created_at, next_attempt_at)
                                    values ($1, $2, $3, $4)"#;

/// The statement the audit append runs in its own transaction, right after inserting audit row
/// `seq` of `chain`: queue the event for export.
pub(super) fn enqueue<'q, DB>(
    seq: i64,
    chain: &'q str,
    at: OffsetDateTime,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let at = to_ms(at);
    sqlx::query(ENQUEUE).bind(seq).bind(chain).bind(at).bind(at)
}

/// A claimed row joined with its audit event.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    attempts: i64,
    #[sqlx(flatten)]
    audit: AuditRow,
}

/// `count(*)` and `min(created_at)` of the outbox.
#[derive(sqlx::FromRow)]
struct BacklogRow {
    pending: i64,
    oldest: Option<i64>,
}

/// The claim statement: `lock` is what PostgreSQL adds to lock the candidates (SQLite's single
/// writer makes the statement atomic on its own).
fn claim_sql(lock: &str) -> String {
    format!(
        r#"update audit_outbox set lease_owner = $1, lease_until = $2
           where seq in (
               select o.seq from audit_outbox o
               where o.next_attempt_at <= $3
                 and (o.lease_until is null or o.lease_until <= $3)
                 and o.seq = (select min(h.seq) from audit_outbox h where h.chain = o.chain)
               order by o.seq
               limit $4
               {lock}
           )"#
    )
}

/// The outbox statements, written once for both sqlx databases: the trait's `where` clause says
/// what a backend must encode and decode for them (as `sql::SharedSql` does for the rest).
trait OutboxSql: Database
where
    for<'c> &'c Pool<Self>: Executor<'c, Database = Self>,
    Self::Arguments: IntoArguments<Self>,
    for<'q> i64: Encode<'q, Self> + Type<Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'r> OutboxRow: FromRow<'r, Self::Row>,
    for<'r> BacklogRow: FromRow<'r, Self::Row>,
{
    /// What PostgreSQL adds to the claim to lock its candidates (SQLite's single writer makes
    /// the statement atomic on its own).
    const CLAIM_LOCK: &'static str;

    /// Rows a statement changed (sqlx has no trait for it).
    fn rows(done: &Self::QueryResult) -> u64;

    async fn claim(pool: &Pool<Self>, claim: Claim<'_>) -> StoreResult<Vec<OutboxEntry>> {
        sqlx::query(sqlx::AssertSqlSafe(claim_sql(Self::CLAIM_LOCK)))
            .bind(claim.owner)
            .bind(to_ms(claim.lease_until))
            .bind(to_ms(claim.now))
            .bind(i64::from(claim.limit))
            .execute(pool)
            .await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            r#"select o.attempts, e.seq, e.body, e.chain_seq, e.prev_hash, e.hash
               from audit_outbox o join audit_events e on e.seq = o.seq
               where o.lease_owner = $1
               order by o.seq"#,
        )
        .bind(claim.owner)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(OutboxEntry {
                    seq: row.audit.seq,
                    attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
                    chained: row.audit.into_event()?,
                })
            })
            .collect()
    }

    async fn ack(pool: &Pool<Self>, seq: i64, owner: &str) -> StoreResult<bool> {
        let done = sqlx::query(r#"delete from audit_outbox where seq = $1 and lease_owner = $2"#)
            .bind(seq)
            .bind(owner)
            .execute(pool)
            .await?;
        Ok(Self::rows(&done) == 1)
    }

    async fn retry(pool: &Pool<Self>, retry: Retry<'_>) -> StoreResult<bool> {
        let error: String = retry.error.chars().take(MAX_ERROR_LEN).collect();
        let done = sqlx::query(
            r#"update audit_outbox
               set attempts = attempts + 1, next_attempt_at = $1, last_error = $2,
                   lease_owner = null, lease_until = null
               where seq = $3 and lease_owner = $4"#,
        )
        .bind(to_ms(retry.next_attempt))
        .bind(error.as_str())
        .bind(retry.seq)
        .bind(retry.owner)
        .execute(pool)
        .await?;
        Ok(Self::rows(&done) == 1)
    }

    async fn backlog(pool: &Pool<Self>) -> StoreResult<OutboxBacklog> {
        let row: BacklogRow = sqlx::query_as(
            r#"select count(*) as pending, min(created_at) as oldest from audit_outbox"#,
        )
        .fetch_one(pool)
        .await?;
        Ok(OutboxBacklog {
            pending: u64::try_from(row.pending).unwrap_or_default(),
            oldest: from_ms_opt(row.oldest, "audit_outbox.created_at")?,
        })
    }

    async fn drop_before(pool: &Pool<Self>, before: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query(r#"delete from audit_outbox where created_at < $1"#)
            .bind(to_ms(before))
            .execute(pool)
            .await?;
        Ok(Self::rows(&done))
    }
}

impl OutboxSql for Sqlite {
    const CLAIM_LOCK: &'static str = "";
    fn rows(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl OutboxSql for Postgres {
    // Lock the candidate heads, skipping those another replica is claiming right now.
    const CLAIM_LOCK: &'static str = "for update skip locked";
    fn rows(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Implements [`AuditOutbox`] for a store from its database and its write pool.
macro_rules! outbox_impl {
    ($store:ty, $db:ty, $pool:ident) => {
        #[async_trait]
        impl AuditOutbox for $store {
            async fn claim_outbox(&self, c: Claim<'_>) -> StoreResult<Vec<OutboxEntry>> {
                <$db>::claim(&self.$pool, c).await
            }
            async fn ack_outbox(&self, seq: i64, owner: &str) -> StoreResult<bool> {
                <$db>::ack(&self.$pool, seq, owner).await
            }
            async fn retry_outbox(&self, retry: Retry<'_>) -> StoreResult<bool> {
                <$db>::retry(&self.$pool, retry).await
            }
            async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
                <$db>::backlog(&self.$pool).await
            }
            async fn drop_outbox_before(&self, before: OffsetDateTime) -> StoreResult<u64> {
                <$db>::drop_before(&self.$pool, before).await
            }
        }
    };
}

// SQLite: the writer connection, whose single writer makes each statement atomic.
outbox_impl!(SqliteStore, Sqlite, writer);
outbox_impl!(PgStore, Postgres, pool);
