//! Explain: what `/sts` would decide for a caller, and why, without minting. For policy
//! administrators, on a stored policy or on a draft that is validated but not stored.
//!
//! It runs the mint's own decision ([`plan::decide`]) on the same store and the same (cached)
//! installation data, so its outcome and reason per repository are the mint's by construction;
//! only GitHub's refusals at mint time (which explain never provokes) can differ.

use super::plan::{self, Caller, Plan};
use super::validate::{self, MintRequest};
use super::MintInput;
use crate::app::App;
use crate::audit::ExclusionReason;
use crate::flow::{existing_workspace, FlowError, FlowResult};
use crate::ids::WorkspaceId;
use crate::policy::{
    Claims, CompiledPolicy, PermissionSet, PolicyFormat, RepoRef, RuleTrace, Warning,
    GITHUB_ACTIONS_ISSUER,
};
use std::sync::Arc;

/// The name a draft policy goes by in an explanation.
pub const DRAFT_POLICY_NAME: &str = "draft";

/// Which policy to explain.
#[derive(Debug, Clone)]
pub enum ExplainPolicy {
    /// A stored policy, current version; `None` = `default`.
    Stored(Option<String>),
    /// A draft, validated and never stored.
    Draft {
        /// The document.
        source: String,
        /// How it is written.
        format: PolicyFormat,
    },
}

/// What to explain.
#[derive(Debug, Clone)]
pub struct ExplainInput {
    /// The caller's OIDC claims.
    pub claims: Claims,
    /// The caller's issuer; `None` = GitHub Actions'.
    pub issuer: Option<String>,
    /// `owner/repo` sources; `None` = what the matching rules grant.
    pub sources: Option<Vec<String>>,
    /// The policy.
    pub policy: ExplainPolicy,
}

/// The outcome for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A token would carry it, with these permissions.
    Granted(PermissionSet),
    /// Left out, for this reason.
    Excluded(ExclusionReason),
}

/// One repository's decision and the rule trace behind it.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `owner/repo` as asked (`owner/*` for a whole installation).
    pub repo: String,
    /// Granted or excluded.
    pub outcome: Outcome,
    /// The installation that would mint it, when known.
    pub installation_id: Option<i64>,
    /// Every rule's view of the repository.
    pub rules: Vec<RuleTrace>,
}

/// An explanation.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Policy name (`draft` for a draft).
    pub policy_name: String,
    /// Stored version; `None` for a draft or an absent policy.
    pub version: Option<i64>,
    /// Per repository.
    pub decisions: Vec<Decision>,
    /// Lint findings of the policy.
    pub warnings: Vec<Warning>,
}

/// Explain what `/sts` would decide for `input` in workspace `ws`.
pub async fn explain(app: &App, ws: &WorkspaceId, input: ExplainInput) -> FlowResult<Explanation> {
    existing_workspace(app, ws).await?;
    let (policy_name, stored_name) = match &input.policy {
        ExplainPolicy::Stored(name) => (name.clone(), name.clone()),
        ExplainPolicy::Draft { .. } => (Some(DRAFT_POLICY_NAME.to_owned()), None),
    };
    let request = validate::validate(MintInput {
        sources: input.sources,
        policy_name,
        permissions: None,
    })?;
    let (version, compiled) = match input.policy {
        ExplainPolicy::Stored(_) => {
            let name = stored_name.unwrap_or_else(|| request.policy.as_str().to_owned());
            match app.store.get_policy(ws.as_str(), &name).await? {
                Some(stored) => (Some(stored.version), Some(app.compiled_policy(&stored))),
                None => (None, None),
            }
        }
        ExplainPolicy::Draft { source, format } => {
            let compiled =
                CompiledPolicy::from_source(&source, format).map_err(FlowError::PolicyInvalid)?;
            (None, Some(Arc::new(Ok(compiled))))
        }
    };
    let issuer = input.issuer.as_deref().unwrap_or(GITHUB_ACTIONS_ISSUER);
    let caller = Caller {
        workspace_id: ws.as_str(),
        issuer,
        claims: &input.claims,
    };
    let plan = plan::decide(app, caller, compiled.as_deref(), &request).await?;
    let policy = compiled.as_deref().and_then(|c| c.as_ref().ok());
    let trace = |repo: &str| match (policy, parse_target(repo)) {
        (Some(p), Some(target)) => p.trace(issuer, &input.claims, &target),
        _ => Vec::new(),
    };
    let decisions = decisions(&request, plan)
        .into_iter()
        .map(|(repo, outcome, installation_id)| Decision {
            rules: trace(&repo),
            repo,
            outcome,
            installation_id,
        })
        .collect();
    Ok(Explanation {
        policy_name: request.policy.as_str().to_owned(),
        version,
        decisions,
        warnings: policy.map(|p| p.warnings().to_vec()).unwrap_or_default(),
    })
}

/// `owner/name` or `owner/*` as a trace target.
fn parse_target(repo: &str) -> Option<RepoRef> {
    match repo.split_once('/') {
        Some((owner, "*")) => Some(RepoRef {
            owner: owner.to_owned(),
            name: crate::policy::WHOLE_INSTALLATION.to_owned(),
        }),
        _ => RepoRef::parse(repo),
    }
}

/// The plan as one entry per repository: every source, in the order asked; or, without sources,
/// every repository (or whole installation) a token would carry, then the owners skipped.
fn decisions(request: &MintRequest, plan: Plan) -> Vec<(String, Outcome, Option<i64>)> {
    let granted = |g: &super::Group| {
        (
            Outcome::Granted(g.permissions.clone()),
            Some(g.installation.id),
        )
    };
    if request.explicit() {
        return request
            .sources
            .iter()
            .map(|s| {
                let excluded = plan.exclusions.iter().find(|e| e.repo == s.raw);
                let (outcome, id) = match excluded {
                    Some(e) => (Outcome::Excluded(e.reason), None),
                    None => plan
                        .groups
                        .iter()
                        .find(|g| g.sources.contains(&s.raw))
                        .map(granted)
                        // Every source is either excluded or in a group; this is unreachable
                        // and would be the mint's `not_installed_in_workspace`.
                        .unwrap_or((
                            Outcome::Excluded(ExclusionReason::NotInstalledInWorkspace),
                            None,
                        )),
                };
                (s.raw.clone(), outcome, id)
            })
            .collect();
    }
    let mut out = Vec::new();
    for group in &plan.groups {
        let owner = &group.installation.account_login;
        let (outcome, id) = granted(group);
        match &group.repos {
            None => out.push((format!("{owner}/*"), outcome, id)),
            Some(repos) => out.extend(
                repos
                    .iter()
                    .map(|r| (format!("{owner}/{r}"), outcome.clone(), id)),
            ),
        }
    }
    out.extend(
        plan.skipped
            .into_iter()
            .map(|e| (e.repo, Outcome::Excluded(e.reason), None)),
    );
    out
}
