//! Group commit: the writes that callers make at the same time share one transaction, and so
//! one commit (one fsync on SQLite, one WAL flush on PostgreSQL), instead of queueing one
//! commit each behind the database's write lock.
//!
//! Each backend runs one writer task. A caller hands it a [`Work`] (a function of a connection
//! and the caller's owned data) and waits; the task takes every write queued meanwhile (up to
//! [`MAX_BATCH`]), runs each inside its own savepoint of one transaction, commits, and only then
//! answers each caller: a response still goes out only after what it promises is committed.
//! While one batch commits the next one queues, so batches grow with the load and a lone write
//! pays no wait.
//!
//! A write that fails with a domain error (replay, conflict, not found) is rolled back to its
//! savepoint and answered after the batch; one that fails in the database (a lock timeout, a
//! PostgreSQL deadlock with another replica's batch) runs again alone after the batch, in a
//! transaction of its own, so that the others' failure is never its, nor its theirs.

use super::codec::write_err;
use super::sql::{conflict, SharedSql as _};
use super::{
    Issuance, IssuedToken, JtiRecord, MintIntent, MintRecord, SessionRecord, StoreError,
    StoreResult,
};
use crate::audit::AuditEvent;
use futures::future::BoxFuture;
use sqlx::{Connection, Database, Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

/// The most writes one transaction takes. Bounds how long a batch holds the write lock (and
/// the memory of one batch) under a flood; at ~100 µs a write a full batch is still short.
pub(super) const MAX_BATCH: usize = 256;

/// Writes waiting for the writer beyond this make their callers wait to queue (backpressure)
/// rather than grow the queue without bound.
pub(super) const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

/// One write: runs on a connection inside a transaction, with the caller's data. A plain `fn`
/// (no captures), so the data is owned by the job and the write can be run again alone.
pub(super) type Work<DB, D, T> =
    for<'c> fn(&'c mut <DB as Database>::Connection, &'c D) -> BoxFuture<'c, StoreResult<T>>;

/// How a write ended inside a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// Keep its changes.
    Done,
    /// Refused for a domain reason: roll back its savepoint, answer the refusal.
    Refused,
    /// Failed in the database: roll back its savepoint, run it again alone.
    Failed,
}

/// A queued write with its data and its waiter, its result type erased.
trait Job<DB: Database>: Send + Sync {
    fn run<'c>(&'c mut self, conn: &'c mut DB::Connection) -> BoxFuture<'c, Ran>;
    /// Answer the waiter: the kept result, or `failure` if the write's changes did not commit
    /// (or it never ran).
    fn answer(self: Box<Self>, failure: Option<StoreError>);
    /// What this job writes, if a writer with a [`BulkWrite`] can write it together with the
    /// batch's other such writes.
    fn together(&self) -> Option<Together<'_>> {
        None
    }
    /// This job was written (or refused) together with the batch's others: keep `outcome` as if
    /// [`run`](Job::run) had returned it. Called only on jobs whose
    /// [`together`](Job::together) is `Some`, with the outcome of the same kind.
    fn written_together(&mut self, _outcome: Outcome) {}
}

/// An exchange's writes, owned so that they can wait in the queue.
pub(super) struct ExchangeWrite {
    pub(super) jti: JtiRecord,
    pub(super) session: SessionRecord,
    pub(super) audit: AuditEvent,
}

/// A write that a [`BulkWrite`] can make together with others of the batch.
#[derive(Clone, Copy)]
pub(super) enum Together<'a> {
    /// `Store::record_exchange`.
    Exchange(&'a ExchangeWrite),
    /// `Store::record_mint_intent`.
    Intent(&'a MintIntent),
    /// `Store::record_mint`.
    Mint(&'a OwnedMintRecord),
}

/// How a write made together ended, as its own write would have returned it.
#[derive(Debug)]
pub(super) enum Outcome {
    Exchange(StoreResult<()>),
    Intent(StoreResult<()>),
    Mint(StoreResult<Issuance>),
}

impl Outcome {
    fn ran(&self) -> Ran {
        match self {
            Outcome::Exchange(result) | Outcome::Intent(result) => Ran::of(result),
            Outcome::Mint(result) => Ran::of(result),
        }
    }
}

/// Writes every [`Together`] write of a batch with a few statements in all, instead of a few
/// each, inside the batch's transaction: each one's outcome, in order. An error means the
/// statements could not all be applied; the writer then rolls them back and runs each write on
/// its own, as any other job, so that what this does is only ever a faster way to the same rows.
pub(super) type BulkWrite<DB> = for<'c> fn(
    &'c mut <DB as Database>::Connection,
    &'c [Together<'c>],
) -> BoxFuture<'c, StoreResult<Vec<Outcome>>>;

/// The data of a write that can be made together, and how its outcome reads.
pub(super) trait WrittenTogether: Send + Sync + 'static {
    type Output: Send + Sync + 'static;
    fn together(&self) -> Together<'_>;
    /// The result in `outcome`, when it is of this kind.
    fn result(outcome: Outcome) -> Option<StoreResult<Self::Output>>;
}

impl WrittenTogether for ExchangeWrite {
    type Output = ();
    fn together(&self) -> Together<'_> {
        Together::Exchange(self)
    }
    fn result(outcome: Outcome) -> Option<StoreResult<()>> {
        match outcome {
            Outcome::Exchange(result) => Some(result),
            _ => None,
        }
    }
}

impl WrittenTogether for MintIntent {
    type Output = ();
    fn together(&self) -> Together<'_> {
        Together::Intent(self)
    }
    fn result(outcome: Outcome) -> Option<StoreResult<()>> {
        match outcome {
            Outcome::Intent(result) => Some(result),
            _ => None,
        }
    }
}

impl WrittenTogether for OwnedMintRecord {
    type Output = Issuance;
    fn together(&self) -> Together<'_> {
        Together::Mint(self)
    }
    fn result(outcome: Outcome) -> Option<StoreResult<Issuance>> {
        match outcome {
            Outcome::Mint(result) => Some(result),
            _ => None,
        }
    }
}

/// A queued write that can be made together: a [`Pending`] whose data the writer can reach.
struct PendingTogether<DB: Database, D: WrittenTogether>(Pending<DB, D, D::Output>);

impl<DB: Database, D: WrittenTogether> Job<DB> for PendingTogether<DB, D> {
    fn run<'c>(&'c mut self, conn: &'c mut DB::Connection) -> BoxFuture<'c, Ran> {
        self.0.run(conn)
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        Box::new(self.0).answer(failure);
    }

    fn together(&self) -> Option<Together<'_>> {
        Some(self.0.data.together())
    }

    fn written_together(&mut self, outcome: Outcome) {
        self.0.result = D::result(outcome);
    }
}

struct Pending<DB: Database, D, T> {
    data: D,
    work: Work<DB, D, T>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<DB, D, T> Job<DB> for Pending<DB, D, T>
where
    DB: Database,
    D: Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut DB::Connection) -> BoxFuture<'c, Ran> {
        Box::pin(async move {
            let result = (self.work)(conn, &self.data).await;
            let ran = Ran::of(&result);
            self.result = Some(result);
            ran
        })
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        // The caller may have gone (its request was cancelled); the write stands regardless.
        let _ = self.reply.send(settle(self.result, failure));
    }
}

impl Ran {
    /// How a write that returned `result` ran.
    pub(super) fn of<T>(result: &StoreResult<T>) -> Self {
        match result {
            Ok(_) => Ran::Done,
            Err(StoreError::Backend(_)) => Ran::Failed,
            Err(_) => Ran::Refused,
        }
    }
}

/// A write's answer: its refusal, else the batch's `failure` if its changes did not commit (or
/// it never ran), else its result.
pub(super) fn settle<T>(
    result: Option<StoreResult<T>>,
    failure: Option<StoreError>,
) -> StoreResult<T> {
    match (result, failure) {
        (Some(Err(refused)), _) => Err(refused),
        (_, Some(failure)) => Err(failure),
        (Some(done), None) => done,
        (None, None) => Err(closed()),
    }
}

/// The handle callers write through; the task behind it ends when the last handle is dropped.
pub(super) struct Writer<DB: Database> {
    queue: mpsc::Sender<Box<dyn Job<DB>>>,
}

/// How the writer task works: its pool, how it opens a transaction (SQLite's `begin immediate`
/// takes the write lock up front), and how it writes a batch's exchanges together, if it can.
struct Drain<DB: Database> {
    pool: Pool<DB>,
    begin: &'static str,
    bulk: Option<BulkWrite<DB>>,
}

impl<DB: Database> Writer<DB> {
    /// Start the writer task on `pool`, opening each transaction with `begin`; with `bulk`, the
    /// exchanges, intents and mint records of a batch are written together.
    pub(super) fn spawn(pool: Pool<DB>, begin: &'static str, bulk: Option<BulkWrite<DB>>) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(drain(Drain { pool, begin, bulk }, jobs));
        Self { queue }
    }

    /// Run `work` with `data` in the next batch; its result once the batch committed.
    pub(super) async fn write<D, T>(&self, data: D, work: Work<DB, D, T>) -> StoreResult<T>
    where
        D: Send + Sync + 'static,
        T: Send + Sync + 'static,
    {
        submit(&self.queue, |reply| {
            Box::new(Pending {
                data,
                work,
                result: None,
                reply,
            })
        })
        .await
    }

    /// Run the write `data` (made by `work` when not together with others) in the next batch;
    /// its result once the batch committed.
    pub(super) async fn write_together<D: WrittenTogether>(
        &self,
        data: D,
        work: Work<DB, D, D::Output>,
    ) -> StoreResult<D::Output> {
        submit(&self.queue, |reply| {
            Box::new(PendingTogether(Pending {
                data,
                work,
                result: None,
                reply,
            }))
        })
        .await
    }
}

/// Queue the job that `job` builds around its reply channel, on either writer (this task's or
/// SQLite's thread); its result once the batch committed.
pub(super) async fn submit<J: ?Sized, T>(
    queue: &mpsc::Sender<Box<J>>,
    job: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Box<J>,
) -> StoreResult<T> {
    let (reply, answer) = oneshot::channel();
    queue.send(job(reply)).await.map_err(|_| closed())?;
    answer.await.map_err(|_| closed())?
}

/// The writer stopped (the runtime is shutting down): nothing was written.
pub(super) fn closed() -> StoreError {
    StoreError::Backend(sqlx::Error::PoolClosed)
}

/// The writer task: batch after batch until every [`Writer`] handle is gone.
async fn drain<DB: Database>(how: Drain<DB>, mut jobs: mpsc::Receiver<Box<dyn Job<DB>>>) {
    let (pool, begin) = (&how.pool, how.begin);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() == 1 {
            if let Some(job) = batch.pop() {
                run_alone(pool, begin, job).await;
            }
            continue;
        }
        let mut ran = Vec::with_capacity(batch.len());
        match run_together(&how, &mut batch, &mut ran).await {
            Ok(()) => {
                for (job, ran) in batch.drain(..).zip(ran) {
                    match ran {
                        Ran::Failed => run_alone(pool, begin, job).await,
                        Ran::Done | Ran::Refused => job.answer(None),
                    }
                }
            }
            // Nothing of the batch was committed: each write runs again alone and gets its
            // own answer.
            Err(Stage::BeforeCommit) => {
                for job in batch.drain(..) {
                    run_alone(pool, begin, job).await;
                }
            }
            // The commit itself failed: whether it took effect is unknown, so no write may
            // run again (a replay key would refuse its own token); each caller learns of it.
            Err(Stage::Commit(error)) => {
                let message = error.to_string();
                for job in batch.drain(..) {
                    job.answer(Some(commit_failed(&message)));
                }
            }
        }
    }
}

/// What each write of a batch whose commit failed learns.
pub(super) fn commit_failed(message: &str) -> StoreError {
    StoreError::Backend(sqlx::Error::Protocol(format!(
        "group commit failed: {message}"
    )))
}

/// Where a batch's transaction broke.
enum Stage {
    BeforeCommit,
    Commit(sqlx::Error),
}

/// Every job of `batch` in one transaction, each in a savepoint (the exchanges, if the writer
/// can, all in one); how each ran in `ran`.
async fn run_together<DB: Database>(
    how: &Drain<DB>,
    batch: &mut [Box<dyn Job<DB>>],
    ran: &mut Vec<Ran>,
) -> Result<(), Stage> {
    let mut tx: Transaction<'static, DB> = how
        .pool
        .begin_with(how.begin)
        .await
        .map_err(|_| Stage::BeforeCommit)?;
    let mut together = match how.bulk {
        Some(bulk) => written_together(&mut tx, bulk, batch).await?,
        None => Vec::new(),
    };
    for (at, job) in batch.iter_mut().enumerate() {
        if let Some(outcome) = together.get_mut(at).and_then(Option::take) {
            ran.push(outcome.ran());
            job.written_together(outcome);
            continue;
        }
        let mut savepoint = Connection::begin(&mut *tx)
            .await
            .map_err(|_| Stage::BeforeCommit)?;
        let outcome = job.run(&mut savepoint).await;
        let ended = match outcome {
            Ran::Done => savepoint.commit().await,
            Ran::Refused | Ran::Failed => savepoint.rollback().await,
        };
        ended.map_err(|_| Stage::BeforeCommit)?;
        ran.push(outcome);
    }
    tx.commit().await.map_err(Stage::Commit)
}

/// The writes of `batch` that can be made together, made by `bulk` in a savepoint of `tx`: each
/// one's outcome at its job's position (`None` for the other jobs). Empty when there are fewer
/// than two, or when `bulk` failed: its savepoint is then rolled back and each runs on its own.
async fn written_together<DB: Database>(
    tx: &mut Transaction<'static, DB>,
    bulk: BulkWrite<DB>,
    batch: &[Box<dyn Job<DB>>],
) -> Result<Vec<Option<Outcome>>, Stage> {
    let writes: Vec<Together<'_>> = batch.iter().filter_map(|job| job.together()).collect();
    if writes.len() < 2 {
        return Ok(Vec::new());
    }
    let mut savepoint = Connection::begin(&mut **tx)
        .await
        .map_err(|_| Stage::BeforeCommit)?;
    let written = bulk(&mut savepoint, &writes).await;
    match written {
        Ok(outcomes) if outcomes.len() == writes.len() => {
            savepoint.commit().await.map_err(|_| Stage::BeforeCommit)?;
            let mut outcomes = outcomes.into_iter();
            Ok(batch
                .iter()
                .map(|job| job.together().and_then(|_| outcomes.next()))
                .collect())
        }
        failed => {
            // Expected now and then (a workspace deleted while its write queued); the writes'
            // own runs say what it was, to their callers.
            if let Err(error) = &failed {
                tracing::debug!(%error, "batch's writes not made together; one by one");
            }
            savepoint
                .rollback()
                .await
                .map_err(|_| Stage::BeforeCommit)?;
            Ok(Vec::new())
        }
    }
}

/// One job in a transaction of its own.
async fn run_alone<DB: Database>(pool: &Pool<DB>, begin: &'static str, mut job: Box<dyn Job<DB>>) {
    let failure = match pool.begin_with(begin).await {
        Err(error) => Some(StoreError::Backend(error)),
        Ok(mut tx) => match job.run(&mut tx).await {
            Ran::Done => tx.commit().await.err().map(StoreError::Backend),
            // Dropping the transaction rolls it back; the job's own error is the answer.
            Ran::Refused | Ran::Failed => None,
        },
    };
    job.answer(failure);
}

/// A [`MintRecord`] that owns its parts, so that it can wait in the queue.
pub(super) struct OwnedMintRecord {
    workspace_id: String,
    session_id: String,
    intent_id: Option<String>,
    tokens: Vec<IssuedToken>,
    audit: AuditEvent,
}

impl From<&MintRecord<'_>> for OwnedMintRecord {
    fn from(record: &MintRecord<'_>) -> Self {
        Self {
            workspace_id: record.workspace_id.to_owned(),
            session_id: record.session_id.to_owned(),
            intent_id: record.intent_id.map(str::to_owned),
            tokens: record.tokens.to_vec(),
            audit: record.audit.clone(),
        }
    }
}

impl OwnedMintRecord {
    pub(super) fn borrowed(&self) -> MintRecord<'_> {
        MintRecord {
            workspace_id: &self.workspace_id,
            session_id: &self.session_id,
            intent_id: self.intent_id.as_deref(),
            tokens: &self.tokens,
            audit: &self.audit,
        }
    }
}

/// The group-committed writes both backends make the same way, written once for each (a macro:
/// the futures of `SharedSql`'s generic methods can only be named `Send` for a concrete backend).
macro_rules! shared_writes {
    ($($db:ident),*) => {$(
        impl Writer<sqlx::$db> {
            /// `Store::record_exchange`.
            pub(super) async fn exchange(
                &self,
                jti: &JtiRecord,
                session: &SessionRecord,
                audit: &AuditEvent,
            ) -> StoreResult<()> {
                let data = ExchangeWrite {
                    jti: jti.clone(),
                    session: session.clone(),
                    audit: audit.clone(),
                };
                self.write_together(data, |conn, data| {
                    Box::pin(sqlx::$db::write_exchange(
                        conn,
                        &data.jti,
                        &data.session,
                        &data.audit,
                    ))
                })
                .await
            }

            /// `Store::record_issuance`.
            pub(super) async fn issuance(
                &self,
                tokens: &[IssuedToken],
                audit: &AuditEvent,
            ) -> StoreResult<()> {
                let data = (tokens.to_vec(), audit.clone());
                self.write(data, |conn, (tokens, audit)| {
                    Box::pin(sqlx::$db::write_issuance(conn, tokens, audit))
                })
                .await
            }

            /// `Store::append_audit`.
            pub(super) async fn audit(&self, event: &AuditEvent) -> StoreResult<()> {
                self.write(event.clone(), |conn, event| {
                    Box::pin(sqlx::$db::write_audit(conn, event))
                })
                .await
            }

            /// `Store::resolve_mint_intent`.
            pub(super) async fn intent_resolution(
                &self,
                intent_id: &str,
                audit: &AuditEvent,
            ) -> StoreResult<bool> {
                let data = (intent_id.to_owned(), audit.clone());
                self.write(data, |conn, (intent_id, audit)| {
                    Box::pin(sqlx::$db::write_intent_resolution(conn, intent_id, audit))
                })
                .await
            }

            /// `Store::record_mint_intent`.
            pub(super) async fn mint_intent(&self, intent: &MintIntent) -> StoreResult<()> {
                self.write_together(intent.clone(), |conn, intent| {
                    Box::pin(async move {
                        sqlx::$db::insert_mint_intent(intent)?
                            .execute(conn)
                            .await
                            .map_err(|e| write_err(e, || conflict("intent exists"), "intent"))?;
                        Ok(())
                    })
                })
                .await
            }
        }
    )*};
}

shared_writes!(Sqlite, Postgres);
