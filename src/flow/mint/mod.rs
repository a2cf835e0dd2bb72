//! The mint: evaluate the chosen policy, group what is allowed by (installation, permission set),
//! mint one token per group in parallel, report exclusions, and record everything. No token
//! leaves the broker unaudited: if recording fails, the tokens are revoked at GitHub and the
//! caller gets an error.
//!
//! A pipeline of small steps: [`validate`] (may this session mint, is the request well formed) →
//! [`plan`] (policy decisions, installation lookups, grouping, splitting) → [`issue`] (GitHub
//! calls) → [`record`] (token rows and the audit event) → [`respond`].

mod issue;
mod plan;
mod record;
mod validate;

use crate::app::App;
use crate::audit::ExclusionReason;
use crate::github::Installation;
use crate::metrics::{Metrics, ReasonLabels};
use crate::policy::PermissionSet;
use crate::session::Authenticated;
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

use super::FlowResult;

/// Most sources one request may name: bounds the work (and GitHub calls) one caller can cause.
pub const MAX_SOURCES: usize = 100;
/// GitHub accepts at most 500 repositories per installation token; larger groups are split.
/// <https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>
pub const MAX_REPOS_PER_TOKEN: usize = 500;

/// What the caller asked for, unchecked.
#[derive(Debug, Clone, Default)]
pub struct MintInput {
    /// `owner/repo` targets; absent = everything the caller's rules grant.
    pub sources: Option<Vec<String>>,
    /// Policy to evaluate; absent = `default`.
    pub policy_name: Option<String>,
}

/// A repository left out, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// `owner/repo` as the caller sent it (`owner/*` for a whole owner).
    pub repo: String,
    /// Why.
    pub reason: ExclusionReason,
}

impl Excluded {
    fn new(repo: impl Into<String>, reason: ExclusionReason) -> Self {
        Self {
            repo: repo.into(),
            reason,
        }
    }
}

/// One minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// Broker token id (for revoke).
    pub id: String,
    /// GitHub host.
    pub host: String,
    /// Installation account login, exactly as GitHub spells it.
    pub owner: String,
    /// The installation token.
    pub token: SecretString,
    /// GitHub's expiry.
    pub expires_at: OffsetDateTime,
    /// `owner/repo` the token reaches; `None` for a whole-installation token.
    pub repositories: Option<Vec<String>>,
    /// Granted permissions.
    pub permissions: BTreeMap<String, String>,
    /// GitHub installation id.
    pub installation_id: i64,
}

/// What a mint handed out and left out.
#[derive(Debug, Clone)]
pub struct Minted {
    /// One token per (installation, permission set), split at [`MAX_REPOS_PER_TOKEN`].
    pub tokens: Vec<MintedToken>,
    /// Requested sources that got nothing, with why.
    pub excluded: Vec<Excluded>,
}

/// One token to mint.
#[derive(Debug, Clone)]
struct Group {
    installation: Installation,
    permissions: PermissionSet,
    /// Canonical repository names; `None` = the whole installation.
    repos: Option<BTreeSet<String>>,
    /// Sources (as the caller wrote them) that this group serves, for exclusions on failure.
    sources: Vec<String>,
    /// Names of the policy rules whose grants the token carries, for the audit event.
    rules: BTreeSet<String>,
}

/// Evaluate and mint.
#[tracing::instrument(skip_all, fields(workspace.id = %auth.session.workspace_id, session.id = %auth.session.id))]
pub async fn mint(
    app: &App,
    auth: &Authenticated,
    input: MintInput,
    request_id: &str,
) -> FlowResult<Minted> {
    // Quotas before anything else: every authenticated attempt counts, well-formed or not.
    app.mint_quota
        .admit(&auth.session.id, &auth.session.workspace_id)?;
    validate::admit(app, auth).await?;
    let request = validate::validate(input)?;
    let mut audit = record::event(auth, &request, request_id);
    let mut plan = plan::plan(app, &auth.session, &request).await?;
    audit.policy_version = plan.policy_version;
    let issued = issue::issue(app, std::mem::take(&mut plan.groups)).await;
    plan.exclude_refused(issued.refused, request.explicit());
    if let Some(failure) = issued.failure {
        return Err(record::failure(app, audit, &request, &plan, &issued.minted, failure).await);
    }
    let tokens = record::record(app, &auth.session, &request, &plan, issued.minted, audit).await?;
    Ok(respond(app, &request, tokens, plan.exclusions))
}

/// Count what was handed out and left out, and answer.
fn respond(
    app: &App,
    request: &validate::MintRequest,
    tokens: Vec<MintedToken>,
    excluded: Vec<Excluded>,
) -> Minted {
    app.metrics.tokens_minted.inc_by(tokens.len() as u64);
    for ex in &excluded {
        app.metrics
            .exclusions
            .get_or_create(&ReasonLabels {
                reason: ex.reason.as_str().to_owned(),
            })
            .inc();
    }
    Metrics::outcome(&app.metrics.mints, "success", "");
    tracing::info!(tokens = tokens.len(), excluded = excluded.len(), policy.name = %request.policy, "minted {} tokens", tokens.len());
    Minted { tokens, excluded }
}
