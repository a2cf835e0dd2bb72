//! Policy versions: the history the store keeps of every put, read back, and rollback (a new
//! version equal to an old one, so the history only ever grows and every change is audited).

use super::{Admin, PutPolicy};
use crate::audit::AuditEvent;
use crate::flow::audited::detail;
use crate::flow::{existing_workspace, FlowError, FlowResult, Missing};
use crate::ids::{PolicyName, WorkspaceId};
use crate::store::StoredPolicy;

/// One version in a listing.
#[derive(Debug, Clone)]
pub struct PolicyVersion {
    /// The version as stored.
    pub policy: StoredPolicy,
    /// Is it the live one (the newest, and the policy not deleted)?
    pub current: bool,
}

impl Admin<'_> {
    /// Every version of a policy, newest first; 404 when the name was never used.
    pub async fn policy_versions(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
    ) -> FlowResult<Vec<PolicyVersion>> {
        existing_workspace(self.app, ws).await?;
        let store = &self.app.store;
        let versions = store.policy_versions(ws.as_str(), name.as_str()).await?;
        if versions.is_empty() {
            return Err(FlowError::NotFound(Missing::Policy));
        }
        let current = store
            .get_policy(ws.as_str(), name.as_str())
            .await?
            .map(|p| p.version);
        Ok(versions
            .into_iter()
            .map(|policy| PolicyVersion {
                current: Some(policy.version) == current,
                policy,
            })
            .collect())
    }

    /// Version `version` of a policy, deleted or not.
    pub async fn policy_version(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
        version: i64,
    ) -> FlowResult<StoredPolicy> {
        self.policy_versions(ws, name)
            .await?
            .into_iter()
            .find(|v| v.policy.version == version)
            .map(|v| v.policy)
            .ok_or(FlowError::NotFound(Missing::Policy))
    }

    /// Store a new version equal to `version` (which must still compile); audited.
    pub async fn rollback_policy(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
        version: i64,
    ) -> FlowResult<PutPolicy> {
        let mut audited = self.audited("policy.rollback", ws);
        audited.event.policy_name = Some(name.as_str().to_owned());
        detail(&mut audited.event, "fromVersion", version);
        let result = self
            .rollback_policy_inner(ws, name, version, &mut audited.event)
            .await;
        audited.finish(self.app, result).await
    }

    async fn rollback_policy_inner(
        &self,
        ws: &WorkspaceId,
        name: &PolicyName,
        version: i64,
        event: &mut AuditEvent,
    ) -> FlowResult<PutPolicy> {
        let old = self.policy_version(ws, name, version).await?;
        let put = self
            .put_policy_inner(ws, name, &old.source, old.format, event)
            .await?;
        detail(event, "fromVersion", version);
        Ok(put)
    }
}
