//! SQLite backend (the default): one file, WAL, migrations in `migrations/sqlite`.

use super::codec::{enum_str, is_unique_violation, to_json, to_ms, write_err};
use super::rows::{
    all, audit_page, check_link, AuditRow, InstallationLinkRow, IssuedTokenRow, PolicyRow,
    SessionRow, SigningKeyRow, WorkspaceRow,
};
use super::{
    AuditPage, InstallationLink, IssuedToken, JtiRecord, NewPolicy, PurgeStats, SessionRecord,
    SigningKeyRecord, Store, StoreError, StoreResult, StoredPolicy, TokenFilter, Workspace,
    MAX_AUDIT_PAGE,
};
use crate::audit::AuditEvent;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
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
    pool: SqlitePool,
    /// Writes: one connection, so this process's writers queue in the pool (first come, first
    /// served) instead of in SQLite's busy handler, whose sleeps grow to 100 ms per retry and
    /// gave p99 write latencies of ~250 ms under 16 concurrent clients. Other processes on the
    /// same file still meet [`BUSY_TIMEOUT`].
    writer: SqlitePool,
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
            .connect_with(options)
            .await?
    };
    sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
    Ok(Arc::new(SqliteStore { pool, writer }))
}

impl SqliteStore {
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with(BEGIN_WRITE).await?)
    }
}

/// Insert one audit event inside `tx`.
async fn insert_audit(
    tx: &mut Transaction<'static, Sqlite>,
    event: &AuditEvent,
) -> StoreResult<()> {
    sqlx::query(
        r#"insert into audit_events (id, time, workspace_id, kind, outcome, body)
           values (?, ?, ?, ?, ?, ?)"#,
    )
    .bind(&event.id)
    .bind(to_ms(event.time))
    .bind(&event.workspace_id)
    .bind(enum_str(&event.kind, "audit kind")?)
    .bind(enum_str(&event.outcome, "audit outcome")?)
    .bind(to_json(event, "audit event")?)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        write_err(
            e,
            || StoreError::Conflict("audit event exists".to_owned()),
            "workspace",
        )
    })?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(r#"select 1"#).execute(&self.pool).await?;
        Ok(())
    }

    async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()> {
        sqlx::query(
            r#"insert into workspaces (id, name, sts_enabled, created_at, updated_at)
               values (?, ?, ?, ?, ?)"#,
        )
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(ws.sts_enabled)
        .bind(to_ms(ws.created_at))
        .bind(to_ms(ws.updated_at))
        .execute(&self.writer)
        .await
        .map_err(|e| {
            write_err(
                e,
                || StoreError::Conflict("workspace exists".to_owned()),
                "workspace",
            )
        })?;
        Ok(())
    }

    async fn get_workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        sqlx::query_as::<_, WorkspaceRow>(
            r#"select id, name, sts_enabled, created_at, updated_at from workspaces where id = ?"#,
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(WorkspaceRow::into_model)
        .transpose()
    }

    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let rows = sqlx::query_as::<_, WorkspaceRow>(
            r#"select id, name, sts_enabled, created_at, updated_at from workspaces order by id"#,
        )
        .fetch_all(&self.pool)
        .await?;
        all(rows, WorkspaceRow::into_model)
    }

    async fn set_workspace_sts_enabled(
        &self,
        id: &str,
        enabled: bool,
        at: OffsetDateTime,
    ) -> StoreResult<Option<Workspace>> {
        sqlx::query_as::<_, WorkspaceRow>(
            r#"update workspaces set sts_enabled = ?, updated_at = ? where id = ?
               returning id, name, sts_enabled, created_at, updated_at"#,
        )
        .bind(enabled)
        .bind(to_ms(at))
        .bind(id)
        .fetch_optional(&self.writer)
        .await?
        .map(WorkspaceRow::into_model)
        .transpose()
    }

    async fn delete_workspace(&self, id: &str) -> StoreResult<bool> {
        // Links, policies, sessions and tokens go by `on delete cascade`; audit has no FK.
        let done = sqlx::query(r#"delete from workspaces where id = ?"#)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn link_installation(&self, link: &InstallationLink) -> StoreResult<InstallationLink> {
        let mut tx = self.begin_write().await?;
        let by_id = sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where installation_id = ?"#,
        )
        .bind(link.installation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let by_owner = sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = ? and lower(owner) = lower(?)"#,
        )
        .bind(&link.workspace_id)
        .bind(&link.owner)
        .fetch_optional(&mut *tx)
        .await?;
        check_link(link, by_id.as_ref(), by_owner.as_ref())?;
        let row = if by_id.is_some() {
            // Re-link: refresh what GitHub reported, keep the original link time.
            sqlx::query_as::<_, InstallationLinkRow>(
                r#"update installation_links
                   set owner = ?, account_id = ?, repository_selection = ?
                   where installation_id = ?
                   returning workspace_id, owner, account_id, installation_id,
                             repository_selection, created_at"#,
            )
            .bind(&link.owner)
            .bind(link.account_id)
            .bind(&link.repository_selection)
            .bind(link.installation_id)
            .fetch_one(&mut *tx)
            .await?
        } else {
            sqlx::query_as::<_, InstallationLinkRow>(
                r#"insert into installation_links
                   (workspace_id, owner, account_id, installation_id,
                    repository_selection, created_at)
                   values (?, ?, ?, ?, ?, ?)
                   returning workspace_id, owner, account_id, installation_id,
                             repository_selection, created_at"#,
            )
            .bind(&link.workspace_id)
            .bind(&link.owner)
            .bind(link.account_id)
            .bind(link.installation_id)
            .bind(&link.repository_selection)
            .bind(to_ms(link.created_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                let conflict = || StoreError::Conflict("installation already linked".to_owned());
                write_err(e, conflict, "workspace")
            })?
        };
        tx.commit().await?;
        row.into_model()
    }

    async fn list_installations(&self, workspace_id: &str) -> StoreResult<Vec<InstallationLink>> {
        let rows = sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = ? order by lower(owner)"#,
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        all(rows, InstallationLinkRow::into_model)
    }

    async fn find_installation(
        &self,
        workspace_id: &str,
        owner: &str,
    ) -> StoreResult<Option<InstallationLink>> {
        sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = ? and lower(owner) = lower(?)"#,
        )
        .bind(workspace_id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?
        .map(InstallationLinkRow::into_model)
        .transpose()
    }

    async fn unlink_installation(&self, workspace_id: &str, owner: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            r#"delete from installation_links
               where workspace_id = ? and lower(owner) = lower(?)"#,
        )
        .bind(workspace_id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_policy(&self, new: &NewPolicy) -> StoreResult<StoredPolicy> {
        // One statement computes and claims the next version; SQLite serialises writers.
        let row = sqlx::query_as::<_, PolicyRow>(
            r#"insert into policy_versions (workspace_id, name, version, source, format, created_at)
               select ?1, ?2, coalesce(max(version), 0) + 1, ?3, ?4, ?5
               from policy_versions where workspace_id = ?1 and name = ?2
               returning workspace_id, name, version, source, format, created_at"#,
        )
        .bind(&new.workspace_id)
        .bind(&new.name)
        .bind(&new.source)
        .bind(&new.format)
        .bind(to_ms(new.created_at))
        .fetch_one(&self.writer)
        .await
        .map_err(|e| {
            write_err(
                e,
                || StoreError::Conflict("policy version exists".to_owned()),
                "workspace",
            )
        })?;
        row.into_model()
    }

    async fn get_policy(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> StoreResult<Option<StoredPolicy>> {
        sqlx::query_as::<_, PolicyRow>(
            r#"select workspace_id, name, version, source, format, created_at
               from policy_versions
               where workspace_id = ?1 and name = ?2 and deleted_at is null
                 and version = (select max(version) from policy_versions
                                where workspace_id = ?1 and name = ?2)"#,
        )
        .bind(workspace_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(PolicyRow::into_model)
        .transpose()
    }

    async fn list_policies(&self, workspace_id: &str) -> StoreResult<Vec<StoredPolicy>> {
        let rows = sqlx::query_as::<_, PolicyRow>(
            r#"select p.workspace_id, p.name, p.version, p.source, p.format, p.created_at
               from policy_versions p
               where p.workspace_id = ?1 and p.deleted_at is null
                 and p.version = (select max(q.version) from policy_versions q
                                  where q.workspace_id = p.workspace_id and q.name = p.name)
               order by p.name"#,
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        all(rows, PolicyRow::into_model)
    }

    async fn delete_policy(
        &self,
        workspace_id: &str,
        name: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            r#"update policy_versions set deleted_at = ?3
               where workspace_id = ?1 and name = ?2 and deleted_at is null
                 and version = (select max(version) from policy_versions
                                where workspace_id = ?1 and name = ?2)"#,
        )
        .bind(workspace_id)
        .bind(name)
        .bind(to_ms(at))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_exchange(
        &self,
        jti: &JtiRecord,
        session: &SessionRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        // The replay key goes first: a duplicate aborts before anything else is written, and
        // dropping `tx` rolls back.
        sqlx::query(r#"insert into oidc_replay_keys (issuer, jti, expires_at) values (?, ?, ?)"#)
            .bind(&jti.issuer)
            .bind(&jti.jti)
            .bind(to_ms(jti.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Replay
                } else {
                    StoreError::Backend(e)
                }
            })?;
        sqlx::query(
            r#"insert into sessions
               (id, workspace_id, issuer, subject, claims, created_at, expires_at, revoked_at)
               values (?, ?, ?, ?, ?, ?, ?, ?)"#,
        )
        .bind(&session.id)
        .bind(&session.workspace_id)
        .bind(&session.issuer)
        .bind(&session.subject)
        .bind(to_json(&session.claims, "session claims")?)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.expires_at))
        .bind(session.revoked_at.map(to_ms))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            write_err(
                e,
                || StoreError::Conflict("session exists".to_owned()),
                "workspace",
            )
        })?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        sqlx::query_as::<_, SessionRow>(
            r#"select id, workspace_id, issuer, subject, claims, created_at, expires_at, revoked_at
               from sessions where id = ?"#,
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(SessionRow::into_model)
        .transpose()
    }

    async fn revoke_session(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let done = sqlx::query(
            r#"update sessions set revoked_at = ? where id = ? and revoked_at is null"#,
        )
        .bind(to_ms(at))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_issuance(&self, tokens: &[IssuedToken], audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for token in tokens {
            let repositories = token
                .repositories
                .as_ref()
                .map(|r| to_json(r, "token repositories"))
                .transpose()?;
            sqlx::query(
                r#"insert into issued_tokens
                   (id, workspace_id, session_id, installation_id, owner, host, repositories,
                    permissions, fingerprint, sealed_token, policy_name, policy_version,
                    created_at, expires_at, revoked_at)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
            )
            .bind(&token.id)
            .bind(&token.workspace_id)
            .bind(&token.session_id)
            .bind(token.installation_id)
            .bind(&token.owner)
            .bind(&token.host)
            .bind(repositories)
            .bind(to_json(&token.permissions, "token permissions")?)
            .bind(&token.fingerprint)
            .bind(&token.sealed_token)
            .bind(&token.policy_name)
            .bind(token.policy_version)
            .bind(to_ms(token.created_at))
            .bind(to_ms(token.expires_at))
            .bind(token.revoked_at.map(to_ms))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                write_err(
                    e,
                    || StoreError::Conflict("token id exists".to_owned()),
                    "workspace or session",
                )
            })?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
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
        // A negative LIMIT means no limit in SQLite.
        let rows = sqlx::query_as::<_, IssuedTokenRow>(
            r#"select id, workspace_id, session_id, installation_id, owner, host, repositories,
                      permissions, fingerprint, sealed_token, policy_name, policy_version,
                      created_at, expires_at, revoked_at
               from issued_tokens
               where workspace_id = ?1
                 and (?2 is null
                      or (?2 = 'revoked' and revoked_at is not null)
                      or (?2 = 'active' and revoked_at is null and expires_at > ?3)
                      or (?2 = 'expired' and revoked_at is null and expires_at <= ?3))
                 and (?4 is null or session_id = ?4)
                 and (?5 is null or id in (select value from json_each(?5)))
               order by created_at desc, id desc
               limit coalesce(?6, -1)"#,
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
            r#"update issued_tokens set revoked_at = ?1
               where revoked_at is null and id in (select value from json_each(?2))"#,
        )
        .bind(to_ms(at))
        .bind(to_json(ids, "token ids")?)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> StoreResult<PurgeStats> {
        let now = to_ms(now);
        let mut tx = self.begin_write().await?;
        let sealed = sqlx::query(
            r#"update issued_tokens set sealed_token = null
               where sealed_token is not null and expires_at < ?"#,
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let replay = sqlx::query(r#"delete from oidc_replay_keys where expires_at < ?"#)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PurgeStats {
            sealed_tokens_cleared: sealed.rows_affected(),
            replay_keys_deleted: replay.rows_affected(),
        })
    }

    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        workspace_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> StoreResult<AuditPage> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        // One row more than asked tells whether another page follows.
        let rows = sqlx::query_as::<_, AuditRow>(
            r#"select seq, body from audit_events
               where workspace_id = ?1 and (?2 is null or seq < ?2)
               order by seq desc
               limit ?3"#,
        )
        .bind(workspace_id)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        audit_page(rows, limit)
    }

    async fn load_or_store_signing_key(
        &self,
        candidate: &SigningKeyRecord,
    ) -> StoreResult<SigningKeyRecord> {
        // The partial unique index on `active` makes the first writer win; later inserts do
        // nothing and everyone reads the winner.
        sqlx::query(
            r#"insert into signing_keys
               (kid, algorithm, private_key_sealed, public_jwk, created_at, active)
               values (?, ?, ?, ?, ?, 1)
               on conflict do nothing"#,
        )
        .bind(&candidate.kid)
        .bind(&candidate.algorithm)
        .bind(&candidate.private_key_sealed)
        .bind(to_json(&candidate.public_jwk, "public jwk")?)
        .bind(to_ms(candidate.created_at))
        .execute(&self.writer)
        .await?;
        let row = sqlx::query_as::<_, SigningKeyRow>(
            r#"select kid, algorithm, private_key_sealed, public_jwk, created_at
               from signing_keys where active"#,
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::Corrupt("no active signing key".to_owned()));
        };
        row.into_model()
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
