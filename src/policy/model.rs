//! The policy document as written by an admin, and its validation.
//!
//! The source is parsed into a `serde_json::Value` first ([`strict`]: duplicate keys refused)
//! and then walked by hand, so that every problem is reported with its path in one go (serde
//! alone stops at the first). The walk is split by what it validates: the document and its
//! rules ([`walk`]), `match` and `match_patterns` ([`matches`]), `grant` ([`grant`]).

mod grant;
mod matches;
mod strict;
mod walk;

use std::collections::BTreeMap;

pub(crate) use matches::bound_owners;

use super::matcher::has_glob;
use super::permissions::PermissionSet;
use super::PolicyFormat;
use strict::StrictValue;
use walk::Walker;

/// Largest policy source accepted, in bytes. Real policies are a few KiB; the cap bounds the
/// parse and compile work an admin request can cause.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Most rules in one policy. Every mint evaluates every rule, so the count bounds request cost.
pub const MAX_RULES: usize = 100;

/// Most globs and regexes in one policy. Each may compile to up to
/// [`REGEX_SIZE_LIMIT`](super::REGEX_SIZE_LIMIT) bytes, so this bounds the memory one
/// compiled policy can hold.
pub const MAX_COMPILED_MATCHERS: usize = 500;

/// Longest rule name. Names go into denial reasons, logs and audit events.
pub const MAX_RULE_NAME_LEN: usize = 128;

/// A whole policy, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDocument {
    /// Free text for humans.
    pub description: Option<String>,
    /// The rules, in the order written.
    pub rules: Vec<RuleDocument>,
}

/// One rule, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDocument {
    /// Unique within the policy.
    pub name: String,
    /// The OIDC issuer the caller must come from (default [`GITHUB_ACTIONS_ISSUER`]).
    pub issuer: String,
    /// `match`: claim → accepted values (one value written alone becomes a list of one).
    pub match_claims: BTreeMap<String, Vec<MatchValue>>,
    /// `match_patterns`: claim → regex, as written (anchored when compiled).
    pub match_patterns: BTreeMap<String, String>,
    /// `grant.repositories`.
    pub repositories: Vec<RepoPattern>,
    /// `grant.permissions`, or `{contents: read}` when absent.
    pub permissions: PermissionSet,
}

/// One value of a `match` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchValue {
    /// Exact, or a glob if it holds `*` or `?`.
    String(String),
    /// Matches the claim `true`/`false`.
    Bool(bool),
}

/// One `owner/name` entry of `grant.repositories`; the name may be a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    /// Owner login, literal.
    pub owner: String,
    /// Repository name or name glob (`*` is the whole installation).
    pub name: String,
}

impl PolicyDocument {
    /// Parse and validate. Every problem is reported, each prefixed with its path
    /// (`rules[1].grant.permissions.contents: ...`).
    pub fn parse(source: &str, format: PolicyFormat) -> Result<Self, Vec<String>> {
        if source.len() > MAX_POLICY_BYTES {
            return Err(vec![format!(
                "policy: {} bytes exceeds the limit of {MAX_POLICY_BYTES} bytes",
                source.len()
            )]);
        }
        let parsed = match format {
            PolicyFormat::Json => serde_json::from_str::<StrictValue>(source)
                .map_err(|e| format!("policy: not valid JSON: {e}")),
            PolicyFormat::Yaml => serde_norway::from_str::<StrictValue>(source)
                .map_err(|e| format!("policy: not valid YAML: {e}")),
        };
        let value = parsed.map_err(|e| vec![e])?.0;
        let mut walker = Walker::default();
        let doc = walker.policy(&value);
        if walker.errors.is_empty() {
            Ok(doc)
        } else {
            Err(walker.errors)
        }
    }
}

/// Claims holding immutable numeric ids, which survive renames and cannot be re-registered.
const ID_CLAIMS: &[&str] = &["repository_owner_id", "repository_id"];

/// Does the rule pin the caller by an immutable id, not only by a login?
pub(crate) fn binds_an_id(rule: &RuleDocument) -> bool {
    ID_CLAIMS.iter().any(|claim| {
        rule.match_claims.get(*claim).is_some_and(|values| {
            !values.is_empty()
                && values
                    .iter()
                    .all(|v| matches!(v, MatchValue::String(s) if !has_glob(s)))
        })
    })
}

/// GitHub login rules: 1–39 ASCII letters, digits or `-`.
pub(crate) fn valid_owner(owner: &str) -> bool {
    (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// GitHub repository name rules: 1–100 ASCII letters, digits, `.`, `_` or `-`, not `.`/`..`.
pub(crate) fn valid_repo_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}
