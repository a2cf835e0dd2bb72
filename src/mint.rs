//! The mint (`POST /sts`): evaluate the chosen policy, group what is allowed by (installation,
//! permission set), mint one token per group in parallel, report exclusions, and record
//! everything. No token leaves the broker unaudited: if recording fails, the tokens are revoked
//! at GitHub and the caller gets an error.

use crate::app::App;
use crate::audit::{AuditEvent, AuditKind, AuditToken, Exclusion, Outcome};
use crate::crypto::fingerprint;
use crate::exchange::{actor_from_claims, audit_refusal, format_time, Authenticated};
use crate::github::{GitHubError, Installation, InstallationToken, Repository, TokenRequest};
use crate::http::error::{ApiError, ApiResult};
use crate::http::types::{Excluded, MintRequest, MintResponse, Token};
use crate::metrics::{Metrics, ReasonLabels};
use crate::policy::{CompiledPolicy, PermissionSet, RepoDecision, RepoRef, RepoSelector};
use crate::session::GITHUB_ACTIONS_SESSION;
use crate::store::{InstallationLink, IssuedToken};
use futures::future::join_all;
use secrecy::ExposeSecret as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use time::OffsetDateTime;

/// Most sources one request may name: bounds the work (and GitHub calls) one caller can cause.
pub const MAX_SOURCES: usize = 100;
/// GitHub accepts at most 500 repositories per installation token; larger groups are split.
pub const MAX_REPOS_PER_TOKEN: usize = 500;
/// Policy used when the request names none (what Atmos sends by default).
pub const DEFAULT_POLICY: &str = "default";

/// Exclusion reasons of the contract.
pub mod reason {
    /// No link for the owner, or the installation cannot reach the repository.
    pub const NOT_INSTALLED: &str = "not_installed_in_workspace";
    /// The installation is suspended.
    pub const SUSPENDED: &str = "installation_suspended";
    /// No policy of that name, or no rule grants the repository.
    pub const NO_POLICY: &str = "no_trust_policy";
    /// Some rule grants the repository but the caller fails its match.
    pub const DENIED: &str = "trust_policy_denied";
    /// The stored policy no longer compiles, or grants what the installation cannot give.
    pub const INVALID: &str = "trust_policy_invalid";
}

/// Is `name` a well-formed policy name (`[a-z0-9][a-z0-9._-]{0,62}`)?
pub fn valid_policy_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
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
}

/// Evaluate and mint.
#[tracing::instrument(skip_all, fields(workspace.id = %auth.session.workspace_id, session.id = %auth.session.id))]
pub async fn mint(
    app: &App,
    auth: &Authenticated,
    req: MintRequest,
    request_id: &str,
) -> ApiResult<MintResponse> {
    let session = &auth.session;
    if auth.claims.typ != GITHUB_ACTIONS_SESSION {
        app.metrics.deny("not_github_actions_session");
        return Err(ApiError::bad_request(
            "not_github_actions_session",
            "GitHub STS requires a session made from a GitHub Actions OIDC token",
        ));
    }
    let workspace = app.store.get_workspace(&session.workspace_id).await?;
    if !workspace.as_ref().is_some_and(|w| w.sts_enabled) {
        app.metrics.deny("sts_not_entitled");
        Metrics::outcome(&app.metrics.mints, "denied", "sts_not_entitled");
        return Err(ApiError::forbidden(
            "sts_not_entitled",
            "the workspace is not entitled to GitHub STS or the feature is disabled",
        ));
    }

    let policy_name = req
        .policy_name
        .clone()
        .unwrap_or_else(|| DEFAULT_POLICY.to_owned());
    let mut errors = Vec::new();
    if !valid_policy_name(&policy_name) {
        errors.push("policyName: must match [a-z0-9][a-z0-9._-]{0,62}".to_owned());
    }
    let mut sources: Vec<(String, RepoRef)> = Vec::new();
    if let Some(list) = &req.sources {
        if list.len() > MAX_SOURCES {
            errors.push(format!(
                "sources: at most {MAX_SOURCES} repositories per request"
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, s) in list.iter().enumerate() {
            match RepoRef::parse(s) {
                Some(r) => {
                    if seen.insert(s.to_ascii_lowercase()) {
                        sources.push((s.clone(), r));
                    }
                }
                None => errors.push(format!("sources[{i}]: `{s}` is not an owner/repo name")),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }

    let mut audit = AuditEvent::new(AuditKind::Mint, "mint");
    audit.workspace_id = Some(session.workspace_id.clone());
    audit.request_id = Some(request_id.to_owned());
    audit.actor = actor_from_claims(&session.claims, Some(&session.id));
    audit.policy_name = Some(policy_name.clone());
    let mut details = serde_json::Map::new();
    details.insert("sources".into(), serde_json::json!(req.sources));

    let claims = session.claims.as_object().cloned().unwrap_or_default();
    let mut exclusions: Vec<Exclusion> = Vec::new();
    let mut hidden_exclusions: Vec<Exclusion> = Vec::new();
    let mut denial_reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut groups: BTreeMap<(i64, PermissionSet), Group> = BTreeMap::new();

    let stored = app
        .store
        .get_policy(&session.workspace_id, &policy_name)
        .await?;
    let compiled = stored.as_ref().map(|p| {
        audit.policy_version = Some(p.version);
        app.compiled_policy(p)
    });
    let mut planner = Planner {
        app,
        workspace_id: &session.workspace_id,
        links: HashMap::new(),
        installations: HashMap::new(),
        repositories: HashMap::new(),
    };

    match compiled.as_deref() {
        None => {
            for (raw, _) in &sources {
                exclusions.push(Exclusion {
                    repo: raw.clone(),
                    reason: reason::NO_POLICY.into(),
                });
            }
        }
        Some(Err(policy_errors)) => {
            details.insert("policyErrors".into(), serde_json::json!(policy_errors));
            for (raw, _) in &sources {
                exclusions.push(Exclusion {
                    repo: raw.clone(),
                    reason: reason::INVALID.into(),
                });
            }
        }
        Some(Ok(policy)) if req.sources.is_some() => {
            for (raw, repo) in &sources {
                match policy.decide(&session.issuer, &claims, repo) {
                    RepoDecision::NotGranted => {
                        exclusions.push(Exclusion {
                            repo: raw.clone(),
                            reason: reason::NO_POLICY.into(),
                        });
                    }
                    RepoDecision::Denied { reasons } => {
                        denial_reasons.insert(raw.clone(), reasons);
                        exclusions.push(Exclusion {
                            repo: raw.clone(),
                            reason: reason::DENIED.into(),
                        });
                    }
                    RepoDecision::Granted { permissions, .. } => {
                        match planner.resolve_repo(repo).await? {
                            Err(why) => exclusions.push(Exclusion {
                                repo: raw.clone(),
                                reason: why.into(),
                            }),
                            Ok((installation, canonical)) => {
                                let group = groups
                                    .entry((installation.id, permissions.clone()))
                                    .or_insert_with(|| Group {
                                        installation,
                                        permissions,
                                        repos: Some(BTreeSet::new()),
                                        sources: Vec::new(),
                                    });
                                if let Some(repos) = group.repos.as_mut() {
                                    repos.insert(canonical);
                                }
                                group.sources.push(raw.clone());
                            }
                        }
                    }
                }
            }
        }
        Some(Ok(policy)) => {
            plan_all_grants(
                &mut planner,
                policy,
                &session.issuer,
                &claims,
                &mut groups,
                &mut hidden_exclusions,
            )
            .await?;
        }
    }

    // Split oversized groups: GitHub takes at most 500 repositories per token.
    let mut to_mint: Vec<Group> = Vec::new();
    for group in groups.into_values() {
        match &group.repos {
            Some(repos) if repos.len() > MAX_REPOS_PER_TOKEN => {
                let names: Vec<String> = repos.iter().cloned().collect();
                for chunk in names.chunks(MAX_REPOS_PER_TOKEN) {
                    let mut g = group.clone();
                    g.repos = Some(chunk.iter().cloned().collect());
                    to_mint.push(g);
                }
            }
            _ => to_mint.push(group),
        }
    }

    let results = join_all(to_mint.iter().map(|g| {
        let request = TokenRequest {
            repositories: g.repos.as_ref().map(|r| r.iter().cloned().collect()),
            permissions: g.permissions.to_strings(),
        };
        let github = &app.github;
        async move {
            github
                .create_installation_token(g.installation.id, &request)
                .await
        }
    }))
    .await;

    let mut minted: Vec<(Group, InstallationToken)> = Vec::new();
    let mut hard_failure: Option<GitHubError> = None;
    for (group, result) in to_mint.into_iter().zip(results) {
        let why = match result {
            Ok(token) => {
                minted.push((group, token));
                continue;
            }
            Err(GitHubError::Suspended) => reason::SUSPENDED,
            Err(GitHubError::NotFound | GitHubError::RepositoryNotAccessible) => {
                reason::NOT_INSTALLED
            }
            Err(GitHubError::PermissionNotGranted(_)) => reason::INVALID,
            Err(e) => {
                tracing::warn!(github.installation_id = group.installation.id, error = %e, "mint failed at github");
                hard_failure.get_or_insert(e);
                continue;
            }
        };
        let target = if req.sources.is_some() {
            &mut exclusions
        } else {
            &mut hidden_exclusions
        };
        let repos: Vec<String> = if group.sources.is_empty() {
            vec![format!("{}/*", group.installation.account_login)]
        } else {
            group.sources.clone()
        };
        for repo in repos {
            target.push(Exclusion {
                repo,
                reason: why.into(),
            });
        }
    }

    if let Some(err) = hard_failure {
        let ids = revoke_minted(app, &minted).await;
        audit.outcome = Outcome::Failure;
        audit.reason = Some(err.code().to_owned());
        details.insert("revokedAfterFailure".into(), serde_json::json!(ids));
        audit.details = serde_json::Value::Object(details);
        audit_refusal(app, &audit).await;
        Metrics::outcome(&app.metrics.mints, "failure", err.code());
        return Err(err.into());
    }

    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    let mut tokens = Vec::new();
    for (group, minted_token) in &minted {
        let id = format!("tok_{}", uuid::Uuid::new_v4().simple());
        let value = minted_token.token.expose_secret();
        let owner = group.installation.account_login.clone();
        let repositories = group.repos.as_ref().map(|r| {
            r.iter()
                .map(|name| format!("{owner}/{name}"))
                .collect::<Vec<_>>()
        });
        let permissions = if minted_token.permissions.is_empty() {
            group.permissions.to_strings()
        } else {
            minted_token.permissions.clone()
        };
        rows.push(IssuedToken {
            id: id.clone(),
            workspace_id: session.workspace_id.clone(),
            session_id: Some(session.id.clone()),
            installation_id: group.installation.id,
            owner: owner.clone(),
            host: app.config.github.host.clone(),
            repositories: repositories.clone(),
            permissions: permissions.clone(),
            fingerprint: fingerprint(value),
            sealed_token: Some(app.sealer.seal(&id, value)),
            policy_name: policy_name.clone(),
            policy_version: audit.policy_version.unwrap_or_default(),
            created_at: now,
            expires_at: minted_token.expires_at,
            revoked_at: None,
        });
        audit.tokens.push(AuditToken {
            id: id.clone(),
            fingerprint: fingerprint(value),
            installation_id: group.installation.id,
            owner: owner.clone(),
            repositories: repositories.clone(),
            permissions: permissions.clone(),
            expires_at: Some(minted_token.expires_at),
        });
        tokens.push(Token {
            id,
            host: app.config.github.host.clone(),
            owner,
            token: value.to_owned(),
            expires_at: format_time(minted_token.expires_at),
            repositories,
            permissions,
            installation_id: group.installation.id,
        });
        if !audit.installation_ids.contains(&group.installation.id) {
            audit.installation_ids.push(group.installation.id);
        }
    }
    audit.exclusions = exclusions.clone();
    if !hidden_exclusions.is_empty() {
        details.insert("skipped".into(), serde_json::json!(hidden_exclusions));
    }
    if !denial_reasons.is_empty() {
        details.insert("denials".into(), serde_json::json!(denial_reasons));
    }
    audit.details = serde_json::Value::Object(details);
    audit.outcome = Outcome::Success;

    if let Err(e) = app.store.record_issuance(&rows, &audit).await {
        // The invariant: a token that cannot be recorded is not handed out.
        let ids = revoke_minted(app, &minted).await;
        tracing::error!(error = %e, revoked = ids.len(), "could not record issuance; minted tokens revoked");
        let mut failure = AuditEvent::new(AuditKind::Mint, "mint");
        failure.workspace_id = audit.workspace_id.clone();
        failure.request_id = audit.request_id.clone();
        failure.actor = audit.actor.clone();
        failure.policy_name = audit.policy_name.clone();
        failure.policy_version = audit.policy_version;
        failure.reason = Some("audit_write_failed".to_owned());
        failure.tokens = audit.tokens.clone();
        failure.details = serde_json::json!({ "revokedAtGitHub": ids.len() });
        audit_refusal(app, &failure).await;
        Metrics::outcome(&app.metrics.mints, "failure", "audit_write_failed");
        return Err(ApiError::internal("audit_write_failed", e.into()));
    }

    app.metrics.tokens_minted.inc_by(tokens.len() as u64);
    for ex in &exclusions {
        app.metrics
            .exclusions
            .get_or_create(&ReasonLabels {
                reason: ex.reason.clone(),
            })
            .inc();
    }
    Metrics::outcome(&app.metrics.mints, "success", "");
    tracing::info!(tokens = tokens.len(), excluded = exclusions.len(), policy.name = %policy_name, "minted {} tokens", tokens.len());
    Ok(MintResponse {
        tokens,
        excluded: exclusions
            .into_iter()
            .map(|e| Excluded {
                repo: e.repo,
                reason: e.reason,
            })
            .collect(),
    })
}

/// Revoke freshly minted tokens after a failure; returns how many GitHub confirmed.
async fn revoke_minted(app: &App, minted: &[(Group, InstallationToken)]) -> Vec<i64> {
    let results = join_all(minted.iter().map(|(g, t)| {
        let github = &app.github;
        async move {
            (
                g.installation.id,
                github.revoke_installation_token(&t.token).await,
            )
        }
    }))
    .await;
    results
        .into_iter()
        .filter_map(|(id, r)| match r {
            Ok(()) => Some(id),
            Err(e) => {
                tracing::error!(github.installation_id = id, error = %e, "could not revoke a token minted for a failed request");
                None
            }
        })
        .collect()
}

/// Looks up links and installations once per request.
struct Planner<'a> {
    app: &'a App,
    workspace_id: &'a str,
    links: HashMap<String, Option<InstallationLink>>,
    installations: HashMap<i64, Result<Installation, &'static str>>,
    repositories: HashMap<i64, Result<Arc<Vec<Repository>>, &'static str>>,
}

impl Planner<'_> {
    async fn link(&mut self, owner: &str) -> ApiResult<Option<InstallationLink>> {
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
    ) -> ApiResult<Result<Installation, &'static str>> {
        if let Some(hit) = self.installations.get(&link.installation_id) {
            return Ok(hit.clone());
        }
        let result = match self.app.github.installation(link.installation_id).await {
            Ok(i) if i.suspended => Err(reason::SUSPENDED),
            Ok(i) => Ok(i),
            Err(GitHubError::NotFound) => Err(reason::NOT_INSTALLED),
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
    ) -> ApiResult<Result<Arc<Vec<Repository>>, &'static str>> {
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
            Err(GitHubError::NotFound) => reason::NOT_INSTALLED,
            Err(GitHubError::Suspended) => reason::SUSPENDED,
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
    ) -> ApiResult<Result<(Installation, String), &'static str>> {
        let Some(link) = self.link(&repo.owner).await? else {
            return Ok(Err(reason::NOT_INSTALLED));
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
            return Ok(Err(reason::NOT_INSTALLED));
        };
        Ok(Ok((installation, found.name.clone())))
    }
}

/// Without `sources`: everything the caller's matching rules grant. Owners without a link or with
/// a suspended installation are skipped (and noted in the audit event only).
async fn plan_all_grants(
    planner: &mut Planner<'_>,
    policy: &CompiledPolicy,
    issuer: &str,
    claims: &crate::policy::Claims,
    groups: &mut BTreeMap<(i64, PermissionSet), Group>,
    skipped: &mut Vec<Exclusion>,
) -> ApiResult<()> {
    // Per installation: merged permissions of whole-installation grants, and per repository the
    // merged permissions of pattern grants.
    let mut whole: BTreeMap<i64, (Installation, PermissionSet)> = BTreeMap::new();
    let mut per_repo: BTreeMap<(i64, String), (Installation, PermissionSet)> = BTreeMap::new();
    for grant in policy.grants(issuer, claims) {
        let Some(link) = planner.link(&grant.owner).await? else {
            skip(skipped, &grant.owner, reason::NOT_INSTALLED);
            continue;
        };
        let installation = match planner.installation(&link).await? {
            Ok(i) => i,
            Err(why) => {
                skip(skipped, &grant.owner, why);
                continue;
            }
        };
        match &grant.repositories {
            RepoSelector::All => {
                let entry = whole
                    .entry(installation.id)
                    .or_insert_with(|| (installation.clone(), PermissionSet::default()));
                entry.1.merge(&grant.permissions);
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
                        .or_insert_with(|| (installation.clone(), PermissionSet::default()));
                    entry.1.merge(&grant.permissions);
                }
            }
        }
    }
    for (id, (installation, permissions)) in &whole {
        groups.insert(
            (*id, permissions.clone()),
            Group {
                installation: installation.clone(),
                permissions: permissions.clone(),
                repos: None,
                sources: Vec::new(),
            },
        );
    }
    for ((id, name), (installation, mut permissions)) in per_repo {
        if let Some((_, all)) = whole.get(&id) {
            permissions.merge(all);
            if &permissions == all {
                continue; // the whole-installation token already covers it
            }
        }
        let group = groups
            .entry((id, permissions.clone()))
            .or_insert_with(|| Group {
                installation,
                permissions,
                repos: Some(BTreeSet::new()),
                sources: Vec::new(),
            });
        if let Some(repos) = group.repos.as_mut() {
            repos.insert(name);
        }
    }
    Ok(())
}

/// Note once per owner that its grants were skipped, for the audit event.
fn skip(skipped: &mut Vec<Exclusion>, owner: &str, why: &str) {
    let repo = format!("{owner}/*");
    if !skipped.iter().any(|e| e.repo.eq_ignore_ascii_case(&repo)) {
        skipped.push(Exclusion {
            repo,
            reason: why.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_are_lowercase_slugs() {
        for ok in ["default", "infra.v2", "a_b-c"] {
            assert!(valid_policy_name(ok), "{ok}");
        }
        for bad in ["", "Default", "../x", "a/b", ".hidden", &"a".repeat(64)] {
            assert!(!valid_policy_name(bad), "{bad}");
        }
    }
}
