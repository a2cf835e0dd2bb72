//! Compiling one validated rule: its `match` values, its `match_patterns`, its grants merged per
//! owner, and the warnings a valid but surprising rule earns. Each step reports every problem it
//! finds, so an administrator sees all of them at once.

use super::matcher::{compile_glob, compile_pattern, has_glob, is_login_claim};
use super::matcher::{ClaimMatcher, Test, ValueMatcher};
use super::model::{self, MatchValue, RepoPattern, RuleDocument};
use super::permissions::Level;
use super::permissions::{self, PermissionScope};
use super::warning::{self, Warning, WarningCode};
use super::{CompiledRule, OwnerBinding, RepoSelector};

/// Claims GitHub Actions puts in its OIDC tokens (GitHub's documentation: "About security hardening with OpenID Connect", the token's claims). A `match` on anything else
/// (`refs` for `ref`) can never be satisfied by a GitHub Actions caller, so it earns a warning.
const KNOWN_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "sub",
    "exp",
    "iat",
    "nbf",
    "jti",
    "actor",
    "actor_id",
    "base_ref",
    "head_ref",
    "ref",
    "ref_type",
    "ref_protected",
    "sha",
    "event_name",
    "run_id",
    "run_number",
    "run_attempt",
    "runner_environment",
    "environment",
    "job_workflow_ref",
    "job_workflow_sha",
    "workflow",
    "workflow_ref",
    "workflow_sha",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "enterprise",
    "enterprise_id",
    "check_run_id",
];

/// Prefix of GitHub's custom-property claims (`repo_property_team`).
const REPO_PROPERTY_CLAIM_PREFIX: &str = "repo_property_";

/// Compile `rule`, the `index`th of its policy, pushing its errors (each prefixed with the
/// rule's name) and its warnings (each with its path).
pub(super) fn rule(
    index: usize,
    rule: &RuleDocument,
    errors: &mut Vec<String>,
    warnings: &mut Vec<Warning>,
) -> CompiledRule {
    let path = format!("rules[{index}]");
    let mut matchers = match_values(rule, errors);
    matchers.extend(match_patterns(rule, errors));
    warnings.extend(unknown_claim_warnings(rule, &path));
    // Ids survive renames and cannot be re-registered; logins can (GitHub's documentation,
    // "About security hardening with OpenID Connect", recommends the `*_id` claims).
    if !model::binds_an_id(rule) {
        warnings.push(Warning::new(
            format!("{path}.match"),
            WarningCode::OwnerBoundByName,
            format!(
                "rule {} binds the owner by login only: if the account is renamed or deleted, \
                 whoever registers the login gets this rule; add repository_owner_id to bind \
                 the immutable id",
                rule.name
            ),
        ));
    }
    warnings.extend(warning::write_without_ref(rule, &path));
    let grants = grants_by_owner(&rule.repositories);
    warnings.extend(grant_warnings(rule, &path, &grants));
    CompiledRule {
        name: rule.name.clone(),
        issuer: rule.issuer.clone(),
        matchers,
        owner_bindings: owner_bindings(rule),
        grants,
        permissions: rule.permissions.clone(),
    }
}

/// `match`: per claim, any of its values (exact, or a glob when it holds `*` or `?`).
fn match_values(rule: &RuleDocument, errors: &mut Vec<String>) -> Vec<ClaimMatcher> {
    let mut matchers = Vec::with_capacity(rule.match_claims.len());
    for (claim, values) in &rule.match_claims {
        let ci = is_login_claim(claim);
        let mut compiled = Vec::with_capacity(values.len());
        for v in values {
            compiled.push(match v {
                MatchValue::Bool(b) => ValueMatcher::Bool(*b),
                MatchValue::String(s) if has_glob(s) => match compile_glob(s, ci) {
                    Ok(re) => ValueMatcher::Glob(re),
                    Err(e) => {
                        errors.push(format!("rule {}: match.{claim}: {e}", rule.name));
                        continue;
                    }
                },
                MatchValue::String(s) => ValueMatcher::Exact(s.clone()),
            });
        }
        matchers.push(ClaimMatcher {
            claim: claim.clone(),
            expected: written_values(values),
            test: Test::AnyOf(compiled),
        });
    }
    matchers
}

/// A `match` entry's values as written: one value alone, several as a list.
fn written_values(values: &[MatchValue]) -> serde_json::Value {
    let json = |v: &MatchValue| match v {
        MatchValue::String(s) => serde_json::Value::String(s.clone()),
        MatchValue::Bool(b) => serde_json::Value::Bool(*b),
    };
    match values {
        [one] => json(one),
        many => many.iter().map(json).collect(),
    }
}

/// The `match` entries that bind the caller's owner, reduced to the owners each admits.
fn owner_bindings(rule: &RuleDocument) -> Vec<OwnerBinding> {
    rule.match_claims
        .iter()
        .filter_map(|(claim, values)| {
            model::bound_owners(claim, values).map(|owners| OwnerBinding {
                claim: claim.clone(),
                owners,
            })
        })
        .collect()
}

/// `match_patterns`: anchored regexes.
fn match_patterns(rule: &RuleDocument, errors: &mut Vec<String>) -> Vec<ClaimMatcher> {
    let mut matchers = Vec::with_capacity(rule.match_patterns.len());
    for (claim, pattern) in &rule.match_patterns {
        match compile_pattern(pattern, is_login_claim(claim)) {
            Ok(re) => matchers.push(ClaimMatcher {
                claim: claim.clone(),
                expected: serde_json::Value::String(pattern.clone()),
                test: Test::Pattern(re),
            }),
            Err(e) => errors.push(format!("rule {}: match_patterns.{claim}: {e}", rule.name)),
        }
    }
    matchers
}

/// A rule that matches a claim GitHub Actions never sends can never admit an Actions caller.
fn unknown_claim_warnings(rule: &RuleDocument, path: &str) -> Vec<Warning> {
    let entries = (rule.match_claims.keys().map(|c| ("match", c)))
        .chain(rule.match_patterns.keys().map(|c| ("match_patterns", c)));
    entries
        .filter(|(_, claim)| {
            !KNOWN_CLAIMS.contains(&claim.as_str())
                && !claim.starts_with(REPO_PROPERTY_CLAIM_PREFIX)
        })
        .map(|(section, claim)| {
            Warning::new(
                format!("{path}.{section}.{claim}"),
                WarningCode::UnknownClaim,
                format!(
                    "rule {} matches claim {claim}, which GitHub Actions tokens do not carry: \
                     the rule never matches a caller without it",
                    rule.name
                ),
            )
        })
        .collect()
}

/// One selector per owner (owners compared case-insensitively, first spelling kept); `owner/*`
/// (or `owner/**`) makes it the whole installation, which absorbs the owner's other patterns.
fn grants_by_owner(repositories: &[RepoPattern]) -> Vec<(String, RepoSelector)> {
    let mut grants: Vec<(String, RepoSelector)> = Vec::new();
    for repo in repositories {
        let whole = repo.name.chars().all(|c| c == '*');
        let idx = match grants
            .iter()
            .position(|(o, _)| o.eq_ignore_ascii_case(&repo.owner))
        {
            Some(idx) => idx,
            None => {
                grants.push((repo.owner.clone(), RepoSelector::Patterns(Vec::new())));
                grants.len() - 1
            }
        };
        let sel = &mut grants[idx].1;
        match sel {
            RepoSelector::All => {}
            _ if whole => *sel = RepoSelector::All,
            RepoSelector::Patterns(ps) => ps.push(repo.name.clone()),
        }
    }
    grants
}

/// Grants that reach further than the named repositories: whole installations, organization and
/// user permissions.
fn grant_warnings(
    rule: &RuleDocument,
    path: &str,
    grants: &[(String, RepoSelector)],
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let writes = rule.permissions.0.values().any(|l| *l >= Level::Write);
    for (owner, sel) in grants {
        if *sel != RepoSelector::All {
            continue;
        }
        let (code, reach) = if writes {
            (WarningCode::WholeInstallationWrite, " with write access: ")
        } else {
            (WarningCode::WholeInstallation, ": ")
        };
        warnings.push(Warning::new(
            format!("{path}.grant.repositories"),
            code,
            format!(
                "rule {} grants {owner}/*{reach}the whole installation, including \
                 repositories created later",
                rule.name
            ),
        ));
    }
    for key in rule.permissions.0.keys() {
        let (code, message) = match permissions::scope(key) {
            Some(PermissionScope::Organization) => (
                WarningCode::OrganizationPermission,
                format!(
                    "rule {} grants organization permission {key}: reaches the whole \
                     organization, not only the granted repositories",
                    rule.name
                ),
            ),
            Some(PermissionScope::User) => (
                WarningCode::UserPermission,
                format!(
                    "rule {} grants user permission {key}: acts on the account of the user \
                     who owns the installation",
                    rule.name
                ),
            ),
            Some(PermissionScope::Repository) | None => continue,
        };
        warnings.push(Warning::new(
            format!("{path}.grant.permissions.{key}"),
            code,
            message,
        ));
    }
    warnings
}
