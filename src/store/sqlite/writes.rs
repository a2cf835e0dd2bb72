//! The group-committed writes of the SQLite store, as the writer thread (`thread.rs`) runs them:
//! plain calls on its own connection, with no channel hop per statement.
//!
//! Each is the SQLite twin of a [`SharedSql`](crate::store::sql::SharedSql) write (the
//! PostgreSQL store and an in-memory SQLite store run those): the same statement texts (the
//! `sql` and `outbox` constants), the same row encodings (`rows.rs`: `SessionRow`,
//! `IssuedTokenRow` and `AuditAppend`, which the thread's callers encode), the same errors. Only
//! the audit append differs: here the row goes in already linked. The store conformance suite
//! runs on a SQLite file, so it checks these against the same cases as PostgreSQL.

use super::super::codec::{is_unique_violation, to_json, to_ms, write_err};
use super::super::outbox;
use super::super::rows::{AuditAppend, IssuedTokenRow, SessionRow};
use super::super::sql::{self, conflict};
use super::super::{
    Issuance, IssuanceRefusal, IssuedToken, JtiRecord, MintIntent, MintRecord, StoreError,
    StoreResult,
};
use crate::audit::chain::{AuditColumns, ChainLink};
use rusqlite::{params, Connection, OptionalExtension as _};
use std::borrow::Cow;

/// `Store::record_exchange`: the replay key first, so that a replay aborts before anything else
/// is written (the caller rolls back whatever an error interrupted).
pub(super) fn exchange(
    conn: &Connection,
    jti: &JtiRecord,
    session: &SessionRow,
    audit: &AuditAppend,
) -> StoreResult<()> {
    conn.prepare_cached(sql::INSERT_REPLAY_KEY)?
        .execute(params![jti.issuer, jti.jti, to_ms(jti.expires_at)])
        .map_err(|e| {
            let e = sql_error(e);
            if is_unique_violation(&e) {
                StoreError::Replay
            } else {
                StoreError::Backend(e)
            }
        })?;
    conn.prepare_cached(sql::INSERT_SESSION)?
        .execute(params![
            session.id,
            session.workspace_id,
            session.issuer,
            session.subject,
            session.claims,
            session.created_at,
            session.expires_at,
            session.revoked_at,
        ])
        .map_err(|e| write_err(sql_error(e), || conflict("session exists"), "workspace"))?;
    audit_event(conn, audit)
}

/// `Store::record_issuance`: every token row, then the audit event.
pub(super) fn issuance(
    conn: &Connection,
    tokens: &[IssuedToken],
    audit: &AuditAppend,
) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(sql::INSERT_ISSUED_TOKEN)?;
    for token in tokens {
        let row = IssuedTokenRow::encode(token)?;
        insert
            .execute(params![
                row.id,
                row.workspace_id,
                row.session_id,
                row.installation_id,
                row.owner,
                row.host,
                row.repositories,
                row.permissions,
                row.fingerprint,
                row.sealed_token,
                row.policy_name,
                row.policy_version,
                row.created_at,
                row.expires_at,
                row.revoked_at,
            ])
            .map_err(|e| {
                write_err(
                    sql_error(e),
                    || conflict("token id exists"),
                    "workspace or session",
                )
            })?;
    }
    audit_event(conn, audit)
}

/// `Store::append_audit`, and the audit step of every other write: the row, already linked after
/// its chain's head, and its export queued in the same transaction (exported iff stored). The
/// transaction's `BEGIN IMMEDIATE` holds the database's one write lock, against other processes
/// on the file too, so neither the head nor the next `seq` can change before the insert: the
/// row's hash can cover the `seq` it will get, and it goes in once, not inserted then linked.
pub(super) fn audit_event(conn: &Connection, row: &AuditAppend) -> StoreResult<()> {
    let chain = &row.chain;
    // What `autoincrement` would assign: one past the largest `seq` the table ever had, which
    // `sqlite_sequence` keeps even after the row is gone.
    let seq: i64 = conn
        .prepare_cached(
            "select max(coalesce((select seq from sqlite_sequence where name = 'audit_events'), 0),
                        coalesce((select max(seq) from audit_events), 0)) + 1",
        )?
        .query_row([], |row| row.get(0))?;
    let head: Option<(i64, Option<String>)> = conn
        .prepare_cached(sql::SELECT_CHAIN_HEAD)?
        .query_row(params![chain], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let head = match &head {
        Some((sequence, Some(hash))) => Some((*sequence, hash.as_str())),
        // Linking to a head without a hash would bless whatever was done to it.
        Some((_, None)) => {
            return Err(StoreError::Corrupt(format!(
                "audit chain {chain:?}: the head event has no hash"
            )))
        }
        None => None,
    };
    let columns = AuditColumns {
        seq,
        ..row.columns.clone()
    };
    let link = ChainLink::append(&columns, head);
    conn.prepare_cached(
        "insert into audit_events
         (seq, id, time, workspace_id, kind, outcome, body, chain_seq, prev_hash, hash)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        seq,
        columns.id,
        columns.time,
        columns.workspace_id,
        columns.kind,
        columns.outcome,
        columns.body,
        link.sequence,
        link.prev_hash,
        link.hash,
    ])
    .map_err(|e| {
        let e = sql_error(e);
        let clash = if e.to_string().contains("audit_events.id") {
            "audit event exists"
        } else {
            "audit chain position taken"
        };
        write_err(e, || conflict(clash), "workspace")
    })?;
    conn.prepare_cached(outbox::ENQUEUE)?.execute(params![
        seq,
        chain,
        columns.time,
        columns.time
    ])?;
    Ok(())
}

/// `Store::record_mint_intent`.
pub(super) fn mint_intent(conn: &Connection, intent: &MintIntent) -> StoreResult<()> {
    conn.prepare_cached(sql::INSERT_MINT_INTENT)?
        .execute(params![
            intent.id,
            intent.workspace_id,
            intent.session_id,
            intent.request_id,
            intent.policy_name,
            intent.policy_version,
            to_json(&intent.actor, "intent actor")?,
            to_json(&intent.planned, "intent planned tokens")?,
            to_ms(intent.created_at),
        ])
        .map_err(|e| write_err(sql_error(e), || conflict("intent exists"), "intent"))?;
    Ok(())
}

/// Resolve an intent: its row goes; `false` when it was resolved before.
fn resolve_intent(conn: &Connection, id: &str) -> StoreResult<bool> {
    let deleted = conn
        .prepare_cached(sql::RESOLVE_MINT_INTENT)?
        .execute(params![id])?;
    Ok(deleted > 0)
}

/// `Store::resolve_mint_intent`: `false` (and nothing written) when resolved before.
pub(super) fn intent_resolution(
    conn: &Connection,
    id: &str,
    audit: &AuditAppend,
) -> StoreResult<bool> {
    if !resolve_intent(conn, id)? {
        return Ok(false);
    }
    audit_event(conn, audit)?;
    Ok(true)
}

/// `Store::record_mint`: the rows, the intent's resolution and the event, unless the workspace
/// or session changed while GitHub was minting (then nothing is written). Checked under the
/// batch's write lock, so a change committed before it is always seen. `audit` is
/// `record.audit`, encoded.
pub(super) fn mint(
    conn: &Connection,
    record: &MintRecord<'_>,
    audit: &AuditAppend,
) -> StoreResult<Issuance> {
    if let Some(refusal) = issuance_refusal(conn, record.workspace_id, record.session_id)? {
        return Ok(Issuance::Refused(refusal));
    }
    if let Some(intent) = record.intent_id {
        // Whether or not a sweep already called this intent orphaned: the record still stands,
        // and the log then shows both.
        resolve_intent(conn, intent)?;
    }
    issuance(conn, record.tokens, audit)?;
    Ok(Issuance::Recorded)
}

/// Why a mint may no longer be recorded, if it may not.
fn issuance_refusal(
    conn: &Connection,
    workspace_id: &str,
    session_id: &str,
) -> StoreResult<Option<IssuanceRefusal>> {
    let enabled: Option<bool> = conn
        .prepare_cached("select sts_enabled from workspaces where id = ?1")?
        .query_row(params![workspace_id], |row| row.get(0))
        .optional()?;
    if let Some(refusal) = IssuanceRefusal::by_workspace(enabled) {
        return Ok(Some(refusal));
    }
    let session: Option<(String, Option<i64>)> = conn
        .prepare_cached("select workspace_id, revoked_at from sessions where id = ?1")?
        .query_row(params![session_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(IssuanceRefusal::by_session(
        workspace_id,
        session
            .as_ref()
            .map(|(owner, revoked)| (owner.as_str(), revoked.is_some())),
    ))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(sql_error(e))
    }
}

/// `e` as the sqlx error the rest of the store classifies (unique and foreign-key violations
/// by kind, everything else a backend failure), so that both connections fail the same way.
pub(super) fn sql_error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            sqlx::Error::Database(Box::new(SqliteFailure { code, message }))
        }
        other => sqlx::Error::Protocol(format!("sqlite writer: {other}")),
    }
}

/// A failure SQLite reported, with its extended result code.
#[derive(Debug)]
struct SqliteFailure {
    code: rusqlite::ffi::Error,
    message: Option<String>,
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message} ({})", self.code),
            None => write!(f, "{}", self.code),
        }
    }
}

impl std::error::Error for SqliteFailure {}

impl sqlx::error::DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        self.message.as_deref().unwrap_or("sqlite failure")
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.extended_code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.code.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}
