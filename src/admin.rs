//! Admin operations behind the operator token: workspaces, installation links, policies, token
//! metadata and the audit log. Every change writes an audit event.

use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, Outcome};
use crate::exchange::{format_time, valid_workspace_id};
use crate::github::GitHubError;
use crate::http::error::{ApiError, ApiResult};
use crate::mint::valid_policy_name;
use crate::policy::{CompiledPolicy, PolicyFormat, RepoRef};
use crate::store::{
    InstallationLink, IssuedToken, NewPolicy, StoredPolicy, TokenFilter, TokenState, Workspace,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Largest policy document accepted (also enforced by the policy engine).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Default and largest page of the audit listing.
pub const AUDIT_PAGE_DEFAULT: u32 = 50;
/// Largest page of the audit listing.
pub const AUDIT_PAGE_MAX: u32 = 500;

/// `POST /admin/workspaces` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Id (`[a-z0-9][a-z0-9_-]{0,62}`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Entitle at creation (default true).
    #[serde(default, rename = "stsEnabled")]
    pub sts_enabled: Option<bool>,
}

/// `PATCH /admin/workspaces/{ws}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchWorkspace {
    /// The STS entitlement.
    pub sts_enabled: bool,
}

/// A workspace on the wire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceView {
    id: String,
    name: String,
    sts_enabled: bool,
    created_at: String,
    updated_at: String,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            sts_enabled: w.sts_enabled,
            created_at: format_time(w.created_at),
            updated_at: format_time(w.updated_at),
        }
    }
}

/// An installation link on the wire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallationView {
    owner: String,
    account_id: i64,
    installation_id: i64,
    repository_selection: String,
    created_at: String,
}

impl From<InstallationLink> for InstallationView {
    fn from(l: InstallationLink) -> Self {
        Self {
            owner: l.owner,
            account_id: l.account_id,
            installation_id: l.installation_id,
            repository_selection: l.repository_selection,
            created_at: format_time(l.created_at),
        }
    }
}

/// A policy on the wire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    name: String,
    version: i64,
    format: String,
    source: String,
    created_at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn policy_view(p: StoredPolicy, warnings: Vec<String>) -> PolicyView {
    PolicyView {
        name: p.name,
        version: p.version,
        format: p.format.as_str().to_owned(),
        source: p.source,
        created_at: format_time(p.created_at),
        warnings,
    }
}

/// Token metadata on the wire: never the token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    id: String,
    session_id: Option<String>,
    installation_id: i64,
    owner: String,
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    repositories: Option<Vec<String>>,
    permissions: BTreeMap<String, String>,
    fingerprint: String,
    policy_name: String,
    policy_version: i64,
    created_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    state: &'static str,
}

impl TokenView {
    fn new(t: IssuedToken, now: OffsetDateTime) -> Self {
        let state = t.state_at(now).as_str();
        Self {
            id: t.id,
            session_id: t.session_id,
            installation_id: t.installation_id,
            owner: t.owner,
            host: t.host,
            repositories: t.repositories,
            permissions: t.permissions,
            fingerprint: t.fingerprint,
            policy_name: t.policy_name,
            policy_version: t.policy_version,
            created_at: format_time(t.created_at),
            expires_at: format_time(t.expires_at),
            revoked_at: t.revoked_at.map(format_time),
            state,
        }
    }
}

/// Admin operations with the request context needed for auditing.
pub struct Admin<'a> {
    /// The broker.
    pub app: &'a App,
    /// Request id, for the audit event.
    pub request_id: &'a str,
}

impl Admin<'_> {
    async fn audit(
        &self,
        action: &str,
        workspace: &str,
        details: serde_json::Value,
    ) -> ApiResult<()> {
        let mut event = AuditEvent::new(AuditKind::Admin, action);
        event.outcome = Outcome::Success;
        event.workspace_id = Some(workspace.to_owned());
        event.request_id = Some(self.request_id.to_owned());
        event.actor = Actor {
            kind: "admin".to_owned(),
            ..Actor::default()
        };
        event.details = details;
        self.app.store.append_audit(&event).await?;
        Ok(())
    }

    async fn workspace(&self, id: &str) -> ApiResult<Workspace> {
        self.app
            .store
            .get_workspace(id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace_not_found", "no such workspace"))
    }

    /// Create a workspace.
    pub async fn create_workspace(&self, req: CreateWorkspace) -> ApiResult<WorkspaceView> {
        let mut errors = Vec::new();
        if !valid_workspace_id(&req.id) {
            errors.push("id: must match [a-z0-9][a-z0-9_-]{0,62}".to_owned());
        }
        if req.name.trim().is_empty() || req.name.len() > 200 {
            errors.push("name: must be 1 to 200 characters".to_owned());
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(errors));
        }
        let now = OffsetDateTime::now_utc();
        let ws = Workspace {
            id: req.id,
            name: req.name,
            sts_enabled: req.sts_enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        self.app
            .store
            .create_workspace(&ws)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => {
                    ApiError::conflict("workspace_exists", "a workspace with this id exists")
                }
                other => other.into(),
            })?;
        self.audit(
            "workspace.create",
            &ws.id,
            serde_json::json!({ "name": ws.name, "stsEnabled": ws.sts_enabled }),
        )
        .await?;
        Ok(ws.into())
    }

    /// List workspaces.
    pub async fn list_workspaces(&self) -> ApiResult<Vec<WorkspaceView>> {
        Ok(self
            .app
            .store
            .list_workspaces()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Read one.
    pub async fn get_workspace(&self, id: &str) -> ApiResult<WorkspaceView> {
        Ok(self.workspace(id).await?.into())
    }

    /// Entitle or disable.
    pub async fn patch_workspace(&self, id: &str, req: PatchWorkspace) -> ApiResult<WorkspaceView> {
        let ws = self
            .app
            .store
            .set_workspace_sts_enabled(id, req.sts_enabled, OffsetDateTime::now_utc())
            .await?
            .ok_or_else(|| ApiError::not_found("workspace_not_found", "no such workspace"))?;
        self.audit(
            "workspace.update",
            id,
            serde_json::json!({ "stsEnabled": req.sts_enabled }),
        )
        .await?;
        Ok(ws.into())
    }

    /// Delete, after revoking its live tokens at GitHub.
    pub async fn delete_workspace(&self, id: &str) -> ApiResult<serde_json::Value> {
        self.workspace(id).await?;
        let tokens = self
            .app
            .store
            .list_tokens(
                id,
                &TokenFilter {
                    state: Some((TokenState::Active, OffsetDateTime::now_utc())),
                    ..TokenFilter::default()
                },
            )
            .await?;
        let outcome = crate::revoke::revoke_tokens(self.app, tokens).await?;
        if !outcome.failed.is_empty() {
            return Err(ApiError::upstream(
                "github_revoke_failed",
                "some tokens could not be revoked at github; the workspace was kept, retry",
                anyhow::anyhow!("{} tokens not revoked", outcome.failed.len()),
            ));
        }
        self.app.store.delete_workspace(id).await?;
        self.audit(
            "workspace.delete",
            id,
            serde_json::json!({ "revokedTokens": outcome.revoked.len() }),
        )
        .await?;
        Ok(serde_json::json!({ "deleted": true, "revoked": outcome.revoked.len() }))
    }

    /// Link the App's installation on `owner`.
    pub async fn link_installation(&self, ws: &str, owner: &str) -> ApiResult<InstallationView> {
        self.workspace(ws).await?;
        if RepoRef::parse(&format!("{owner}/x")).is_none() {
            return Err(ApiError::invalid(vec![format!(
                "owner: `{owner}` is not a GitHub login"
            )]));
        }
        let installation = self
            .app
            .github
            .installation_for_owner(owner)
            .await
            .map_err(|e| match e {
                GitHubError::NotFound => ApiError::not_found(
                    "installation_not_found",
                    format!("the GitHub App is not installed on `{owner}`"),
                ),
                other => other.into(),
            })?;
        let link = InstallationLink {
            workspace_id: ws.to_owned(),
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
                crate::store::StoreError::Conflict(_) => ApiError::conflict(
                    "installation_linked_elsewhere",
                    "this installation is already linked to another workspace",
                ),
                other => other.into(),
            })?;
        self.audit(
            "installation.link",
            ws,
            serde_json::json!({ "owner": stored.owner, "installationId": stored.installation_id }),
        )
        .await?;
        Ok(stored.into())
    }

    /// List links.
    pub async fn list_installations(&self, ws: &str) -> ApiResult<Vec<InstallationView>> {
        self.workspace(ws).await?;
        Ok(self
            .app
            .store
            .list_installations(ws)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Unlink.
    pub async fn unlink_installation(&self, ws: &str, owner: &str) -> ApiResult<serde_json::Value> {
        self.workspace(ws).await?;
        if !self.app.store.unlink_installation(ws, owner).await? {
            return Err(ApiError::not_found(
                "installation_not_linked",
                "no installation linked for this owner",
            ));
        }
        self.audit(
            "installation.unlink",
            ws,
            serde_json::json!({ "owner": owner }),
        )
        .await?;
        Ok(serde_json::json!({ "unlinked": true }))
    }

    /// Validate and store a new policy version.
    pub async fn put_policy(
        &self,
        ws: &str,
        name: &str,
        body: &str,
        format: PolicyFormat,
    ) -> ApiResult<(bool, PolicyView)> {
        self.workspace(ws).await?;
        if !valid_policy_name(name) {
            return Err(ApiError::invalid(vec![
                "name: must match [a-z0-9][a-z0-9._-]{0,62}".to_owned(),
            ]));
        }
        if body.len() > MAX_POLICY_BYTES {
            return Err(ApiError::unprocessable(
                "policy_invalid",
                "the policy is invalid",
                vec![format!("policy: larger than {MAX_POLICY_BYTES} bytes")],
            ));
        }
        let compiled = CompiledPolicy::from_source(body, format).map_err(|errors| {
            ApiError::unprocessable("policy_invalid", "the policy is invalid", errors)
        })?;
        let existed = self.app.store.get_policy(ws, name).await?.is_some();
        let stored = self
            .app
            .store
            .put_policy(&NewPolicy {
                workspace_id: ws.to_owned(),
                name: name.to_owned(),
                source: body.to_owned(),
                format,
                created_at: OffsetDateTime::now_utc(),
            })
            .await?;
        let warnings = compiled.warnings().to_vec();
        let mut event = AuditEvent::new(AuditKind::Admin, "policy.put");
        event.outcome = Outcome::Success;
        event.workspace_id = Some(ws.to_owned());
        event.request_id = Some(self.request_id.to_owned());
        event.actor = Actor {
            kind: "admin".to_owned(),
            ..Actor::default()
        };
        event.policy_name = Some(stored.name.clone());
        event.policy_version = Some(stored.version);
        event.details =
            serde_json::json!({ "format": stored.format.as_str(), "warnings": warnings });
        self.app.store.append_audit(&event).await?;
        Ok((!existed, policy_view(stored, warnings)))
    }

    /// List live policies.
    pub async fn list_policies(&self, ws: &str) -> ApiResult<Vec<PolicyView>> {
        self.workspace(ws).await?;
        Ok(self
            .app
            .store
            .list_policies(ws)
            .await?
            .into_iter()
            .map(|p| policy_view(p, Vec::new()))
            .collect())
    }

    /// Read one policy.
    pub async fn get_policy(&self, ws: &str, name: &str) -> ApiResult<PolicyView> {
        self.workspace(ws).await?;
        let p = self
            .app
            .store
            .get_policy(ws, name)
            .await?
            .ok_or_else(|| ApiError::not_found("policy_not_found", "no such policy"))?;
        Ok(policy_view(p, Vec::new()))
    }

    /// Delete a policy (history kept).
    pub async fn delete_policy(&self, ws: &str, name: &str) -> ApiResult<serde_json::Value> {
        self.workspace(ws).await?;
        if !self
            .app
            .store
            .delete_policy(ws, name, OffsetDateTime::now_utc())
            .await?
        {
            return Err(ApiError::not_found("policy_not_found", "no such policy"));
        }
        self.audit("policy.delete", ws, serde_json::json!({ "name": name }))
            .await?;
        Ok(serde_json::json!({ "deleted": true }))
    }

    /// Token metadata; `state` = `active`, `revoked`, `expired` or `all` (default).
    pub async fn list_tokens(
        &self,
        ws: &str,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Vec<TokenView>> {
        self.workspace(ws).await?;
        let now = OffsetDateTime::now_utc();
        let state = match state.unwrap_or("all") {
            "all" => None,
            other => match TokenState::parse(other) {
                Some(state) => Some((state, now)),
                None => {
                    return Err(ApiError::invalid(vec![
                        "state: one of active, revoked, expired, all".to_owned(),
                    ]))
                }
            },
        };
        let filter = TokenFilter {
            state,
            limit: Some(limit.unwrap_or(AUDIT_PAGE_MAX).clamp(1, 10_000)),
            ..TokenFilter::default()
        };
        Ok(self
            .app
            .store
            .list_tokens(ws, &filter)
            .await?
            .into_iter()
            .map(|t| TokenView::new(t, now))
            .collect())
    }

    /// One page of the audit log.
    pub async fn audit_page(
        &self,
        ws: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> ApiResult<serde_json::Value> {
        self.workspace(ws).await?;
        let before = match cursor {
            None | Some("") => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::invalid(vec!["cursor: not a cursor from a previous page".to_owned()])
            })?),
        };
        let limit = limit.unwrap_or(AUDIT_PAGE_DEFAULT).clamp(1, AUDIT_PAGE_MAX);
        let page = self.app.store.list_audit(ws, limit, before).await?;
        Ok(serde_json::json!({
            "events": page.events,
            "nextCursor": page.next_cursor.map(|c| c.to_string()),
        }))
    }
}
