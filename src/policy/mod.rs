//! Trust policies: parsed and compiled once, then evaluated per request. Deny by default.
//!
//! A policy is a list of rules; each rule matches the caller's OIDC claims and grants
//! repositories with permissions. See `docs/policies.md` for the format. Knows nothing about
//! axum, the store or GitHub.

mod compile;
mod matcher;
mod model;
mod permissions;
mod trace;
mod warning;

pub use matcher::{MAX_REGEX_LEN, REGEX_SIZE_LIMIT};
pub use model::{
    MatchValue, PolicyDocument, RepoPattern, RuleDocument, MAX_COMPILED_MATCHERS, MAX_POLICY_BYTES,
    MAX_RULES, MAX_RULE_NAME_LEN,
};
pub use permissions::{Level, PermissionScope, PermissionSet};
pub use trace::{CheckTrace, RuleTrace, WHOLE_INSTALLATION};
pub use warning::{Warning, WarningCode};

use matcher::name_glob_matches;
use matcher::{ClaimMatcher, Mismatch};
use serde_json::{Map, Value};

/// Caller's claims (a JSON object). Only string and bool values ever match.
pub type Claims = Map<String, Value>;

/// GitHub Actions' issuer: the default `issuer` of a rule.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// How the admin sent the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFormat {
    /// `application/json`.
    Json,
    /// `application/yaml` (also `text/yaml`, `application/x-yaml`).
    Yaml,
}

impl PolicyFormat {
    /// `json` or `yaml`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Yaml => "yaml",
        }
    }

    /// The inverse of [`as_str`](Self::as_str), for reading a stored policy back.
    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "yaml" => Some(Self::Yaml),
            _ => None,
        }
    }

    /// From a `Content-Type` header value (parameters such as `charset` ignored). Exactly the
    /// types `openapi.yaml` lists for `PUT .../policies/{name}`: anything else is answered 415
    /// there, so `application/*+json` is not guessed to be JSON.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/json" => Some(Self::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(Self::Yaml)
            }
            _ => None,
        }
    }
}

/// `owner/name` of a repository, as the caller or policy wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    /// Owner login.
    pub owner: String,
    /// Repository name.
    pub name: String,
}

impl RepoRef {
    /// Parse `owner/name`; `None` unless exactly one `/` with an owner of 1–39 letters, digits
    /// or `-`, and a name of 1–100 letters, digits, `.`, `_` or `-` other than `.` and `..`.
    pub fn parse(s: &str) -> Option<Self> {
        let (owner, name) = s.split_once('/')?;
        if !model::valid_owner(owner) || !model::valid_repo_name(name) {
            return None;
        }
        Some(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Which repositories of an owner a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSelector {
    /// `owner/*`: the whole installation.
    All,
    /// Names and name globs.
    Patterns(Vec<String>),
}

impl RepoSelector {
    /// Does the selector cover repository `name` (case-insensitive, as GitHub names are)?
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::All => !name.is_empty() && !name.contains('/'),
            Self::Patterns(patterns) => patterns.iter().any(|p| name_glob_matches(p, name)),
        }
    }
}

/// What one matching rule grants on one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Rule name.
    pub rule: String,
    /// Owner login as written in the policy.
    pub owner: String,
    /// Which repositories.
    pub repositories: RepoSelector,
    /// With which permissions.
    pub permissions: PermissionSet,
}

/// The verdict for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoDecision {
    /// At least one rule that grants the repo matched the caller. Permissions are the union
    /// (highest level per key) over every such rule.
    Granted {
        /// Merged permissions.
        permissions: PermissionSet,
        /// Names of the rules that granted it.
        rules: Vec<String>,
    },
    /// Some rules that grant the repo are meant for the caller's owner (their owner binding
    /// admits it), but the caller failed each of them. One explanation per such rule
    /// (`rule infra-main: claim ref does not match`), for logs and audit only.
    Denied {
        /// Why each rule failed.
        reasons: Vec<String>,
    },
    /// No rule meant for the caller's owner grants the repo.
    NotGranted,
}

/// One `match` entry that binds the caller's owner (see `docs/policies.md`, "The owner-binding
/// rule"), reduced to the owners it admits.
#[derive(Debug, Clone)]
struct OwnerBinding {
    /// `repository_owner_id`, `repository_owner` or `repository`.
    claim: String,
    /// Ids for `repository_owner_id`; logins (the owner part, for `repository`) otherwise.
    owners: Vec<String>,
}

impl OwnerBinding {
    /// Is the caller one of the owners? Ids compare exactly, logins ASCII case-insensitively
    /// as GitHub compares them; only string claims are ever admitted, as in matching.
    fn admits(&self, claims: &Claims) -> bool {
        let Some(Value::String(value)) = claims.get(&self.claim) else {
            return false;
        };
        let login = match self.claim.as_str() {
            "repository_owner_id" => return self.owners.iter().any(|id| id == value),
            "repository" => match value.split_once('/') {
                Some((owner, _)) => owner,
                None => return false,
            },
            _ => value.as_str(),
        };
        self.owners.iter().any(|o| o.eq_ignore_ascii_case(login))
    }
}

/// One rule, ready to evaluate.
#[derive(Debug, Clone)]
struct CompiledRule {
    name: String,
    issuer: String,
    /// `match` entries, then `match_patterns` entries, each in claim-name order.
    matchers: Vec<ClaimMatcher>,
    /// The `match` entries that bind the caller's owner; validation guarantees at least one.
    owner_bindings: Vec<OwnerBinding>,
    /// One selector per owner (owners compared case-insensitively, first spelling kept).
    grants: Vec<(String, RepoSelector)>,
    permissions: PermissionSet,
}

impl CompiledRule {
    fn covers(&self, repo: &RepoRef) -> bool {
        self.grants
            .iter()
            .any(|(owner, sel)| owner.eq_ignore_ascii_case(&repo.owner) && sel.matches(&repo.name))
    }

    /// Is the rule meant for the caller's owner: does every one of its owner bindings admit the
    /// caller? Only such a rule may explain a refusal (see [`CompiledPolicy::decide`]). A rule
    /// without a binding (validation refuses one) admits nobody.
    fn admits_owner(&self, claims: &Claims) -> bool {
        !self.owner_bindings.is_empty() && self.owner_bindings.iter().all(|b| b.admits(claims))
    }

    /// `Ok` if the caller satisfies the rule, else why not. The reason names the first failing
    /// check only, never a claim value: reasons go to logs and audit.
    fn check(&self, issuer: &str, claims: &Claims) -> Result<(), String> {
        if issuer != self.issuer {
            return Err("issuer does not match".to_owned());
        }
        for m in &self.matchers {
            if let Err(e) = m.check(claims) {
                let claim = &m.claim;
                return Err(match e {
                    Mismatch::Missing => format!("claim {claim} is missing"),
                    Mismatch::NotAString => format!("claim {claim} is not a string or bool"),
                    Mismatch::NoMatch => format!("claim {claim} does not match"),
                });
            }
        }
        Ok(())
    }
}

/// A policy that passed validation. Cheap to evaluate; build once per stored version.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    document: PolicyDocument,
    rules: Vec<CompiledRule>,
    warnings: Vec<Warning>,
}

impl CompiledPolicy {
    /// Parse and compile. Every problem is reported, not just the first.
    pub fn from_source(source: &str, format: PolicyFormat) -> Result<Self, Vec<String>> {
        let document = PolicyDocument::parse(source, format)?;
        Self::compile(document)
    }

    /// Compile a validated document rule by rule, collecting every error and warning. Private:
    /// a hand-built document has skipped validation (owner binding among it).
    fn compile(document: PolicyDocument) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let rules = document
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile::rule(i, rule, &mut errors, &mut warnings))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            document,
            rules,
            warnings,
        })
    }

    /// Non-fatal findings (organization-level permissions, very broad grants).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The validated document the policy was compiled from.
    pub fn document(&self) -> &PolicyDocument {
        &self.document
    }

    /// The policy's `description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.document.description.as_deref()
    }

    /// The verdict for `repo` for a caller from `issuer` with `claims`.
    ///
    /// A rule whose owner binding does not admit the caller counts as absent for it: it neither
    /// grants nor explains. `Denied` (the wire's `trust_policy_denied`) would otherwise tell a
    /// stranger that the workspace grants this repository to someone, and which of their claims
    /// fell short; a caller no rule is meant for learns nothing beyond `NotGranted`.
    pub fn decide(&self, issuer: &str, claims: &Claims, repo: &RepoRef) -> RepoDecision {
        let mut granted: Option<(PermissionSet, Vec<String>)> = None;
        let mut reasons = Vec::new();
        for rule in self.rules.iter().filter(|r| r.covers(repo)) {
            match rule.check(issuer, claims) {
                Ok(()) => {
                    let (permissions, names) = granted.get_or_insert_with(Default::default);
                    permissions.merge(&rule.permissions);
                    names.push(rule.name.clone());
                }
                Err(reason) if rule.admits_owner(claims) => {
                    reasons.push(format!("rule {}: {reason}", rule.name));
                }
                Err(_) => {}
            }
        }
        match granted {
            Some((permissions, rules)) => RepoDecision::Granted { permissions, rules },
            None if reasons.is_empty() => RepoDecision::NotGranted,
            None => RepoDecision::Denied { reasons },
        }
    }

    /// Everything the caller's matching rules grant (for a mint without `sources`): one
    /// [`Grant`] per (matching rule, owner), in policy order.
    pub fn grants(&self, issuer: &str, claims: &Claims) -> Vec<Grant> {
        self.rules
            .iter()
            .filter(|r| r.check(issuer, claims).is_ok())
            .flat_map(|r| {
                r.grants.iter().map(|(owner, sel)| Grant {
                    rule: r.name.clone(),
                    owner: owner.clone(),
                    repositories: sel.clone(),
                    permissions: r.permissions.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tooling;
