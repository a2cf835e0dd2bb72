//! The statements both backends run unchanged, each written once with its binds beside it.
//!
//! Both schemas use the same tables, columns and Rust-side types (TEXT, BIGINT, BOOLEAN), and
//! sqlx's SQLite driver accepts PostgreSQL's `$N` placeholders, so one text serves both. What
//! really differs per backend (the pools, how a write transaction starts, PostgreSQL's row locks
//! and race retries, how the audit chain is locked, how a list of ids travels) stays in
//! `sqlite/` and `postgres/`; they and the `Store` methods both backends share
//! (`shared_impl.rs`) call these as `Sqlite::select_workspace(…)` / `$db::select_workspace(…)`.
//!
//! The statements are default methods of [`SharedSql`], implemented for both sqlx databases (in
//! `sqlite/` and `postgres/`, with the little each must say itself): the trait's `where`
//! clause says, once, what a backend must encode and decode for them.
//!
//! Two areas that no write of [`SharedSql`] calls into have traits of their own, each with the
//! `where` clause of just what it binds and reads: [`CatalogSql`] (a workspace's installation
//! links and policies, `catalog.rs`) and [`AuditSql`] (reading the audit log and its chains,
//! `audit.rs`). Everything else (workspaces, exchange and sessions, issued tokens and purges,
//! appending to the audit chain, signing keys, mint intents) is here: those writes call each
//! other inside one transaction.

mod audit;
mod catalog;

pub(super) use audit::AuditSql;
pub(super) use catalog::CatalogSql;

use super::codec::{is_unique_violation, to_json, to_ms, write_err};
use super::rows::{
    AuditAppend, AuditChainRow, ChainHeadRow, IssuedTokenRow, MintIntentRow, SeqRow, SessionRow,
    SigningKeyRow, WorkspaceRow,
};
use super::{
    Issuance, IssuanceRefusal, IssuedToken, JtiRecord, MintIntent, MintRecord, PurgeStats,
    Retention, SessionRecord, SigningKeyRecord, StoreError, StoreResult, Workspace,
};
use crate::audit::chain::{AuditColumns, ChainLink};
use crate::audit::AuditEvent;
use sqlx::query::{Query, QueryAs};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};
use time::OffsetDateTime;

// The texts of the writes that SQLite's writer thread (`sqlite/writes.rs`, rusqlite) runs as
// well: one text per statement, so the two writers cannot drift apart. Both drivers bind `$N`
// by position, as SQLite numbers distinct `$N` parameters in order of first appearance.

/// Record an OIDC token's replay key; the primary key refuses a second use.
pub(super) const INSERT_REPLAY_KEY: &str =
    r#"insert into oidc_replay_keys (issuer, jti, expires_at) values ($1, $2, $3)"#;

/// Insert a session row.
pub(super) const INSERT_SESSION: &str = r#"insert into sessions
    (id, workspace_id, issuer, subject, claims, created_at, expires_at, revoked_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8)"#;

/// Insert one issued-token row.
pub(super) const INSERT_ISSUED_TOKEN: &str = r#"insert into issued_tokens
    (id, workspace_id, session_id, installation_id, owner, host, repositories,
     permissions, fingerprint, sealed_token, policy_name, policy_version,
     created_at, expires_at, revoked_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"#;

/// The head of audit chain `$1`: its last linked event's sequence and hash.
pub(super) const SELECT_CHAIN_HEAD: &str = r#"select chain_seq, hash from audit_events
    where coalesce(workspace_id, '') = $1 and chain_seq is not null
    order by chain_seq desc
    limit 1"#;

/// Write a mint intent, unresolved.
pub(super) const INSERT_MINT_INTENT: &str = r#"insert into mint_intents
    (id, workspace_id, session_id, request_id, policy_name, policy_version, actor,
     planned, created_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#;

/// Resolve a mint intent: its row goes.
pub(super) const RESOLVE_MINT_INTENT: &str = r#"delete from mint_intents where id = $1"#;

/// A statement with its arguments bound, ready to execute.
pub(super) type Statement<'q, DB> = Query<'q, DB, <DB as Database>::Arguments>;

/// A statement that returns rows of `R`.
pub(super) type RowsOf<'q, DB, R> = QueryAs<'q, DB, R, <DB as Database>::Arguments>;

/// The statements shared by SQLite and PostgreSQL; see the module docs.
pub(super) trait SharedSql: Database
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    Self::Arguments: IntoArguments<Self>,
    for<'q> bool: Encode<'q, Self> + Type<Self>,
    for<'q> i64: Encode<'q, Self> + Type<Self>,
    for<'q> Option<i64>: Encode<'q, Self> + Type<Self>,
    for<'q> String: Encode<'q, Self> + Type<Self>,
    for<'q> Option<String>: Encode<'q, Self> + Type<Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'q> &'q String: Encode<'q, Self> + Type<Self>,
    for<'q> &'q Option<String>: Encode<'q, Self> + Type<Self>,
    for<'r> WorkspaceRow: FromRow<'r, Self::Row>,
    for<'r> SessionRow: FromRow<'r, Self::Row>,
    for<'r> IssuedTokenRow: FromRow<'r, Self::Row>,
    for<'r> AuditChainRow: FromRow<'r, Self::Row>,
    for<'r> SeqRow: FromRow<'r, Self::Row>,
    for<'r> ChainHeadRow: FromRow<'r, Self::Row>,
    for<'r> SigningKeyRow: FromRow<'r, Self::Row>,
    for<'r> MintIntentRow: FromRow<'r, Self::Row>,
{
    /// Rows a statement changed (sqlx has no trait for it).
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Inside a write transaction: make appends to the audit chain `chain` wait for each other
    /// until the transaction ends, across processes, so that two never link to the same head.
    /// The one backend-specific step of [`write_audit`](Self::write_audit).
    async fn lock_audit_chain(conn: &mut Self::Connection, chain: &str) -> StoreResult<()>;

    /// The cheapest round trip.
    fn select_one() -> Statement<'static, Self> {
        sqlx::query(r#"select 1"#)
    }

    // ---- workspaces ----

    /// Insert a workspace; a unique violation means the id is taken ([`on_insert_workspace`]).
    fn insert_workspace(ws: &Workspace) -> Statement<'_, Self> {
        sqlx::query(
            r#"insert into workspaces (id, name, sts_enabled, created_at, updated_at)
               values ($1, $2, $3, $4, $5)"#,
        )
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(ws.sts_enabled)
        .bind(to_ms(ws.created_at))
        .bind(to_ms(ws.updated_at))
    }

    /// One workspace by id.
    fn select_workspace(id: &str) -> RowsOf<'_, Self, WorkspaceRow> {
        sqlx::query_as(
            r#"select id, name, sts_enabled, created_at, updated_at from workspaces where id = $1"#,
        )
        .bind(id)
    }

    /// Every workspace, by id.
    fn select_workspaces() -> RowsOf<'static, Self, WorkspaceRow> {
        sqlx::query_as(
            r#"select id, name, sts_enabled, created_at, updated_at from workspaces order by id"#,
        )
    }

    /// Flip the STS entitlement; returns the changed row, none when the workspace is missing.
    fn update_sts_enabled(
        id: &str,
        enabled: bool,
        at: OffsetDateTime,
    ) -> RowsOf<'_, Self, WorkspaceRow> {
        sqlx::query_as(
            r#"update workspaces set sts_enabled = $1, updated_at = $2 where id = $3
               returning id, name, sts_enabled, created_at, updated_at"#,
        )
        .bind(enabled)
        .bind(to_ms(at))
        .bind(id)
    }

    /// Delete a workspace. Links, policies, sessions and tokens go by `on delete cascade`; the
    /// audit log has no foreign key and stays.
    fn delete_workspace(id: &str) -> Statement<'_, Self> {
        sqlx::query(r#"delete from workspaces where id = $1"#).bind(id)
    }

    // ---- exchange and sessions ----

    /// Inside a transaction: the writes of an exchange. The replay key goes first, so a
    /// duplicate aborts before anything else is written; the caller's dropped transaction rolls
    /// back whatever an error interrupted.
    async fn write_exchange(
        conn: &mut Self::Connection,
        jti: &JtiRecord,
        session: &SessionRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        sqlx::query(INSERT_REPLAY_KEY)
            .bind(&jti.issuer)
            .bind(&jti.jti)
            .bind(to_ms(jti.expires_at))
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Replay
                } else {
                    StoreError::Backend(e)
                }
            })?;
        let row = SessionRow::encode(session)?;
        sqlx::query(INSERT_SESSION)
            .bind(row.id)
            .bind(row.workspace_id)
            .bind(row.issuer)
            .bind(row.subject)
            .bind(row.claims)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.revoked_at)
            .execute(&mut *conn)
            .await
            .map_err(|e| write_err(e, || conflict("session exists"), "workspace"))?;
        Self::write_audit(conn, audit).await
    }

    /// One session by id.
    fn select_session(id: &str) -> RowsOf<'_, Self, SessionRow> {
        sqlx::query_as(
            r#"select id, workspace_id, issuer, subject, claims, created_at, expires_at, revoked_at
               from sessions where id = $1"#,
        )
        .bind(id)
    }

    /// Set `revoked_at` unless already set.
    fn revoke_session(id: &str, at: OffsetDateTime) -> Statement<'_, Self> {
        sqlx::query(r#"update sessions set revoked_at = $1 where id = $2 and revoked_at is null"#)
            .bind(to_ms(at))
            .bind(id)
    }

    // ---- issued tokens ----

    /// Inside a transaction: insert every token row, then the audit event.
    async fn write_issuance(
        conn: &mut Self::Connection,
        tokens: &[IssuedToken],
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        for token in tokens {
            let row = IssuedTokenRow::encode(token)?;
            sqlx::query(INSERT_ISSUED_TOKEN)
                .bind(row.id)
                .bind(row.workspace_id)
                .bind(row.session_id)
                .bind(row.installation_id)
                .bind(row.owner)
                .bind(row.host)
                .bind(row.repositories)
                .bind(row.permissions)
                .bind(row.fingerprint)
                .bind(row.sealed_token)
                .bind(row.policy_name)
                .bind(row.policy_version)
                .bind(row.created_at)
                .bind(row.expires_at)
                .bind(row.revoked_at)
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    write_err(e, || conflict("token id exists"), "workspace or session")
                })?;
        }
        Self::write_audit(conn, audit).await
    }

    /// Inside a transaction: clear the sealed tokens that expired before `now` (nothing left to
    /// revoke), delete the replay keys that did (their tokens are refused anyway), then the rows
    /// past their retention: token rows first, so that a session whose last token row just went
    /// can go in the same purge. A session still named by a kept token row stays (the foreign
    /// key would take the token row with it), however old. The audit log is not touched.
    async fn write_purge(
        conn: &mut Self::Connection,
        now: OffsetDateTime,
        retention: Retention,
    ) -> StoreResult<PurgeStats> {
        let tokens = sqlx::query(r#"delete from issued_tokens where expires_at < $1"#)
            .bind(cutoff_ms(now, retention.tokens))
            .execute(&mut *conn)
            .await?;
        let sessions = sqlx::query(
            r#"delete from sessions
               where expires_at < $1
                 and not exists (select 1 from issued_tokens t where t.session_id = sessions.id)"#,
        )
        .bind(cutoff_ms(now, retention.sessions))
        .execute(&mut *conn)
        .await?;
        let now = to_ms(now);
        let sealed = sqlx::query(
            r#"update issued_tokens set sealed_token = null
               where sealed_token is not null and expires_at < $1"#,
        )
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let replay = sqlx::query(r#"delete from oidc_replay_keys where expires_at < $1"#)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(PurgeStats {
            sealed_tokens_cleared: Self::rows_affected(&sealed),
            replay_keys_deleted: Self::rows_affected(&replay),
            tokens_deleted: Self::rows_affected(&tokens),
            sessions_deleted: Self::rows_affected(&sessions),
        })
    }

    // ---- audit ----

    /// Inside a write transaction: append one audit event to its chain. The one chain append:
    /// every path that writes an audit event (`append_audit`, the exchange and issuance
    /// transactions) comes here. It locks the event's chain, inserts the row and links it after
    /// the chain's head; the row goes in unlinked first because its hash covers `seq`, which
    /// the database assigns, and the transaction makes insert and link one change. The chain
    /// lock is taken after every other lock of the transaction, and what follows it touches
    /// only `audit_events` (no foreign key), so it cannot close a deadlock cycle.
    async fn write_audit(conn: &mut Self::Connection, event: &AuditEvent) -> StoreResult<()> {
        let AuditAppend { chain, mut columns } = AuditAppend::encode(event)?;
        let chain = chain.as_str();
        Self::lock_audit_chain(conn, chain).await?;
        let inserted: SeqRow = sqlx::query_as(
            r#"insert into audit_events (id, time, workspace_id, kind, outcome, body)
               values ($1, $2, $3, $4, $5, $6)
               returning seq"#,
        )
        .bind(&columns.id)
        .bind(columns.time)
        .bind(&columns.workspace_id)
        .bind(&columns.kind)
        .bind(&columns.outcome)
        .bind(&columns.body)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| write_err(e, || conflict("audit event exists"), "workspace"))?;
        // Audit export (`outbox.rs`): queued in this same transaction, so exported iff stored.
        super::outbox::enqueue::<Self>(inserted.seq, chain, event.time)
            .execute(&mut *conn)
            .await?;
        columns.seq = inserted.seq;
        Self::link_audit_row(conn, chain, &columns).await
    }

    /// Inside a write transaction holding the chain's lock: link the stored, unlinked row
    /// `columns` after the head of `chain`.
    async fn link_audit_row(
        conn: &mut Self::Connection,
        chain: &str,
        columns: &AuditColumns,
    ) -> StoreResult<()> {
        let head: Option<ChainHeadRow> = sqlx::query_as(SELECT_CHAIN_HEAD)
            .bind(chain)
            .fetch_optional(&mut *conn)
            .await?;
        let head = match &head {
            Some(ChainHeadRow {
                chain_seq,
                hash: Some(hash),
            }) => Some((*chain_seq, hash.as_str())),
            // Linking to a head without a hash would bless whatever was done to it.
            Some(ChainHeadRow { hash: None, .. }) => {
                return Err(StoreError::Corrupt(format!(
                    "audit chain {chain:?}: the head event has no hash"
                )))
            }
            None => None,
        };
        let link = ChainLink::append(columns, head);
        sqlx::query(
            r#"update audit_events set chain_seq = $1, prev_hash = $2, hash = $3
               where seq = $4"#,
        )
        .bind(link.sequence)
        .bind(&link.prev_hash)
        .bind(&link.hash)
        .bind(columns.seq)
        .execute(&mut *conn)
        .await
        .map_err(|e| write_err(e, || conflict("audit chain position taken"), "audit event"))?;
        Ok(())
    }

    /// Inside a write transaction: link every unlinked row of `chain`, oldest (`seq`) first,
    /// after its head. How rows stored before the chain existed join it; returns how many.
    async fn link_unlinked_rows(conn: &mut Self::Connection, chain: &str) -> StoreResult<u64> {
        Self::lock_audit_chain(conn, chain).await?;
        let rows: Vec<AuditChainRow> = Self::select_unchained(chain, None)
            .fetch_all(&mut *conn)
            .await?;
        let mut linked = 0;
        for row in rows {
            Self::link_audit_row(conn, chain, &row.into_model().columns).await?;
            linked += 1;
        }
        Ok(linked)
    }

    /// The unlinked rows of `chain`, oldest first, at most `rows` (all when `None`).
    fn select_unchained(chain: &str, rows: Option<i64>) -> RowsOf<'_, Self, AuditChainRow> {
        sqlx::query_as(
            r#"select seq, id, time, workspace_id, kind, outcome, body,
                      chain_seq, prev_hash, hash
               from audit_events
               where coalesce(workspace_id, '') = $1 and chain_seq is null
               order by seq
               limit $2"#,
        )
        .bind(chain)
        .bind(rows.unwrap_or(i64::MAX))
    }

    // ---- session signing key ----

    /// Store `candidate` as the active key unless there is one: the partial unique index on
    /// `active` makes the first writer win, later inserts do nothing.
    fn insert_signing_key(candidate: &SigningKeyRecord) -> StoreResult<Statement<'_, Self>> {
        Ok(sqlx::query(
            r#"insert into signing_keys
               (kid, algorithm, private_key_sealed, public_jwk, created_at, active)
               values ($1, $2, $3, $4, $5, true)
               on conflict do nothing"#,
        )
        .bind(&candidate.kid)
        .bind(&candidate.algorithm)
        .bind(&candidate.private_key_sealed)
        .bind(to_json(&candidate.public_jwk, "public jwk")?)
        .bind(to_ms(candidate.created_at)))
    }

    /// The active signing key.
    fn select_active_signing_key() -> RowsOf<'static, Self, SigningKeyRow> {
        sqlx::query_as(
            r#"select kid, algorithm, private_key_sealed, public_jwk, created_at
               from signing_keys where active"#,
        )
    }

    // ---- mint intents and the conditional issuance record ----

    /// Write a mint intent, unresolved.
    fn insert_mint_intent(intent: &MintIntent) -> StoreResult<Statement<'_, Self>> {
        Ok(sqlx::query(INSERT_MINT_INTENT)
            .bind(&intent.id)
            .bind(&intent.workspace_id)
            .bind(&intent.session_id)
            .bind(&intent.request_id)
            .bind(&intent.policy_name)
            .bind(intent.policy_version)
            .bind(to_json(&intent.actor, "intent actor")?)
            .bind(to_json(&intent.planned, "intent planned tokens")?)
            .bind(to_ms(intent.created_at)))
    }

    /// Unresolved intents written before `before`, oldest first.
    fn select_unresolved_intents(before: OffsetDateTime) -> RowsOf<'static, Self, MintIntentRow> {
        sqlx::query_as(
            r#"select id, workspace_id, session_id, request_id, policy_name, policy_version,
                      actor, planned, created_at
               from mint_intents
               where created_at < $1
               order by created_at, id"#,
        )
        .bind(to_ms(before))
    }

    /// Resolve an intent: its row goes, the audit event written with it keeps the outcome.
    /// Changes no row when it was resolved before.
    fn resolve_intent(id: &str) -> Statement<'_, Self> {
        sqlx::query(RESOLVE_MINT_INTENT).bind(id)
    }

    /// End every live session of a workspace.
    fn revoke_workspace_sessions(workspace_id: &str, at: OffsetDateTime) -> Statement<'_, Self> {
        sqlx::query(
            r#"update sessions set revoked_at = $1 where workspace_id = $2 and revoked_at is null"#,
        )
        .bind(to_ms(at))
        .bind(workspace_id)
    }

    /// Inside a write transaction: why the mint may no longer be recorded, if it may not. The
    /// workspace or session may have changed while GitHub was minting (a deletion, a logout);
    /// checked in the transaction that would write the rows, so a change committed before it
    /// is always seen.
    async fn issuance_refusal(
        conn: &mut Self::Connection,
        workspace_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<IssuanceRefusal>> {
        let workspace = Self::select_workspace(workspace_id)
            .fetch_optional(&mut *conn)
            .await?;
        let workspace = workspace.map(WorkspaceRow::into_model).transpose()?;
        if let Some(refusal) = IssuanceRefusal::by_workspace(workspace.map(|w| w.sts_enabled)) {
            return Ok(Some(refusal));
        }
        let session = Self::select_session(session_id)
            .fetch_optional(&mut *conn)
            .await?;
        let session = session.map(SessionRow::into_model).transpose()?;
        Ok(IssuanceRefusal::by_session(
            workspace_id,
            session
                .as_ref()
                .map(|s| (s.workspace_id.as_str(), s.revoked_at.is_some())),
        ))
    }

    /// Inside a write transaction: the mint's rows, its intent's resolution and its event, unless
    /// [`issuance_refusal`](Self::issuance_refusal) refuses (then nothing is written and the
    /// caller rolls back).
    async fn write_mint(
        conn: &mut Self::Connection,
        record: &MintRecord<'_>,
    ) -> StoreResult<Issuance> {
        if let Some(refusal) =
            Self::issuance_refusal(conn, record.workspace_id, record.session_id).await?
        {
            return Ok(Issuance::Refused(refusal));
        }
        if let Some(intent) = record.intent_id {
            // Whether or not a sweep already called this intent orphaned: the record still
            // stands, and the log then shows both. Before the issuance, whose audit append takes
            // the chain lock, which must stay the transaction's last lock.
            Self::resolve_intent(intent).execute(&mut *conn).await?;
        }
        Self::write_issuance(conn, record.tokens, record.audit).await?;
        Ok(Issuance::Recorded)
    }

    /// Inside a write transaction: resolve the open intent `id` with `audit`; `false` (and
    /// nothing written) when it was resolved before. The intent's row lock comes before the
    /// audit chain's, as in [`write_mint`](Self::write_mint).
    async fn write_intent_resolution(
        conn: &mut Self::Connection,
        id: &str,
        audit: &AuditEvent,
    ) -> StoreResult<bool> {
        let done = Self::resolve_intent(id).execute(&mut *conn).await?;
        if Self::rows_affected(&done) == 0 {
            return Ok(false);
        }
        Self::write_audit(conn, audit).await?;
        Ok(true)
    }
}

/// `now` minus `kept` (at least zero), in epoch milliseconds. Saturates instead of
/// overflowing: an absurdly long retention keeps everything rather than failing the purge.
fn cutoff_ms(now: OffsetDateTime, kept: time::Duration) -> i64 {
    let kept = kept.max(time::Duration::ZERO).whole_milliseconds();
    to_ms(now).saturating_sub(i64::try_from(kept).unwrap_or(i64::MAX))
}

/// A `Conflict` saying what clashed.
pub(super) fn conflict(what: &str) -> StoreError {
    StoreError::Conflict(what.to_owned())
}

/// Map an [`insert_workspace`](SharedSql::insert_workspace) error.
pub(super) fn on_insert_workspace(e: sqlx::Error) -> StoreError {
    write_err(e, || conflict("workspace exists"), "workspace")
}

/// Map an [`insert_policy_version`](SharedSql::insert_policy_version) error.
pub(super) fn on_insert_policy(e: sqlx::Error) -> StoreError {
    write_err(e, || conflict("policy version exists"), "workspace")
}

/// The error of a link that lost to another link of the same installation or owner.
pub(super) fn installation_already_linked() -> StoreError {
    conflict("installation already linked")
}

/// What an empty `signing_keys` after [`insert_signing_key`](SharedSql::insert_signing_key)
/// means: the row was deleted behind our back.
pub(super) fn no_active_signing_key() -> StoreError {
    StoreError::Corrupt("no active signing key".to_owned())
}
