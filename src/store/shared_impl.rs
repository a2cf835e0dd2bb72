//! The [`Store`](super::Store) methods both backends implement the same way but for the pool
//! they run on: reads on the read pool, single statements on the write pool, batched writes
//! through the backend's `Writer`.

/// Implements [`Store`](super::Store) for `$store` on database `$db`: the methods both backends
/// share, then `$own`, the ones the backend says itself (its locks, transactions and id lists).
/// `$read` and `$write` name the store's pools (the same one on PostgreSQL). A macro, like
/// `outbox_impl!` and `shared_writes!`: the futures of `SharedSql`'s generic methods can only be
/// named `Send` for a concrete backend, and `#[async_trait]` must see the whole impl.
macro_rules! store_impl {
    ($store:ty, $db:ident, $name:literal, read: $read:ident, write: $write:ident; $($own:tt)*) => {
        // An unnamed const scopes the imports the shared methods need to this expansion.
        const _: () = {
            use $crate::store::rows::{
                all, audit_page, chain_keys, page_rows, AuditChainRow, InstallationLinkRow,
                MintIntentRow, PolicyRow, SessionRow, WorkspaceRow,
            };
            use $crate::store::MAX_AUDIT_PAGE;

            #[async_trait::async_trait]
            impl Store for $store {
                fn backend(&self) -> &'static str {
                    $name
                }

                async fn ping(&self) -> StoreResult<()> {
                    $db::select_one().execute(&self.$read).await?;
                    Ok(())
                }

                async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()> {
                    $db::insert_workspace(ws)
                        .execute(&self.$write)
                        .await
                        .map_err(on_insert_workspace)?;
                    Ok(())
                }

                async fn get_workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
                    let row = $db::select_workspace(id)
                        .fetch_optional(&self.$read)
                        .await?;
                    row.map(WorkspaceRow::into_model).transpose()
                }

                async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
                    let rows = $db::select_workspaces().fetch_all(&self.$read).await?;
                    all(rows, WorkspaceRow::into_model)
                }

                async fn set_workspace_sts_enabled(
                    &self,
                    id: &str,
                    enabled: bool,
                    at: OffsetDateTime,
                ) -> StoreResult<Option<Workspace>> {
                    let row = $db::update_sts_enabled(id, enabled, at)
                        .fetch_optional(&self.$write)
                        .await?;
                    row.map(WorkspaceRow::into_model).transpose()
                }

                async fn delete_workspace(&self, id: &str) -> StoreResult<bool> {
                    let done = $db::delete_workspace(id).execute(&self.$write).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn list_installations(
                    &self,
                    workspace_id: &str,
                ) -> StoreResult<Vec<InstallationLink>> {
                    let rows = $db::select_links(workspace_id)
                        .fetch_all(&self.$read)
                        .await?;
                    all(rows, InstallationLinkRow::into_model)
                }

                async fn find_installation(
                    &self,
                    workspace_id: &str,
                    owner: &str,
                ) -> StoreResult<Option<InstallationLink>> {
                    let row = $db::select_link_by_owner(workspace_id, owner)
                        .fetch_optional(&self.$read)
                        .await?;
                    row.map(InstallationLinkRow::into_model).transpose()
                }

                async fn unlink_installation(
                    &self,
                    workspace_id: &str,
                    owner: &str,
                ) -> StoreResult<bool> {
                    let done = $db::delete_link(workspace_id, owner)
                        .execute(&self.$write)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn get_policy(
                    &self,
                    workspace_id: &str,
                    name: &str,
                ) -> StoreResult<Option<StoredPolicy>> {
                    let row = $db::select_current_policy(workspace_id, name)
                        .fetch_optional(&self.$read)
                        .await?;
                    row.map(PolicyRow::into_model).transpose()
                }

                async fn list_policies(
                    &self,
                    workspace_id: &str,
                ) -> StoreResult<Vec<StoredPolicy>> {
                    let rows = $db::select_current_policies(workspace_id)
                        .fetch_all(&self.$read)
                        .await?;
                    all(rows, PolicyRow::into_model)
                }

                async fn delete_policy(
                    &self,
                    workspace_id: &str,
                    name: &str,
                    at: OffsetDateTime,
                ) -> StoreResult<bool> {
                    let done = $db::delete_current_policy(workspace_id, name, at)
                        .execute(&self.$write)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn record_exchange(
                    &self,
                    jti: &JtiRecord,
                    session: &SessionRecord,
                    audit: &AuditEvent,
                ) -> StoreResult<()> {
                    // The replay key's primary key decides a race, between processes too:
                    // the second insert fails as a replay.
                    self.writes.exchange(jti, session, audit).await
                }

                async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
                    let row = $db::select_session(id).fetch_optional(&self.$read).await?;
                    row.map(SessionRow::into_model).transpose()
                }

                async fn revoke_session(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool> {
                    let done = $db::revoke_session(id, at).execute(&self.$write).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn record_issuance(
                    &self,
                    tokens: &[IssuedToken],
                    audit: &AuditEvent,
                ) -> StoreResult<()> {
                    self.writes.issuance(tokens, audit).await
                }

                async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
                    self.writes.audit(event).await
                }

                async fn list_audit(
                    &self,
                    workspace_id: &str,
                    limit: u32,
                    before: Option<i64>,
                ) -> StoreResult<AuditPage> {
                    let limit = limit.clamp(1, MAX_AUDIT_PAGE);
                    let rows = $db::select_audit_page(workspace_id, before, page_rows(limit))
                        .fetch_all(&self.$read)
                        .await?;
                    audit_page(rows, limit)
                }

                async fn audit_chains(&self) -> StoreResult<Vec<String>> {
                    let rows = $db::select_chains().fetch_all(&self.$read).await?;
                    Ok(chain_keys(rows))
                }

                async fn audit_chain_page(
                    &self,
                    chain: &str,
                    after: Option<(i64, i64)>,
                    limit: u32,
                ) -> StoreResult<Vec<ChainRow>> {
                    let rows = $db::select_chain_page(chain, after, i64::from(limit))
                        .fetch_all(&self.$read)
                        .await?;
                    Ok(rows.into_iter().map(AuditChainRow::into_model).collect())
                }

                async fn unchained_audit_rows(
                    &self,
                    chain: &str,
                    limit: u32,
                ) -> StoreResult<Vec<ChainRow>> {
                    let rows = $db::select_unchained(chain, Some(i64::from(limit)))
                        .fetch_all(&self.$read)
                        .await?;
                    Ok(rows.into_iter().map(AuditChainRow::into_model).collect())
                }

                async fn load_or_store_signing_key(
                    &self,
                    candidate: &SigningKeyRecord,
                ) -> StoreResult<SigningKeyRecord> {
                    // The first writer wins (on PostgreSQL a racing insert waits for the
                    // winner's commit, then does nothing); everyone reads the winner.
                    $db::insert_signing_key(candidate)?
                        .execute(&self.$write)
                        .await?;
                    let row = $db::select_active_signing_key()
                        .fetch_optional(&self.$read)
                        .await?;
                    row.ok_or_else(no_active_signing_key)?.into_model()
                }

                async fn record_mint_intent(&self, intent: &MintIntent) -> StoreResult<()> {
                    self.writes.mint_intent(intent).await
                }

                async fn resolve_mint_intent(
                    &self,
                    intent_id: &str,
                    audit: &AuditEvent,
                ) -> StoreResult<bool> {
                    self.writes.intent_resolution(intent_id, audit).await
                }

                async fn unresolved_mint_intents(
                    &self,
                    before: OffsetDateTime,
                ) -> StoreResult<Vec<MintIntent>> {
                    let rows = $db::select_unresolved_intents(before)
                        .fetch_all(&self.$read)
                        .await?;
                    all(rows, MintIntentRow::into_model)
                }

                async fn revoke_workspace_sessions(
                    &self,
                    workspace_id: &str,
                    at: OffsetDateTime,
                ) -> StoreResult<u64> {
                    let done = $db::revoke_workspace_sessions(workspace_id, at)
                        .execute(&self.$write)
                        .await?;
                    Ok(done.rows_affected())
                }

                async fn policy_versions(
                    &self,
                    workspace_id: &str,
                    name: &str,
                ) -> StoreResult<Vec<StoredPolicy>> {
                    let rows: Vec<PolicyRow> = sqlx::query_as(
                        r#"select workspace_id, name, version, source, format, created_at
                       from policy_versions where workspace_id = $1 and name = $2
                       order by version desc"#,
                    )
                    .bind(workspace_id)
                    .bind(name)
                    .fetch_all(&self.$read)
                    .await?;
                    all(rows, PolicyRow::into_model)
                }

                $($own)*
            }
        };
    };
}

pub(super) use store_impl;
