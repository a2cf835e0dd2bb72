//! Second step of the mint: decide, per source (or per grant when no sources were named), what
//! may be minted, group it by (installation, permission set) and split groups GitHub would refuse.

use super::validate::{MintRequest, Source};
use super::{Excluded, Group, MAX_REPOS_PER_TOKEN};
use crate::app::App;
use crate::audit::ExclusionReason;
use crate::flow::FlowResult;
use crate::github::{GitHubError, Installation, Repository};
use crate::policy::{Claims, CompiledPolicy, PermissionSet, RepoDecision, RepoRef, RepoSelector};
use crate::store::{InstallationLink, SessionRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Groups keyed by (installation id, permissions): one token each (before splitting).
type Groups = BTreeMap<(i64, PermissionSet), Group>;

/// What the plan decided.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Version of the evaluated policy, when it exists.
    pub(super) policy_version: Option<i64>,
    /// Why the stored policy no longer compiles, when it does not.
    pub(super) policy_errors: Option<Vec<String>>,
    /// Requested sources left out, reported to the caller.
    pub(super) exclusions: Vec<Excluded>,
    /// Owners skipped when no sources were named: in the audit event only.
    pub(super) skipped: Vec<Excluded>,
    /// Why each rule failed, per denied source: in the audit event only.
    pub(super) denials: BTreeMap<String, Vec<String>>,
    /// The tokens to mint, at most [`MAX_REPOS_PER_TOKEN`] repositories each.
    pub(super) groups: Vec<Group>,
}

impl Plan {
    /// Exclude each source for `reason`.
    fn exclude_all(&mut self, sources: &[Source], reason: ExclusionReason) {
        self.exclusions
            .extend(sources.iter().map(|s| Excluded::new(s.raw.clone(), reason)));
    }

    /// Exclude what GitHub refused to mint: the caller's sources when it named them (reported),
    /// else the whole owner (audit only).
    pub(super) fn exclude_refused(
        &mut self,
        refused: Vec<(Group, ExclusionReason)>,
        explicit: bool,
    ) {
        for (group, reason) in refused {
            let target = if explicit {
                &mut self.exclusions
            } else {
                &mut self.skipped
            };
            if group.sources.is_empty() {
                let owner = format!("{}/*", group.installation.account_login);
                target.push(Excluded::new(owner, reason));
            } else {
                target.extend(group.sources.into_iter().map(|s| Excluded::new(s, reason)));
            }
        }
    }
}

/// Who asks: the workspace, and the caller's verified issuer and claims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) workspace_id: &'a str,
    pub(crate) issuer: &'a str,
    pub(crate) claims: &'a Claims,
}

/// A policy as the decision sees it: absent, no longer compiling, or compiled.
pub(crate) type PolicyState<'a> = Option<&'a Result<CompiledPolicy, Vec<String>>>;

/// Evaluate the request's stored policy for the session's caller.
pub(super) async fn plan(
    app: &App,
    session: &SessionRecord,
    request: &MintRequest,
) -> FlowResult<Plan> {
    let stored = app
        .store
        .get_policy(&session.workspace_id, request.policy.as_str())
        .await?;
    let compiled = stored.as_ref().map(|p| app.compiled_policy(p));
    let claims = session.claims.as_object().cloned().unwrap_or_default();
    let caller = Caller {
        workspace_id: &session.workspace_id,
        issuer: &session.issuer,
        claims: &claims,
    };
    let mut plan = decide(app, caller, compiled.as_deref(), request).await?;
    plan.policy_version = stored.as_ref().map(|p| p.version);
    Ok(plan)
}

/// The decision, shared by the mint and by explain (which must agree with it): per source (or
/// per grant when no sources were named), what may be minted with which permissions and through
/// which installation, and why the rest is left out. Asks GitHub only for (cached) installation
/// data, never for a token the caller would get.
pub(crate) async fn decide(
    app: &App,
    caller: Caller<'_>,
    policy: PolicyState<'_>,
    request: &MintRequest,
) -> FlowResult<Plan> {
    let mut plan = Plan::default();
    let mut planner = Planner::new(app, caller.workspace_id);
    let mut groups = Groups::new();
    match policy {
        None => plan.exclude_all(&request.sources, ExclusionReason::NoTrustPolicy),
        Some(Err(errors)) => {
            plan.policy_errors = Some(errors.clone());
            plan.exclude_all(&request.sources, ExclusionReason::TrustPolicyInvalid);
        }
        Some(Ok(policy)) if request.explicit() => {
            let ask = (policy, request.wanted.as_ref());
            plan_sources(
                &mut planner,
                ask,
                caller,
                &request.sources,
                &mut plan,
                &mut groups,
            )
            .await?;
        }
        Some(Ok(policy)) => {
            let ask = (policy, request.wanted.as_ref());
            plan_all_grants(&mut planner, ask, caller, &mut groups, &mut plan.skipped).await?;
        }
    }
    plan.groups = split(groups);
    Ok(plan)
}

/// The policy to evaluate, and the permissions the caller asked for (downscoping), if any.
type Ask<'a> = (&'a CompiledPolicy, Option<&'a PermissionSet>);

/// What the caller gets of `granted`: all of it, or its intersection with what was asked.
fn downscoped(granted: PermissionSet, wanted: Option<&PermissionSet>) -> PermissionSet {
    match wanted {
        Some(wanted) => granted.intersect(wanted),
        None => granted,
    }
}

/// With `sources`: the policy's verdict on each, and the installation that can reach it.
async fn plan_sources(
    planner: &mut Planner<'_>,
    (policy, wanted): Ask<'_>,
    caller: Caller<'_>,
    sources: &[Source],
    plan: &mut Plan,
    groups: &mut Groups,
) -> FlowResult<()> {
    for Source { raw, repo } in sources {
        let (permissions, rules) = match policy.decide(caller.issuer, caller.claims, repo) {
            RepoDecision::NotGranted => {
                plan.exclusions
                    .push(Excluded::new(raw.clone(), ExclusionReason::NoTrustPolicy));
                continue;
            }
            RepoDecision::Denied { reasons } => {
                plan.denials.insert(raw.clone(), reasons);
                plan.exclusions.push(Excluded::new(
                    raw.clone(),
                    ExclusionReason::TrustPolicyDenied,
                ));
                continue;
            }
            RepoDecision::Granted { permissions, rules } => (permissions, rules),
        };
        let permissions = downscoped(permissions, wanted);
        if permissions.0.is_empty() {
            // Granted, but nothing of what the caller asked for.
            plan.denials.insert(
                raw.clone(),
                vec!["no granted permission was asked for".to_owned()],
            );
            plan.exclusions.push(Excluded::new(
                raw.clone(),
                ExclusionReason::TrustPolicyDenied,
            ));
            continue;
        }
        let (installation, canonical) = match planner.resolve_repo(repo).await? {
            Ok(found) => found,
            Err(why) => {
                plan.exclusions.push(Excluded::new(raw.clone(), why));
                continue;
            }
        };
        add_repo(groups, installation, permissions, canonical, rules)
            .sources
            .push(raw.clone());
    }
    Ok(())
}

/// What the grants of one installation add up to: its installation, merged permissions, and
/// the rules they come from.
type Merged = (Installation, PermissionSet, BTreeSet<String>);

/// Without `sources`: everything the caller's matching rules grant. Owners without a link or with
/// a suspended installation are skipped (and noted in the audit event only).
async fn plan_all_grants(
    planner: &mut Planner<'_>,
    (policy, wanted): Ask<'_>,
    caller: Caller<'_>,
    groups: &mut Groups,
    skipped: &mut Vec<Excluded>,
) -> FlowResult<()> {
    // Per installation: merged permissions of whole-installation grants, and per repository the
    // merged permissions of pattern grants.
    let mut whole: BTreeMap<i64, Merged> = BTreeMap::new();
    let mut per_repo: BTreeMap<(i64, String), Merged> = BTreeMap::new();
    for mut grant in policy.grants(caller.issuer, caller.claims) {
        grant.permissions = downscoped(grant.permissions, wanted);
        if grant.permissions.0.is_empty() {
            continue; // nothing of it was asked for
        }
        let Some(link) = planner.link(&grant.owner).await? else {
            skip(
                skipped,
                &grant.owner,
                ExclusionReason::NotInstalledInWorkspace,
            );
            continue;
        };
        let installation = match planner.installation(&link).await? {
            Ok(i) => i,
            Err(why) => {
                skip(skipped, &grant.owner, why);
                continue;
            }
        };
        let fresh = || {
            (
                installation.clone(),
                PermissionSet::default(),
                BTreeSet::new(),
            )
        };
        match &grant.repositories {
            RepoSelector::All => {
                let entry = whole.entry(installation.id).or_insert_with(fresh);
                entry.1.merge(&grant.permissions);
                entry.2.insert(grant.rule.clone());
            }
            RepoSelector::Patterns(_) => {
                let repos = match planner.repositories(&installation).await? {
                    Ok(r) => r,
                    Err(why) => {
                        skip(skipped, &grant.owner, why);
                        continue;
                    }
                };
                for r in repos.iter().filter(|r| grant.repositories.matches(&r.name)) {
                    let entry = per_repo
                        .entry((installation.id, r.name.clone()))
                        .or_insert_with(fresh);
                    entry.1.merge(&grant.permissions);
                    entry.2.insert(grant.rule.clone());
                }
            }
        }
    }
    for (id, (installation, permissions, rules)) in &whole {
        groups.insert(
            (*id, permissions.clone()),
            Group {
                installation: installation.clone(),
                permissions: permissions.clone(),
                repos: None,
                sources: Vec::new(),
                rules: rules.clone(),
            },
        );
    }
    for ((id, name), (installation, mut permissions, mut rules)) in per_repo {
        if let Some((_, all, all_rules)) = whole.get(&id) {
            permissions.merge(all);
            if &permissions == all {
                continue; // the whole-installation token already covers it
            }
            rules.extend(all_rules.iter().cloned());
        }
        add_repo(groups, installation, permissions, name, rules);
    }
    Ok(())
}

/// Add `repo` to the per-repository group of `installation` with `permissions` (created empty
/// on first use), with the rules that granted it; the group, for the caller to note more.
fn add_repo(
    groups: &mut Groups,
    installation: Installation,
    permissions: PermissionSet,
    repo: String,
    rules: impl IntoIterator<Item = String>,
) -> &mut Group {
    let group = groups
        .entry((installation.id, permissions.clone()))
        .or_insert_with(|| Group {
            installation,
            permissions,
            repos: Some(BTreeSet::new()),
            sources: Vec::new(),
            rules: BTreeSet::new(),
        });
    if let Some(repos) = group.repos.as_mut() {
        repos.insert(repo);
    }
    group.rules.extend(rules);
    group
}

/// Note once per owner that its grants were skipped, for the audit event.
fn skip(skipped: &mut Vec<Excluded>, owner: &str, why: ExclusionReason) {
    let repo = format!("{owner}/*");
    if !skipped.iter().any(|e| e.repo.eq_ignore_ascii_case(&repo)) {
        skipped.push(Excluded::new(repo, why));
    }
}

/// Split groups of more than [`MAX_REPOS_PER_TOKEN`] repositories, which GitHub refuses.
fn split(groups: Groups) -> Vec<Group> {
    let mut to_mint = Vec::new();
    for group in groups.into_values() {
        match &group.repos {
            Some(repos) if repos.len() > MAX_REPOS_PER_TOKEN => {
                let names: Vec<String> = repos.iter().cloned().collect();
                for chunk in names.chunks(MAX_REPOS_PER_TOKEN) {
                    let mut part = group.clone();
                    part.repos = Some(chunk.iter().cloned().collect());
                    to_mint.push(part);
                }
            }
            _ => to_mint.push(group),
        }
    }
    to_mint
}

/// Looks up links and installations once per request.
struct Planner<'a> {
    app: &'a App,
    workspace_id: &'a str,
    links: HashMap<String, Option<InstallationLink>>,
    installations: HashMap<i64, Result<Installation, ExclusionReason>>,
    repositories: HashMap<i64, Result<Arc<Vec<Repository>>, ExclusionReason>>,
}

impl<'a> Planner<'a> {
    fn new(app: &'a App, workspace_id: &'a str) -> Self {
        Self {
            app,
            workspace_id,
            links: HashMap::new(),
            installations: HashMap::new(),
            repositories: HashMap::new(),
        }
    }

    /// The workspace's link for `owner` (case-insensitive).
    async fn link(&mut self, owner: &str) -> FlowResult<Option<InstallationLink>> {
        let key = owner.to_ascii_lowercase();
        if let Some(hit) = self.links.get(&key) {
            return Ok(hit.clone());
        }
        let link = self
            .app
            .store
            .find_installation(self.workspace_id, owner)
            .await?;
        self.links.insert(key, link.clone());
        Ok(link)
    }

    /// The installation behind a link, or the exclusion reason.
    async fn installation(
        &mut self,
        link: &InstallationLink,
    ) -> FlowResult<Result<Installation, ExclusionReason>> {
        if let Some(hit) = self.installations.get(&link.installation_id) {
            return Ok(hit.clone());
        }
        let result = match self.app.github.installation(link.installation_id).await {
            Ok(i) if i.suspended => Err(ExclusionReason::InstallationSuspended),
            Ok(i) => Ok(i),
            Err(GitHubError::NotFound) => Err(ExclusionReason::NotInstalledInWorkspace),
            Err(e) => return Err(e.into()),
        };
        self.installations
            .insert(link.installation_id, result.clone());
        Ok(result)
    }

    /// The repositories `installation` can reach, or the exclusion reason.
    ///
    /// The installation lookup is cached, so it can still say "active" when GitHub already
    /// suspended or removed the installation; the listing (which mints a token) is then the
    /// first to know. Both ways of learning it must end in the same exclusion, whichever path
    /// (with or without `sources`) asked. The answer is remembered for the rest of the request
    /// so every grant on that installation agrees and GitHub is asked once.
    async fn repositories(
        &mut self,
        installation: &Installation,
    ) -> FlowResult<Result<Arc<Vec<Repository>>, ExclusionReason>> {
        if let Some(hit) = self.repositories.get(&installation.id) {
            return Ok(hit.clone());
        }
        let why = match self
            .app
            .github
            .installation_repositories(installation.id)
            .await
        {
            Ok(repos) => {
                let repos = Arc::new(repos);
                self.repositories
                    .insert(installation.id, Ok(Arc::clone(&repos)));
                return Ok(Ok(repos));
            }
            Err(GitHubError::NotFound) => ExclusionReason::NotInstalledInWorkspace,
            Err(GitHubError::Suspended) => ExclusionReason::InstallationSuspended,
            Err(e) => return Err(e.into()),
        };
        self.installations.insert(installation.id, Err(why));
        self.repositories.insert(installation.id, Err(why));
        Ok(Err(why))
    }

    /// Link, installation and canonical repository name for a granted source.
    async fn resolve_repo(
        &mut self,
        repo: &RepoRef,
    ) -> FlowResult<Result<(Installation, String), ExclusionReason>> {
        let Some(link) = self.link(&repo.owner).await? else {
            return Ok(Err(ExclusionReason::NotInstalledInWorkspace));
        };
        let installation = match self.installation(&link).await? {
            Ok(i) => i,
            Err(why) => return Ok(Err(why)),
        };
        let repos = match self.repositories(&installation).await? {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        let Some(found) = repos
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(&repo.name))
        else {
            return Ok(Err(ExclusionReason::NotInstalledInWorkspace));
        };
        Ok(Ok((installation, found.name.clone())))
    }
}

#[cfg(test)]
mod tests;
