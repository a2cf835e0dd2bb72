//! Reading the audit log: a workspace's pages for the audit API, and the chains with their rows
//! for verification and export. Appending (and linking) stays with the writes that call it.

use super::super::rows::{AuditChainRow, AuditRow, ChainKeyRow};
use super::RowsOf;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

/// The audit-reading statements shared by SQLite and PostgreSQL (see the `sql` module docs).
pub(in crate::store) trait AuditSql: Database
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    Self::Arguments: IntoArguments<Self>,
    for<'q> i64: Encode<'q, Self> + Type<Self>,
    for<'q> Option<i64>: Encode<'q, Self> + Type<Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'r> AuditRow: FromRow<'r, Self::Row>,
    for<'r> AuditChainRow: FromRow<'r, Self::Row>,
    for<'r> ChainKeyRow: FromRow<'r, Self::Row>,
{
    /// The chains that hold rows not linked yet (stored before the chain existed).
    fn select_unlinked_chains() -> RowsOf<'static, Self, ChainKeyRow> {
        sqlx::query_as(
            r#"select distinct coalesce(workspace_id, '') as chain from audit_events
               where chain_seq is null"#,
        )
    }

    /// Up to `rows` events of a workspace, newest first, older than the `before` cursor if any.
    fn select_audit_page(
        workspace_id: &str,
        before: Option<i64>,
        rows: i64,
    ) -> RowsOf<'_, Self, AuditRow> {
        sqlx::query_as(
            r#"select seq, body, chain_seq, prev_hash, hash from audit_events
               where workspace_id = $1 and ($2 is null or seq < $2)
               order by seq desc
               limit $3"#,
        )
        .bind(workspace_id)
        .bind(before)
        .bind(rows)
    }

    /// Every chain key (`""` for events of no workspace), in no particular order.
    fn select_chains() -> RowsOf<'static, Self, ChainKeyRow> {
        sqlx::query_as(r#"select distinct coalesce(workspace_id, '') as chain from audit_events"#)
    }

    /// Up to `rows` linked rows of `chain` in chain order, after the position `after`
    /// (`chain_seq`, `seq`) if any. Keyed on both columns, so that rows sharing a `chain_seq`
    /// (possible only if someone dropped the unique index) are all read.
    fn select_chain_page(
        chain: &str,
        after: Option<(i64, i64)>,
        rows: i64,
    ) -> RowsOf<'_, Self, AuditChainRow> {
        let (after_sequence, after_seq) = after.unzip();
        sqlx::query_as(
            r#"select seq, id, time, workspace_id, kind, outcome, body,
                      chain_seq, prev_hash, hash
               from audit_events
               where coalesce(workspace_id, '') = $1 and chain_seq is not null
                 and ($2 is null or chain_seq > $2 or (chain_seq = $2 and seq > $3))
               order by chain_seq, seq
               limit $4"#,
        )
        .bind(chain)
        .bind(after_sequence)
        .bind(after_seq)
        .bind(rows)
    }
}
