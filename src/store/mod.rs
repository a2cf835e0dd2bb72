//! Persistence: one `Store` trait, two sqlx backends (SQLite, PostgreSQL), each with its own
//! migrations under `migrations/<backend>`, run by [`connect`].
//!
//! All timestamps are stored as BIGINT epoch milliseconds (UTC). The store knows nothing about HTTP.

mod batch;
mod codec;
#[cfg(test)]
mod conformance;
mod keys;
mod model;
mod outbox;
mod postgres;
mod rows;
mod shared_impl;
mod sql;
mod sqlite;
mod unavailable;

pub use keys::{SigningKeyRotation, StoredSigningKey};
pub use model::*;
pub use outbox::{AuditOutbox, Claim, OutboxBacklog, OutboxEntry, Retry};

use crate::audit::chain::ChainRow;
use crate::audit::AuditEvent;
use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;

/// Largest page `list_audit` returns (and the smallest is 1), whatever the caller asks: bounds
/// the memory and time one admin request can claim.
pub const MAX_AUDIT_PAGE: u32 = 500;

/// What can go wrong in the store, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (workspace id exists, installation linked to another workspace).
    /// The string says what clashed, without secrets.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The OIDC token's replay key was recorded before.
    #[error("token already used")]
    Replay,
    /// The row the write depends on does not exist (for example the workspace).
    #[error("not found: {0}")]
    NotFound(String),
    /// The database URL is not one this build can use.
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    /// A stored value could not be decoded (JSON column, enum string).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Migrations failed.
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error")]
    Backend(#[source] sqlx::Error),
    /// The database could not be reached or opened at start: where and why, never a password.
    #[error("{0}")]
    Unavailable(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the broker persists. Both backends pass the suite in `conformance.rs`. The audit
/// export outbox's operations are in [`AuditOutbox`] (`outbox.rs`), key rotation's in
/// [`SigningKeyRotation`] (`keys.rs`).
#[async_trait]
pub trait Store: AuditOutbox + SigningKeyRotation + Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    // ---- workspaces ----
    /// Insert; `Conflict` if the id exists.
    async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()>;
    /// One workspace.
    async fn get_workspace(&self, id: &str) -> StoreResult<Option<Workspace>>;
    /// All workspaces, ordered by id.
    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>>;
    /// Flip the STS entitlement; `None` if no such workspace.
    async fn set_workspace_sts_enabled(
        &self,
        id: &str,
        enabled: bool,
        at: OffsetDateTime,
    ) -> StoreResult<Option<Workspace>>;
    /// Delete the workspace with its installation links, policies, sessions and token rows
    /// (the audit log is kept). `false` if it did not exist.
    async fn delete_workspace(&self, id: &str) -> StoreResult<bool>;

    // ---- installation links ----
    /// Link an installation. Re-linking the same installation to the same workspace updates the
    /// row. `Conflict` when the installation is linked to another workspace, or when the workspace
    /// already links a different installation for the same owner (case-insensitive).
    /// `NotFound` when the workspace does not exist.
    async fn link_installation(&self, link: &InstallationLink) -> StoreResult<InstallationLink>;
    /// Links of a workspace, ordered by owner (lowercase).
    async fn list_installations(&self, workspace_id: &str) -> StoreResult<Vec<InstallationLink>>;
    /// The link for `owner` (case-insensitive) in the workspace.
    async fn find_installation(
        &self,
        workspace_id: &str,
        owner: &str,
    ) -> StoreResult<Option<InstallationLink>>;
    /// Remove the link for `owner` (case-insensitive). `false` if there was none.
    async fn unlink_installation(&self, workspace_id: &str, owner: &str) -> StoreResult<bool>;

    // ---- policies ----
    /// Store a new version (previous max version + 1, counting deleted ones, starting at 1).
    /// `NotFound` when the workspace does not exist.
    async fn put_policy(&self, new: &NewPolicy) -> StoreResult<StoredPolicy>;
    /// The current version, or `None` if absent or deleted.
    async fn get_policy(&self, workspace_id: &str, name: &str)
        -> StoreResult<Option<StoredPolicy>>;
    /// Current versions of all live policies of a workspace, ordered by name.
    async fn list_policies(&self, workspace_id: &str) -> StoreResult<Vec<StoredPolicy>>;
    /// Mark the policy deleted (history kept). `false` if it was absent or already deleted.
    async fn delete_policy(
        &self,
        workspace_id: &str,
        name: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;

    // ---- exchange ----
    /// In one transaction: record the OIDC token's replay key, create the session, append the
    /// audit event. `Replay` (and nothing written) if the replay key was recorded before, also by
    /// another process on the same database.
    async fn record_exchange(
        &self,
        jti: &JtiRecord,
        session: &SessionRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// One session.
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    /// Set `revoked_at` if not yet set. `true` if this call revoked it.
    async fn revoke_session(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool>;

    // ---- issued tokens ----
    /// In one transaction: insert the token rows and append the audit event. On error nothing
    /// is written.
    async fn record_issuance(&self, tokens: &[IssuedToken], audit: &AuditEvent) -> StoreResult<()>;
    /// Token rows of a workspace matching the filter, newest first.
    async fn list_tokens(
        &self,
        workspace_id: &str,
        filter: &TokenFilter,
    ) -> StoreResult<Vec<IssuedToken>>;
    /// Set `revoked_at` on the given ids that are not revoked yet; returns how many changed.
    async fn mark_tokens_revoked(&self, ids: &[String], at: OffsetDateTime) -> StoreResult<u64>;
    /// Housekeeping, in one transaction: clear `sealed_token` of tokens expired before `now`
    /// (nothing left to revoke), delete replay keys whose `expires_at` is before `now`, delete
    /// token rows that expired more than `retention.tokens` before `now`, then session rows that
    /// expired more than `retention.sessions` before `now` and that no token row names any more.
    /// The audit log is never purged.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        retention: Retention,
    ) -> StoreResult<PurgeStats>;

    // ---- audit ----
    /// Append one event to its workspace's hash chain (see `audit::chain`). Appends to one
    /// chain are serialised, also across processes on PostgreSQL, so the chain stays a chain.
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Events of a workspace with their chain links, newest first; `before` is a cursor from a
    /// previous page (only events older than it are returned). `limit` is clamped to
    /// `1..=MAX_AUDIT_PAGE`.
    async fn list_audit(
        &self,
        workspace_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> StoreResult<AuditPage>;
    /// Every audit chain key: the workspace ids that have events, and `""` if events of no
    /// workspace exist. Sorted.
    async fn audit_chains(&self) -> StoreResult<Vec<String>>;
    /// Up to `limit` rows of chain `chain` with every stored column, in chain order, after the
    /// position `after` (`chain_seq`, `seq` of the last row of the previous page). Rows not
    /// linked yet are left out: see [`unchained_audit_rows`](Self::unchained_audit_rows).
    async fn audit_chain_page(
        &self,
        chain: &str,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> StoreResult<Vec<ChainRow>>;
    /// Up to `limit` rows of chain `chain` not linked into it, oldest first.
    async fn unchained_audit_rows(&self, chain: &str, limit: u32) -> StoreResult<Vec<ChainRow>>;

    // ---- session signing key ----
    /// Return the active signing key; if there is none, store `candidate` and return it. Two
    /// processes racing here end up with the same key.
    async fn load_or_store_signing_key(
        &self,
        candidate: &SigningKeyRecord,
    ) -> StoreResult<SigningKeyRecord>;

    // ---- mint intents and the conditional issuance record ----
    /// Write an unresolved intent; `Conflict` if the id exists. Resolving an intent deletes it:
    /// the audit event written in the same transaction keeps the outcome.
    async fn record_mint_intent(&self, intent: &MintIntent) -> StoreResult<()>;
    /// In one transaction: refuse (writing nothing) unless the workspace exists and is entitled
    /// and the session exists in it and is not revoked; otherwise insert the token rows, resolve
    /// the intent and append the audit event. A workspace deletion or logout committed before
    /// this transaction is always seen, so a mint never records tokens such a change would have
    /// had to revoke. On error nothing is written.
    async fn record_mint(&self, record: &MintRecord<'_>) -> StoreResult<Issuance>;
    /// In one transaction: resolve the intent and append `audit`, only if the intent was
    /// unresolved. `false` (nothing written) when it was resolved before, also by another
    /// process.
    async fn resolve_mint_intent(&self, intent_id: &str, audit: &AuditEvent) -> StoreResult<bool>;
    /// Unresolved intents written before `before`, oldest first.
    async fn unresolved_mint_intents(&self, before: OffsetDateTime)
        -> StoreResult<Vec<MintIntent>>;
    /// Set `revoked_at` on every live session of the workspace; returns how many.
    async fn revoke_workspace_sessions(
        &self,
        workspace_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<u64>;

    /// Every stored version of a policy (deleted ones too, for history), newest first; empty
    /// when the name was never used.
    async fn policy_versions(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> StoreResult<Vec<StoredPolicy>>;
}

/// Connect to `url` (`sqlite://…` or `postgres://…`/`postgresql://…`), run the backend's
/// migrations and link audit rows stored before the chain existed. SQLite files are created
/// when missing.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    let connected = if url.starts_with("sqlite:") {
        sqlite::connect(url, max_connections).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::connect(url, max_connections).await
    } else {
        Err(unsupported_scheme(url))
    };
    match connected {
        Err(error) => Err(unavailable::diagnose(url, error).await),
        connected => connected,
    }
}

/// Open the existing database at `url` as it is, for reading: no migration, no chain linking,
/// no file created (a mistyped SQLite path must not verify as an empty, intact audit log), and
/// reads only (a read-only SQLite connection; PostgreSQL transactions default to read only).
/// For `sts-broker audit verify`, which examines the database and must not change it.
pub async fn open_existing(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        sqlite::open_existing(url).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::open_existing(url).await
    } else {
        Err(unsupported_scheme(url))
    }
}

fn unsupported_scheme(url: &str) -> StoreError {
    let scheme = url.split(':').next().unwrap_or_default();
    StoreError::UnsupportedUrl(format!("scheme `{scheme}`"))
}

/// Say that `linked` audit rows were linked into their chains at start: expected once, after the
/// upgrade that introduced the chain (rows older than it); later only if a broker older than the
/// chain wrote to this database, or someone removed rows' chain positions.
fn report_linked_at_start(linked: u64) {
    if linked > 0 {
        tracing::warn!(
            audit.linked = linked,
            "linked {linked} audit events that had no place in their hash chain (expected once, \
             after upgrading to the audit chain)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_is_unsupported_and_only_the_scheme_is_echoed() {
        let err = connect("mysql://root:hunter2@db/sts", 1)
            .await
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "unsupported database url: scheme `mysql`");
    }
}
