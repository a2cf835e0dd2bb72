//! The SQLite store's group-commit writer, on a thread of its own with its own connection.
//!
//! sqlx runs every SQLite statement on a worker thread and hands each one over through a
//! channel, so one exchange (a savepoint, three inserts, a read, an update, a release) paid
//! about eight round trips between threads; under load the broker spent more time switching
//! threads than writing. Here one thread owns a `rusqlite` connection and runs a whole batch as
//! plain calls: one hand-over per batch, not per statement.
//!
//! Batching is `batch.rs`'s: every write queued meanwhile (up to [`MAX_BATCH`]) shares one
//! `BEGIN IMMEDIATE` transaction, each in a savepoint; callers are answered only after the
//! commit; a write that failed in the database runs again alone, and a failed commit fails
//! every write of its batch.
//!
//! The store's other writes (administration, revocation, the export outbox) still go through
//! sqlx's one-connection write pool. Both connections would otherwise meet only in SQLite's busy
//! handler, which polls with sleeps of 1 to 100 ms: a revocation would sleep behind
//! back-to-back batches, and fail once the busy timeout ran out. So a batch runs only while this
//! thread holds that pool's connection, and the pool's first-come queue gives the write lock to
//! each side in turn. Under a flood, the thread keeps its turn for [`TURN_HOLD`] across batches
//! instead of handing it over after each one.

use super::super::batch::OwnedMintRecord;
use super::super::batch::{commit_failed, settle, submit, Ran, MAX_BATCH, QUEUE_DEPTH};
use super::super::rows::{AuditAppend, SessionRow};
use super::super::{
    Issuance, IssuedToken, JtiRecord, MintIntent, MintRecord, SessionRecord, StoreError,
    StoreResult,
};
use super::{checkpoint, writes};
use crate::audit::AuditEvent;
use rusqlite::{Connection, OpenFlags};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

/// Prepared statements kept per connection: every statement the writes run, with room.
const STATEMENT_CACHE: usize = 32;

/// One write: a plain `fn` of the connection and the caller's owned data, so that it can run
/// again alone.
type Op<D, T> = fn(&Connection, &D) -> StoreResult<T>;

/// A queued write with its data and its waiter, its result type erased.
trait Job: Send {
    fn run(&mut self, conn: &Connection) -> Ran;
    fn answer(self: Box<Self>, failure: Option<StoreError>);
}

struct Pending<D, T> {
    data: D,
    op: Op<D, T>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<D: Send, T: Send> Job for Pending<D, T> {
    fn run(&mut self, conn: &Connection) -> Ran {
        let result = (self.op)(conn, &self.data);
        let ran = Ran::of(&result);
        self.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        // The caller may have gone (its request was cancelled); the write stands regardless.
        let _ = self.reply.send(settle(self.result, failure));
    }
}

/// The handle callers write through; the thread behind it ends when the last handle is dropped.
pub(super) struct ThreadWriter {
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl ThreadWriter {
    /// Open `path` for writing and start the thread. `turn` is the store's sqlx write pool (one
    /// connection), held by a batch while it runs; `busy` is how long the connection waits for
    /// another process's write lock.
    pub(super) fn spawn(path: &Path, turn: SqlitePool, busy: Duration) -> StoreResult<Self> {
        let conn = open(path, busy)?;
        let checkpointer = checkpoint::start(path, busy)?;
        let runtime = Handle::current();
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || {
                drain(&conn, jobs, &turn, &runtime);
                drop(checkpointer);
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { queue })
    }

    /// Run `op` with `data` in the next batch; its result once the batch committed.
    async fn write<D, T>(&self, data: D, op: Op<D, T>) -> StoreResult<T>
    where
        D: Send + 'static,
        T: Send + 'static,
    {
        submit(&self.queue, |reply| {
            Box::new(Pending {
                data,
                op,
                result: None,
                reply,
            })
        })
        .await
    }

    /// `Store::record_exchange`.
    pub(super) async fn exchange(
        &self,
        jti: &JtiRecord,
        session: &SessionRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let data = (
            jti.clone(),
            SessionRow::encode(session)?,
            AuditAppend::encode(audit)?,
        );
        self.write(data, |conn, (jti, session, audit)| {
            writes::exchange(conn, jti, session, audit)
        })
        .await
    }

    /// `Store::record_issuance`.
    pub(super) async fn issuance(
        &self,
        tokens: &[IssuedToken],
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let data = (tokens.to_vec(), AuditAppend::encode(audit)?);
        self.write(data, |conn, (tokens, audit)| {
            writes::issuance(conn, tokens, audit)
        })
        .await
    }

    /// `Store::append_audit`.
    pub(super) async fn audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.write(AuditAppend::encode(event)?, writes::audit_event)
            .await
    }

    /// `Store::resolve_mint_intent`.
    pub(super) async fn intent_resolution(
        &self,
        intent_id: &str,
        audit: &AuditEvent,
    ) -> StoreResult<bool> {
        let data = (intent_id.to_owned(), AuditAppend::encode(audit)?);
        self.write(data, |conn, (intent_id, audit)| {
            writes::intent_resolution(conn, intent_id, audit)
        })
        .await
    }

    /// `Store::record_mint_intent`.
    pub(super) async fn mint_intent(&self, intent: &MintIntent) -> StoreResult<()> {
        self.write(intent.clone(), writes::mint_intent).await
    }

    /// `Store::record_mint`.
    pub(super) async fn mint(&self, record: &MintRecord<'_>) -> StoreResult<Issuance> {
        let data = (
            OwnedMintRecord::from(record),
            AuditAppend::encode(record.audit)?,
        );
        self.write(data, |conn, (record, audit)| {
            writes::mint(conn, &record.borrowed(), audit)
        })
        .await
    }
}

/// The writer's connection: read-write on the file the store opened (and migrated), with the
/// settings the sqlx connections get: foreign keys enforced, the same busy timeout, and no
/// checkpoint on commit (`checkpoint.rs` runs them). Its savepoints' sub-journals stay in memory.
fn open(path: &Path, busy: Duration) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT)?;
    // Every write of a batch runs in a savepoint, which copies each page it changes to a
    // sub-journal; SQLite spills that journal to a temporary file past 64 KiB (`etilqs_*`), and
    // then a batch costs a `pwrite` per page twice over (measured: ~11 times the WAL's own
    // writes). In memory it is a copy, truncated when the savepoint is released. Nothing
    // durable lives there: the WAL commit is what survives a crash.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// How long this thread keeps its turn across back-to-back batches before it hands the write
/// lock to the store's other writes. Each hand-over costs about 0.9 ms, because sqlx returns a
/// connection through a task on the (busy) runtime and pings it first. Paid per batch, that was a
/// third of this thread's time under load. Paid once per this period, it is a few percent, and
/// another write waits at most this long plus one batch.
const TURN_HOLD: Duration = Duration::from_millis(20);

/// The pool connection this thread holds as its turn, and since when.
type Turn = Option<(PoolConnection<Sqlite>, Instant)>;

/// The thread: batch after batch until every [`ThreadWriter`] handle is gone.
fn drain(
    conn: &Connection,
    mut jobs: mpsc::Receiver<Box<dyn Job>>,
    pool: &SqlitePool,
    runtime: &Handle,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut turn: Turn = None;
    loop {
        let first = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                // Nothing queued: the others may write while this thread waits.
                give_back(&mut turn, runtime);
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => break,
                }
            }
        };
        batch.push(first);
        if turn
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= TURN_HOLD)
        {
            give_back(&mut turn, runtime);
        }
        if turn.is_none() {
            match runtime.block_on(pool.acquire()) {
                Ok(connection) => turn = Some((connection, Instant::now())),
                Err(error) => {
                    let message = error.to_string();
                    for job in batch.drain(..) {
                        job.answer(Some(StoreError::Backend(sqlx::Error::Protocol(format!(
                            "sqlite writer: {message}"
                        )))));
                    }
                    continue;
                }
            }
        }
        // What queued while this thread waited for its turn joins the batch.
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(conn, &mut batch);
    }
    give_back(&mut turn, runtime);
}

/// Hand the turn back to the pool, if this thread holds it.
fn give_back(turn: &mut Turn, runtime: &Handle) {
    if let Some((connection, _)) = turn.take() {
        // Returning a pooled connection spawns a task: from inside the runtime.
        let _inside = runtime.enter();
        drop(connection);
    }
}

/// Every job of `batch` answered: one alone in its own transaction, more together.
fn run_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) {
    if batch.len() == 1 {
        if let Some(job) = batch.pop() {
            run_alone(conn, job);
        }
        return;
    }
    let mut ran = Vec::with_capacity(batch.len());
    match run_together(conn, batch, &mut ran) {
        Ok(()) => {
            for (job, ran) in batch.drain(..).zip(ran) {
                match ran {
                    Ran::Failed => run_alone(conn, job),
                    Ran::Done | Ran::Refused => job.answer(None),
                }
            }
        }
        // Nothing of the batch was committed: each write runs again alone.
        Err(Stage::BeforeCommit) => {
            rollback(conn);
            for job in batch.drain(..) {
                run_alone(conn, job);
            }
        }
        // Whether the commit took effect is unknown, so no write may run again (a replay key
        // would refuse its own token); each caller learns of it.
        Err(Stage::Commit(error)) => {
            rollback(conn);
            let message = error.to_string();
            for job in batch.drain(..) {
                job.answer(Some(commit_failed(&message)));
            }
        }
    }
}

/// Where a batch's transaction broke.
enum Stage {
    BeforeCommit,
    Commit(rusqlite::Error),
}

/// Every job of `batch` in one transaction, each in a savepoint; how each ran in `ran`.
fn run_together(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    ran: &mut Vec<Ran>,
) -> Result<(), Stage> {
    let step = |sql: &str| run(conn, sql).map_err(|_| Stage::BeforeCommit);
    step("begin immediate")?;
    for job in batch.iter_mut() {
        step("savepoint job")?;
        let outcome = job.run(conn);
        if outcome != Ran::Done {
            step("rollback to job")?;
        }
        step("release job")?;
        ran.push(outcome);
    }
    run(conn, "commit").map_err(Stage::Commit)
}

/// One statement without parameters, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// One job in a transaction of its own.
fn run_alone(conn: &Connection, mut job: Box<dyn Job>) {
    if let Err(error) = run(conn, "begin immediate") {
        job.answer(Some(error.into()));
        return;
    }
    let failure = match job.run(conn) {
        Ran::Done => match run(conn, "commit") {
            Ok(()) => None,
            Err(error) => {
                rollback(conn);
                Some(error.into())
            }
        },
        // The job's own error is the answer.
        Ran::Refused | Ran::Failed => {
            rollback(conn);
            None
        }
    };
    job.answer(failure);
}

/// End whatever transaction is open, so the next one can begin; when none is (SQLite already
/// rolled back), there is nothing to do.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = run(conn, "rollback");
    }
}
