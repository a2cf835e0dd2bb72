//! Trust policies: parsed and compiled once, then evaluated per request. Deny by default.
//!
//! A policy is a list of rules; each rule matches the caller's OIDC claims and grants
//! repositories with permissions. See `docs/policies.md` for the format. Knows nothing about
//! axum, the store or GitHub.

mod model;
mod permissions;

pub use model::{PolicyDocument, RuleDocument};
pub use permissions::{Level, PermissionSet};

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
    /// Parse `owner/name`; `None` unless exactly one `/` with non-empty parts of GitHub's
    /// allowed characters.
    pub fn parse(s: &str) -> Option<Self> {
        let _ = s;
        unimplemented!("RepoRef::parse")
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Which repositories of an owner a grant covers.
#[derive(Debug, Clone)]
pub enum RepoSelector {
    /// `owner/*`: the whole installation.
    All,
    /// Names and name globs.
    Patterns(Vec<String>),
}

impl RepoSelector {
    /// Does the selector cover repository `name` (case-insensitive, as GitHub names are)?
    pub fn matches(&self, name: &str) -> bool {
        let _ = name;
        unimplemented!("RepoSelector::matches")
    }
}

/// What one matching rule grants on one owner.
#[derive(Debug, Clone)]
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
    /// Some rules grant the repo but the caller failed each of them. One explanation per failed
    /// rule (`rule infra-main: claim ref does not match`), for logs and audit only.
    Denied {
        /// Why each rule failed.
        reasons: Vec<String>,
    },
    /// No rule grants the repo.
    NotGranted,
}

/// A policy that passed validation. Cheap to evaluate; build once per stored version.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    // filled in by the implementation
}

impl CompiledPolicy {
    /// Parse and compile. Every problem is reported, not just the first.
    pub fn from_source(source: &str, format: PolicyFormat) -> Result<Self, Vec<String>> {
        let _ = (source, format);
        unimplemented!("CompiledPolicy::from_source")
    }

    /// Non-fatal findings (organization-level permissions, very broad grants).
    pub fn warnings(&self) -> &[String] {
        unimplemented!("warnings")
    }

    /// The verdict for `repo` for a caller from `issuer` with `claims`.
    pub fn decide(&self, issuer: &str, claims: &Claims, repo: &RepoRef) -> RepoDecision {
        let _ = (issuer, claims, repo);
        unimplemented!("decide")
    }

    /// Everything the caller's matching rules grant (for a mint without `sources`).
    pub fn grants(&self, issuer: &str, claims: &Claims) -> Vec<Grant> {
        let _ = (issuer, claims);
        unimplemented!("grants")
    }
}
