//! The admin API's bodies and query strings, and their conversions from the admin flows' values.

use super::policy::WarningView;
use crate::audit::format_time;
pub use crate::audit::view::AuditEventView;
use crate::flow::admin::{NewWorkspace, PutPolicy, TokenListing};
use crate::flow::revoke::Revocation;
use crate::flow::FlowResult;
use crate::store::{InstallationLink, IssuedToken, StoredPolicy, Workspace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// `POST /admin/workspaces` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Id (`[a-z0-9][a-z0-9_-]{0,62}`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Entitle at creation (default true).
    #[serde(default, rename = "stsEnabled", deserialize_with = "super::present")]
    pub sts_enabled: Option<bool>,
}

impl TryFrom<CreateWorkspace> for NewWorkspace {
    type Error = crate::flow::FlowError;

    fn try_from(req: CreateWorkspace) -> FlowResult<Self> {
        NewWorkspace::new(&req.id, req.name, req.sts_enabled)
    }
}

/// `PATCH /admin/workspaces/{ws}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchWorkspace {
    /// The STS entitlement.
    pub sts_enabled: bool,
}

/// `POST /admin/workspaces/{ws}/revocations` body: selectors combine with AND, `all` alone
/// selects every active token of the workspace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminRevocation {
    /// Token ids.
    #[serde(default, deserialize_with = "super::present")]
    pub token_ids: Option<Vec<String>>,
    /// Every token of this session (the session is revoked too).
    #[serde(default, deserialize_with = "super::present")]
    pub session_id: Option<String>,
    /// Every token that reaches `owner/repo` (including whole-installation tokens of the owner).
    #[serde(default, deserialize_with = "super::present")]
    pub repository: Option<String>,
    /// Every active token of the workspace.
    #[serde(default, deserialize_with = "super::present")]
    pub all: Option<bool>,
}

impl TryFrom<AdminRevocation> for Revocation {
    type Error = crate::flow::FlowError;

    fn try_from(req: AdminRevocation) -> FlowResult<Self> {
        Revocation::new(req.token_ids, req.session_id, req.repository, req.all)
    }
}

/// `GET /admin/workspaces/{ws}/tokens` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensQuery {
    /// `active`, `revoked`, `expired` or `all`.
    pub state: Option<String>,
    /// Most tokens to list.
    pub limit: Option<u32>,
}

/// `GET /admin/workspaces/{ws}/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Most events to list.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
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
    /// Lint findings: only in the answer to `PUT` (and rollback), where it is always present.
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<WarningView>>,
}

impl PolicyView {
    fn new(p: StoredPolicy, warnings: Option<Vec<WarningView>>) -> Self {
        Self {
            name: p.name,
            version: p.version,
            format: p.format.as_str().to_owned(),
            source: p.source,
            created_at: format_time(p.created_at),
            warnings,
        }
    }
}

impl From<StoredPolicy> for PolicyView {
    fn from(p: StoredPolicy) -> Self {
        Self::new(p, None)
    }
}

impl From<PutPolicy> for PolicyView {
    fn from(put: PutPolicy) -> Self {
        Self::new(put.policy, Some(WarningView::list(put.warnings)))
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
    /// `t` with its state at `now`.
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

    /// Every token of a listing, each with its state when the list was read.
    pub fn list(listing: TokenListing) -> Vec<Self> {
        let at = listing.at;
        listing
            .tokens
            .into_iter()
            .map(|t| Self::new(t, at))
            .collect()
    }
}

/// `{"workspaces": [...]}`.
#[derive(Debug, Serialize)]
pub struct WorkspaceList {
    /// Every workspace.
    pub workspaces: Vec<WorkspaceView>,
}

/// `{"installations": [...]}`.
#[derive(Debug, Serialize)]
pub struct InstallationList {
    /// The workspace's links.
    pub installations: Vec<InstallationView>,
}

/// `{"policies": [...]}`.
#[derive(Debug, Serialize)]
pub struct PolicyList {
    /// The workspace's live policies.
    pub policies: Vec<PolicyView>,
}

/// `{"tokens": [...]}`.
#[derive(Debug, Serialize)]
pub struct TokenList {
    /// Token metadata.
    pub tokens: Vec<TokenView>,
}

/// `DELETE /admin/workspaces/{ws}` data.
#[derive(Debug, Serialize)]
pub struct WorkspaceDeleted {
    /// Always `true`.
    pub deleted: bool,
    /// Tokens revoked at GitHub first.
    pub revoked: usize,
}

/// `DELETE .../installations/{owner}` data.
#[derive(Debug, Serialize)]
pub struct Unlinked {
    /// Always `true`.
    pub unlinked: bool,
}

/// `DELETE .../policies/{name}` data.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// Always `true`.
    pub deleted: bool,
}

/// `GET .../audit` data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPageView {
    /// Newest first.
    pub events: Vec<AuditEventView>,
    /// Cursor of the next (older) page, as a string; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<crate::store::AuditPage> for AuditPageView {
    fn from(page: crate::store::AuditPage) -> Self {
        Self {
            events: page.events.into_iter().map(AuditEventView::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        }
    }
}

impl From<crate::store::ChainedEvent> for AuditEventView {
    fn from(chained: crate::store::ChainedEvent) -> Self {
        Self::new(chained.event, chained.link)
    }
}
