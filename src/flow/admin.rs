//! Admin operations behind the operator token: workspaces, installation links, policies, token
//! metadata and the audit log. Every change writes one audit event, done or refused: each change
//! is an outer method that starts an [`Audited`] and an inner one that does the work.

mod versions;

pub use versions::PolicyVersion;

use super::audited::detail;
use super::{existing_workspace, Audited, Conflict, Counted, FlowError, FlowResult, Missing};
use crate::app::App;
use crate::audit::{Actor, ActorKind, AuditEvent, AuditKind};
use crate::github::GitHubError;
use crate::ids::{PolicyName, WorkspaceId};
use crate::policy::{CompiledPolicy, PolicyFormat, RepoRef, Warning, MAX_POLICY_BYTES};
use crate::store::{
    AuditPage, InstallationLink, IssuedToken, NewPolicy, StoreError, StoredPolicy, TokenFilter,
    TokenState, Workspace, MAX_AUDIT_PAGE,
};
use time::OffsetDateTime;

/// Default page of the audit listing: a screenful.
pub const AUDIT_PAGE_DEFAULT: u32 = 50;
/// Default number of tokens listed: a workspace's recent history, small enough to read; ask for
/// more with `limit`.
pub const TOKEN_LIST_DEFAULT: u32 = 500;
/// Most tokens one listing returns: a busy workspace mints thousands a day and an operator
/// looking for a leak wants them in one answer, yet the answer must stay a few MiB at most.
pub const TOKEN_LIST_MAX: u32 = 10_000;
/// Longest workspace display name.
pub const MAX_WORKSPACE_NAME_LEN: usize = 200;
/// How many times deleting a workspace lists and revokes its live tokens before it gives up.
/// Once the workspace is disabled no mint can record a token in it, so the second listing finds
/// nothing; a third round only covers a row that appeared from a transaction already committing.
pub const DELETE_REVOKE_ROUNDS: usize = 3;

/// A workspace to create.
#[derive(Debug)]
pub struct NewWorkspace {
    id: WorkspaceId,
    name: String,
    sts_enabled: bool,
}

impl NewWorkspace {
    /// Check the id and display name (all problems at once); entitled unless `sts_enabled` says
    /// otherwise.
    pub fn new(id: &str, name: String, sts_enabled: Option<bool>) -> FlowResult<Self> {
        let mut errors = Vec::new();
        let id = WorkspaceId::parse(id)
            .map_err(|e| errors.push(format!("id: {e}")))
            .ok();
        if name.trim().is_empty() || name.chars().count() > MAX_WORKSPACE_NAME_LEN {
            errors.push(format!(
                "name: must be 1 to {MAX_WORKSPACE_NAME_LEN} characters, not all blank"
            ));
        }
        match id {
            Some(id) if errors.is_empty() => Ok(Self {
                id,
                name,
                sts_enabled: sts_enabled.unwrap_or(true),
            }),
            _ => Err(FlowError::InvalidRequest(errors)),
        }
    }
}

/// A stored policy version, with the warnings it compiled with.
#[derive(Debug)]
pub struct PutPolicy {
    /// No live policy of this name existed before.
    pub created: bool,
    /// The stored version.
    pub policy: StoredPolicy,
    /// Problems that do not make the policy invalid.
    pub warnings: Vec<Warning>,
}

/// Token metadata as of one instant (a token's state depends on the time it is read).
#[derive(Debug)]
pub struct TokenListing {
    /// When the list was read.
    pub at: OffsetDateTime,
    /// Newest first.
    pub tokens: Vec<IssuedToken>,
}

/// Admin operations with the request context needed for auditing.
pub struct Admin<'a> {
    /// The broker.
    pub app: &'a App,
    /// Request id, for the audit event.
    pub request_id: &'a str,
}

impl Admin<'_> {
    /// The audited run of the change `action` to `workspace`, by the operator.
    fn audited(&self, action: &str, workspace: &WorkspaceId) -> Audited {
        let mut audited = Audited::new(AuditKind::Admin, action, self.request_id, Counted::Nothing)
            .in_workspace(workspace);
        audited.event.actor = Actor::of(ActorKind::Admin);
        audited
    }

    /// Create a workspace.
    pub async fn create_workspace(&self, new: NewWorkspace) -> FlowResult<Workspace> {
        let mut audited = self.audited("workspace.create", &new.id);
        let result = self.create_workspace_inner(new, &mut audited.event).await;
        audited.finish(self.app, result).await
    }

    async fn create_workspace_inner(
        &self,
        new: NewWorkspace,
        event: &mut AuditEvent,
    ) -> FlowResult<Workspace> {
        let now = OffsetDateTime::now_utc();
        let ws = Workspace {
            id: new.id.as_str().to_owned(),
            name: new.name,
            sts_enabled: new.sts_enabled,
            created_at: now,
            updated_at: now,
        };
        event.details = serde_json::json!({ "name": ws.name, "stsEnabled": ws.sts_enabled });
        self.app
            .store
            .create_workspace(&ws)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => FlowError::Conflict(Conflict::WorkspaceExists),
                other => other.into(),
            })?;
        Ok(ws)
    }

    /// List workspaces.
    pub async fn list_workspaces(&self) -> FlowResult<Vec<Workspace>> {
        Ok(self.app.store.list_workspaces().await?)
    }

    /// Read one.
    pub async fn get_workspace(&self, ws: &WorkspaceId) -> FlowResult<Workspace> {
        existing_workspace(self.app, ws).await
    }

    /// Entitle or disable.
    pub async fn patch_workspace(
        &self,
        ws: &WorkspaceId,
        sts_enabled: bool,
    ) -> FlowResult<Workspace> {
        let mut audited = self.audited("workspace.update", ws);
        detail(&mut audited.event, "stsEnabled", sts_enabled);
        let result = self
            .app
            .store
            .set_workspace_sts_enabled(ws.as_str(), sts_enabled, OffsetDateTime::now_utc())
            .await
            .map_err(FlowError::from)
            .and_then(|updated| updated.ok_or(FlowError::NotFound(Missing::Workspace)));
        audited.finish(self.app, result).await
    }

    /// Delete, after revoking its live tokens at GitHub; answers how many were revoked.
    ///
    /// A mint may be at GitHub meanwhile. So the workspace first loses its entitlement and its
    /// sessions end: from then on no mint can record tokens in it (the record refuses in its
    /// transaction, and that mint revokes what it minted). Then the live tokens are revoked until
    /// none is left, and only then is the workspace deleted. If GitHub refuses a revocation the
    /// workspace is kept, disabled, for the operator to retry.
    pub async fn delete_workspace(&self, ws: &WorkspaceId) -> FlowResult<usize> {
        let mut audited = self.audited("workspace.delete", ws);
        let result = self.delete_workspace_inner(ws, &mut audited.event).await;
        audited.finish(self.app, result).await
    }

    async fn delete_workspace_inner(
        &self,
        ws: &WorkspaceId,
        event: &mut AuditEvent,
    ) -> FlowResult<usize> {
        existing_workspace(self.app, ws).await?;
        let now = OffsetDateTime::now_utc();
        self.app
            .store
            .set_workspace_sts_enabled(ws.as_str(), false, now)
            .await?;
        let sessions = self
            .app
            .store
            .revoke_workspace_sessions(ws.as_str(), now)
            .await?;
        detail(event, "sessionsEnded", sessions);
        let mut revoked = 0;
        for _ in 0..DELETE_REVOKE_ROUNDS {
            let filter = TokenFilter {
                state: Some((TokenState::Active, OffsetDateTime::now_utc())),
                ..TokenFilter::default()
            };
            let tokens = self.app.store.list_tokens(ws.as_str(), &filter).await?;
            if tokens.is_empty() {
                self.app.store.delete_workspace(ws.as_str()).await?;
                detail(event, "revokedTokens", revoked);
                return Ok(revoked);
            }
            let outcome = super::revoke::revoke_tokens(self.app, tokens, event).await?;
            revoked += outcome.revoked.len();
            detail(event, "revokedTokens", revoked);
            if !outcome.failed.is_empty() {
                return Err(FlowError::RevokeIncomplete {
                    not_revoked: outcome.failed.len(),
                    workspace_kept: true,
                });
            }
        }
        // Tokens keep appearing although nothing can record them any more: refuse to delete
        // what we cannot account for.
        Err(FlowError::RevokeIncomplete {
            not_revoked: 0,
            workspace_kept: true,
        })
    }

    /// Link the App's installation on `owner`.
    pub async fn link_installation(
        &self,
        ws: &WorkspaceId,
        owner: &str,
    ) -> FlowResult<InstallationLink> {
        let mut audited = self.audited("installation.link", ws);
        detail(&mut audited.event, "owner", owner);
        let result = self
            .link_installation_inner(ws, owner, &mut audited.event)
            .await;
        audited.finish(self.app, result).await
    }

    async fn link_installation_inner(
        &self,
        ws: &WorkspaceId,
        owner: &str,
        event: &mut AuditEvent,
    ) -> FlowResult<InstallationLink> {
        existing_workspace(self.app, ws).await?;
        if RepoRef::parse(&format!("{owner}/x")).is_none() {
            return Err(FlowError::invalid(format!(
                "owner: `{owner}` is not a GitHub login"
            )));
        }
        let installation = self
            .app
            .github
            .installation_for_owner(owner)
            .await
            .map_err(|e| match e {
                GitHubError::NotFound => FlowError::NotFound(Missing::Installation {
                    owner: owner.to_owned(),
                }),
                other => other.into(),
            })?;
        event.installation_ids = vec![installation.id];
        let link = InstallationLink {
            workspace_id: ws.as_str().to_owned(),
            owner: installation.account_login.clone(),
            account_id: installation.account_id,
            installation_id: installation.id,
            repository_selection: installation.repository_selection.clone(),
            created_at: OffsetDateTime::now_utc(),
        };
        let stored = self
            .app
            .store
            .link_installation(&link)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    FlowError::Conflict(Conflict::InstallationLinkedElsewhere)
                }
                other => other.into(),
            })?;
        event.details = serde_json::json!({
            "owner": stored.owner, "installationId": stored.installation_id
        });
        Ok(stored)
    }

    /// List links.
    pub async fn list_installations(&self, ws: &WorkspaceId) -> FlowResult<Vec<InstallationLink>> {
        existing_workspace(self.app, ws).await?;
        Ok(self.app.store.list_installations(ws.as_str()).await?)
    }

    /// Unlink.
    pub async fn unlink_installation(&self, ws: &WorkspaceId, owner: &str) -> FlowResult<()> {
        let mut audited = self.audited("installation.unlink", ws);
        detail(&mut audited.event, "owner", owner);
        let result = self.unlink_installation_inner(ws, owner).await;
        audited.finish(self.app, result).await
    }

    async fn unlink_installation_inner(&self, ws: &WorkspaceId, owner: &str) -> FlowResult<()> {
        existing_workspace(self.app, ws).await?;
        let unlinked = self
            .app
            .store
            .unlink_installation(ws.as_str(), owner)
            .await?;
        found(unlinked, Missing::InstallationLink)
    }

    /// Validate and store a new policy version.
    pub async fn put_policy(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
        body: &str,
        format: PolicyFormat,
    ) -> FlowResult<PutPolicy> {
        let mut audited = self.audited("policy.put", ws);
        audited.event.policy_name = Some(name.as_str().to_owned());
        detail(&mut audited.event, "format", format.as_str());
        let result = self
            .put_policy_inner(ws, name, body, format, &mut audited.event)
            .await;
        audited.finish(self.app, result).await
    }

    async fn put_policy_inner(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
        body: &str,
        format: PolicyFormat,
        event: &mut AuditEvent,
    ) -> FlowResult<PutPolicy> {
        existing_workspace(self.app, ws).await?;
        if body.len() > MAX_POLICY_BYTES {
            return Err(FlowError::PolicyInvalid(vec![format!(
                "policy: larger than {MAX_POLICY_BYTES} bytes"
            )]));
        }
        let compiled =
            CompiledPolicy::from_source(body, format).map_err(FlowError::PolicyInvalid)?;
        let existed = self
            .app
            .store
            .get_policy(ws.as_str(), name.as_str())
            .await?
            .is_some();
        let stored = self
            .app
            .store
            .put_policy(&NewPolicy {
                workspace_id: ws.as_str().to_owned(),
                name: name.as_str().to_owned(),
                source: body.to_owned(),
                format,
                created_at: OffsetDateTime::now_utc(),
            })
            .await?;
        let warnings = compiled.warnings().to_vec();
        event.policy_name = Some(stored.name.clone());
        event.policy_version = Some(stored.version);
        let codes: Vec<&str> = warnings.iter().map(|w| w.code.as_str()).collect();
        event.details = serde_json::json!({ "format": stored.format.as_str(), "warnings": codes });
        Ok(PutPolicy {
            created: !existed,
            policy: stored,
            warnings,
        })
    }

    /// List live policies.
    pub async fn list_policies(&self, ws: &WorkspaceId) -> FlowResult<Vec<StoredPolicy>> {
        existing_workspace(self.app, ws).await?;
        Ok(self.app.store.list_policies(ws.as_str()).await?)
    }

    /// Read one policy.
    pub async fn get_policy(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
    ) -> FlowResult<StoredPolicy> {
        existing_workspace(self.app, ws).await?;
        self.app
            .store
            .get_policy(ws.as_str(), name.as_str())
            .await?
            .ok_or(FlowError::NotFound(Missing::Policy))
    }

    /// Delete a policy (history kept).
    pub async fn delete_policy(&self, ws: &WorkspaceId, name: &PolicyName) -> FlowResult<()> {
        let mut audited = self.audited("policy.delete", ws);
        detail(&mut audited.event, "name", name.as_str());
        let result = self.delete_policy_inner(ws, name).await;
        audited.finish(self.app, result).await
    }

    async fn delete_policy_inner(&self, ws: &WorkspaceId, name: &PolicyName) -> FlowResult<()> {
        existing_workspace(self.app, ws).await?;
        let deleted = self
            .app
            .store
            .delete_policy(ws.as_str(), name.as_str(), OffsetDateTime::now_utc())
            .await?;
        found(deleted, Missing::Policy)
    }

    /// Token metadata; `state` = `active`, `revoked`, `expired` or `all` (default).
    pub async fn list_tokens(
        &self,
        ws: &WorkspaceId,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> FlowResult<TokenListing> {
        existing_workspace(self.app, ws).await?;
        let at = OffsetDateTime::now_utc();
        let state = match state.unwrap_or("all") {
            "all" => None,
            other => match TokenState::parse(other) {
                Some(state) => Some((state, at)),
                None => {
                    return Err(FlowError::invalid(
                        "state: one of active, revoked, expired, all",
                    ))
                }
            },
        };
        let filter = TokenFilter {
            state,
            limit: Some(limit.unwrap_or(TOKEN_LIST_DEFAULT).clamp(1, TOKEN_LIST_MAX)),
            ..TokenFilter::default()
        };
        let tokens = self.app.store.list_tokens(ws.as_str(), &filter).await?;
        Ok(TokenListing { at, tokens })
    }

    /// One page of the audit log, older than `cursor` (a cursor from a previous page).
    pub async fn audit_page(
        &self,
        ws: &WorkspaceId,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> FlowResult<AuditPage> {
        existing_workspace(self.app, ws).await?;
        let before = match cursor {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| FlowError::invalid("cursor: not a cursor from a previous page"))?,
            ),
        };
        let limit = limit.unwrap_or(AUDIT_PAGE_DEFAULT).clamp(1, MAX_AUDIT_PAGE);
        Ok(self
            .app
            .store
            .list_audit(ws.as_str(), limit, before)
            .await?)
    }
}

/// A store change that reports whether it found its row: `Ok` if it did, else `missing`.
fn found(changed: bool, missing: Missing) -> FlowResult<()> {
    if changed {
        Ok(())
    } else {
        Err(FlowError::NotFound(missing))
    }
}
