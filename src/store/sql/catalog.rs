//! A workspace's catalog: its installation links and its policies, with every version kept.
//! What the admin API configures; no exchange or mint writes here.

use super::super::codec::to_ms;
use super::super::rows::{check_link, InstallationLinkRow, PolicyRow};
use super::super::{InstallationLink, NewPolicy, StoreResult};
use super::{RowsOf, Statement};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};
use time::OffsetDateTime;

/// The link and policy statements shared by SQLite and PostgreSQL (see the `sql` module docs).
pub(in crate::store) trait CatalogSql: Database
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    Self::Arguments: IntoArguments<Self>,
    for<'q> i64: Encode<'q, Self> + Type<Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'q> &'q String: Encode<'q, Self> + Type<Self>,
    for<'r> InstallationLinkRow: FromRow<'r, Self::Row>,
    for<'r> PolicyRow: FromRow<'r, Self::Row>,
{
    /// The link of an installation, in whatever workspace.
    fn select_link_by_installation(
        installation_id: i64,
    ) -> RowsOf<'static, Self, InstallationLinkRow> {
        sqlx::query_as(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where installation_id = $1"#,
        )
        .bind(installation_id)
    }

    /// The workspace's link for `owner`, compared case-insensitively as GitHub logins are.
    fn select_link_by_owner<'q>(
        workspace_id: &'q str,
        owner: &'q str,
    ) -> RowsOf<'q, Self, InstallationLinkRow> {
        sqlx::query_as(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = $1 and lower(owner) = lower($2)"#,
        )
        .bind(workspace_id)
        .bind(owner)
    }

    /// A workspace's links, by owner (lowercase).
    fn select_links(workspace_id: &str) -> RowsOf<'_, Self, InstallationLinkRow> {
        sqlx::query_as(
            r#"select workspace_id, owner, account_id, installation_id,
                      repository_selection, created_at
               from installation_links where workspace_id = $1 order by lower(owner)"#,
        )
        .bind(workspace_id)
    }

    /// Re-link: refresh what GitHub reported, keep the original link time. Returns no row when
    /// the installation is no longer linked to this workspace (on PostgreSQL another process
    /// may have unlinked it since the caller's check; SQLite's write lock rules that out).
    fn update_link(link: &InstallationLink) -> RowsOf<'_, Self, InstallationLinkRow> {
        sqlx::query_as(
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
    }

    /// A new link. A unique violation means another link took the installation or the owner
    /// first; a foreign-key violation, that the workspace is missing.
    fn insert_link(link: &InstallationLink) -> RowsOf<'_, Self, InstallationLinkRow> {
        sqlx::query_as(
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
    }

    /// Remove the workspace's link for `owner` (case-insensitive).
    fn delete_link<'q>(workspace_id: &'q str, owner: &'q str) -> Statement<'q, Self> {
        sqlx::query(
            r#"delete from installation_links
               where workspace_id = $1 and lower(owner) = lower($2)"#,
        )
        .bind(workspace_id)
        .bind(owner)
    }

    /// Inside a write transaction: the stored link of the installation being linked, after
    /// [`check_link`] passed against it and against the workspace's link for the same owner.
    /// `Some` means re-link ([`update_link`](Self::update_link)), `None` a new link.
    async fn checked_existing_link(
        conn: &mut Self::Connection,
        link: &InstallationLink,
    ) -> StoreResult<Option<InstallationLinkRow>> {
        let by_id = Self::select_link_by_installation(link.installation_id)
            .fetch_optional(&mut *conn)
            .await?;
        let by_owner = Self::select_link_by_owner(&link.workspace_id, &link.owner)
            .fetch_optional(&mut *conn)
            .await?;
        check_link(link, by_id.as_ref(), by_owner.as_ref())?;
        Ok(by_id)
    }

    /// Store the next version of a policy: one statement computes and claims previous max
    /// version + 1 (counting deleted versions). Two writers computing the same version meet the
    /// primary key ([`on_insert_policy`](super::on_insert_policy)); the backends serialise puts so that they do not.
    fn insert_policy_version(new: &NewPolicy) -> RowsOf<'_, Self, PolicyRow> {
        sqlx::query_as(
            r#"insert into policy_versions (workspace_id, name, version, source, format, created_at)
               select $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5
               from policy_versions where workspace_id = $1 and name = $2
               returning workspace_id, name, version, source, format, created_at"#,
        )
        .bind(&new.workspace_id)
        .bind(&new.name)
        .bind(&new.source)
        .bind(new.format.as_str())
        .bind(to_ms(new.created_at))
    }

    /// The current version of a policy, none when absent or deleted.
    fn select_current_policy<'q>(
        workspace_id: &'q str,
        name: &'q str,
    ) -> RowsOf<'q, Self, PolicyRow> {
        sqlx::query_as(
            r#"select workspace_id, name, version, source, format, created_at
               from policy_versions
               where workspace_id = $1 and name = $2 and deleted_at is null
                 and version = (select max(version) from policy_versions
                                where workspace_id = $1 and name = $2)"#,
        )
        .bind(workspace_id)
        .bind(name)
    }

    /// Current versions of the workspace's live policies, by name.
    fn select_current_policies(workspace_id: &str) -> RowsOf<'_, Self, PolicyRow> {
        sqlx::query_as(
            r#"select p.workspace_id, p.name, p.version, p.source, p.format, p.created_at
               from policy_versions p
               where p.workspace_id = $1 and p.deleted_at is null
                 and p.version = (select max(q.version) from policy_versions q
                                  where q.workspace_id = p.workspace_id and q.name = p.name)
               order by p.name"#,
        )
        .bind(workspace_id)
    }

    /// Mark the current version deleted, if it is not yet.
    fn delete_current_policy<'q>(
        workspace_id: &'q str,
        name: &'q str,
        at: OffsetDateTime,
    ) -> Statement<'q, Self> {
        sqlx::query(
            r#"update policy_versions set deleted_at = $3
               where workspace_id = $1 and name = $2 and deleted_at is null
                 and version = (select max(version) from policy_versions
                                where workspace_id = $1 and name = $2)"#,
        )
        .bind(workspace_id)
        .bind(name)
        .bind(to_ms(at))
    }
}
