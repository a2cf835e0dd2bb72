//! PostgreSQL backend, for stateless replicas: migrations in `migrations/postgres`.
//!
//! Several broker processes may share one database, so no check-then-write trusts its check:
//! each one is a single statement, locks the row it depends on, or retries when a unique index
//! shows that another process won the race.

use super::codec::{enum_str, is_unique_violation, missing_or_backend, to_json, to_ms, write_err};
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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
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
    pool: PgPool,
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
    Ok(Arc::new(PgStore { pool }))
}

impl PgStore {
    /// One attempt at `link_installation`; `None` when a concurrent link won the race between
    /// our checks and our insert (the caller retries and then sees the winner's row).
    async fn link_once(&self, link: &InstallationLink) -> StoreResult<Option<InstallationLinkRow>> {
        let mut tx = self.pool.begin().await?;
        let by_id = sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where installation_id = $1"#,
        )
        .bind(link.installation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let by_owner = sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = $1 and lower(owner) = lower($2)"#,
        )
        .bind(&link.workspace_id)
        .bind(&link.owner)
        .fetch_optional(&mut *tx)
        .await?;
        check_link(link, by_id.as_ref(), by_owner.as_ref())?;
        let written = if by_id.is_some() {
            // Re-link: refresh what GitHub reported, keep the original link time. The row may
            // have been unlinked since our read: then there is nothing to update and we retry.
            sqlx::query_as::<_, InstallationLinkRow>(
                r#"update installation_links
                   set owner = $1, account_id = $2, repository_selection = $3
                   where installation_id = $4 and workspace_id = $5
                   returning workspace_id, owner, account_id, installation_id,
                             repository_selection, created_at"#,
            )
            .bind(&link.owner)
            .bind(link.account_id)
            .bind(&link.repository_selection)
            .bind(link.installation_id)
            .bind(&link.workspace_id)
            .fetch_optional(&mut *tx)
            .await
        } else {
            sqlx::query_as::<_, InstallationLinkRow>(
                r#"insert into installation_links
                   (workspace_id, owner, account_id, installation_id,
                    repository_selection, created_at)
                   values ($1, $2, $3, $4, $5, $6)
                   returning workspace_id, owner, account_id, installation_id,
                             repository_selection, created_at"#,
            )
            .bind(&link.workspace_id)
            .bind(&link.owner)
            .bind(link.account_id)
            .bind(link.installation_id)
            .bind(&link.repository_selection)
            .bind(to_ms(link.created_at))
            .fetch_optional(&mut *tx)
            .await
        };
        let row = match written {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(None),
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(missing_or_backend(e, "workspace")),
        };
        tx.commit().await?;
        Ok(Some(row))
    }
}

/// Insert one audit event inside `tx`.
async fn insert_audit(
    tx: &mut Transaction<'static, Postgres>,
    event: &AuditEvent,
) -> StoreResult<()> {
    sqlx::query(
        r#"insert into audit_events (id, time, workspace_id, kind, outcome, body)
           values ($1, $2, $3, $4, $5, $6)"#,
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
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(r#"select 1"#).execute(&self.pool).await?;
        Ok(())
    }

    async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()> {
        sqlx::query(
            r#"insert into workspaces (id, name, sts_enabled, created_at, updated_at)
               values ($1, $2, $3, $4, $5)"#,
        )
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(ws.sts_enabled)
        .bind(to_ms(ws.created_at))
        .bind(to_ms(ws.updated_at))
        .execute(&self.pool)
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
            r#"select id, name, sts_enabled, created_at, updated_at from workspaces where id = $1"#,
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
            r#"update workspaces set sts_enabled = $1, updated_at = $2 where id = $3
               returning id, name, sts_enabled, created_at, updated_at"#,
        )
        .bind(enabled)
        .bind(to_ms(at))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(WorkspaceRow::into_model)
        .transpose()
    }

    async fn delete_workspace(&self, id: &str) -> StoreResult<bool> {
        // Links, policies, sessions and tokens go by `on delete cascade`; audit has no FK.
        let done = sqlx::query(r#"delete from workspaces where id = $1"#)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn link_installation(&self, link: &InstallationLink) -> StoreResult<InstallationLink> {
        for _ in 0..RACE_RETRIES {
            if let Some(row) = self.link_once(link).await? {
                return row.into_model();
            }
        }
        Err(StoreError::Conflict(
            "installation already linked".to_owned(),
        ))
    }

    async fn list_installations(&self, workspace_id: &str) -> StoreResult<Vec<InstallationLink>> {
        let rows = sqlx::query_as::<_, InstallationLinkRow>(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = $1 order by lower(owner)"#,
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
               from installation_links where workspace_id = $1 and lower(owner) = lower($2)"#,
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
               where workspace_id = $1 and lower(owner) = lower($2)"#,
        )
        .bind(workspace_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
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
        let row = sqlx::query_as::<_, PolicyRow>(
            r#"insert into policy_versions (workspace_id, name, version, source, format, created_at)
               select $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5
               from policy_versions where workspace_id = $1 and name = $2
               returning workspace_id, name, version, source, format, created_at"#,
        )
        .bind(&new.workspace_id)
        .bind(&new.name)
        .bind(&new.source)
        .bind(&new.format)
        .bind(to_ms(new.created_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            write_err(
                e,
                || StoreError::Conflict("policy version exists".to_owned()),
                "workspace",
            )
        })?;
        tx.commit().await?;
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
               where workspace_id = $1 and name = $2 and deleted_at is null
                 and version = (select max(version) from policy_versions
                                where workspace_id = $1 and name = $2)"#,
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
               where p.workspace_id = $1 and p.deleted_at is null
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
            r#"update policy_versions set deleted_at = $3
               where workspace_id = $1 and name = $2 and deleted_at is null
                 and version = (select max(version) from policy_versions
                                where workspace_id = $1 and name = $2)"#,
        )
        .bind(workspace_id)
        .bind(name)
        .bind(to_ms(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_exchange(
        &self,
        jti: &JtiRecord,
        session: &SessionRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The replay key goes first: a duplicate aborts before anything else is written, and
        // dropping `tx` rolls back.
        sqlx::query(
            r#"insert into oidc_replay_keys (issuer, jti, expires_at) values ($1, $2, $3)"#,
        )
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
               values ($1, $2, $3, $4, $5, $6, $7, $8)"#,
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
               from sessions where id = $1"#,
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(SessionRow::into_model)
        .transpose()
    }

    async fn revoke_session(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let done = sqlx::query(
            r#"update sessions set revoked_at = $1 where id = $2 and revoked_at is null"#,
        )
        .bind(to_ms(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_issuance(&self, tokens: &[IssuedToken], audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
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
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"#,
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
        // `limit null` is `limit all` in PostgreSQL.
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

    async fn purge_expired(&self, now: OffsetDateTime) -> StoreResult<PurgeStats> {
        let now = to_ms(now);
        let mut tx = self.pool.begin().await?;
        let sealed = sqlx::query(
            r#"update issued_tokens set sealed_token = null
               where sealed_token is not null and expires_at < $1"#,
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let replay = sqlx::query(r#"delete from oidc_replay_keys where expires_at < $1"#)
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
        let mut tx = self.pool.begin().await?;
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
               where workspace_id = $1 and ($2::bigint is null or seq < $2)
               order by seq desc
               limit $3"#,
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
        // The partial unique index on `active` makes the first writer win: a racing insert
        // waits for the winner's commit, then does nothing, and everyone reads the winner.
        sqlx::query(
            r#"insert into signing_keys
               (kid, algorithm, private_key_sealed, public_jwk, created_at, active)
               values ($1, $2, $3, $4, $5, true)
               on conflict do nothing"#,
        )
        .bind(&candidate.kid)
        .bind(&candidate.algorithm)
        .bind(&candidate.private_key_sealed)
        .bind(to_json(&candidate.public_jwk, "public jwk")?)
        .bind(to_ms(candidate.created_at))
        .execute(&self.pool)
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
