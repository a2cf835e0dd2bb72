//! `match` and `match_patterns` of a rule: claim values, globs and regexes, and the check that
//! the rule binds the caller's owner.

use serde_json::Value;

use super::walk::{join, kind, Walker};
use super::{MatchValue, RuleDocument};
use crate::policy::matcher::{compile_glob, compile_pattern, has_glob, is_login_claim};

/// Claims any one of which, with a literal owner, ties a rule to one GitHub account.
const OWNER_CLAIMS: &[&str] = &["repository_owner_id", "repository_owner", "repository"];

impl Walker {
    /// `match`: claim → value(s); required, and it must bind the caller's owner.
    pub(super) fn match_claims(
        &mut self,
        path: &str,
        value: Option<&Value>,
        rule: &mut RuleDocument,
    ) {
        let Some(obj) = self.map(
            path,
            value,
            Some("a map of claim to value that binds the caller's owner"),
            "a map of claim to value",
        ) else {
            return;
        };
        if obj.is_empty() {
            self.err(
                path,
                "must not be empty: a rule must bind the caller's owner",
            );
            return;
        }
        // An owner claim that is present but invalid already has its own error; do not pile
        // a misleading "does not bind the owner" on top.
        let mut owner_claim_invalid = false;
        for (claim, v) in obj {
            let p = join(path, claim);
            if claim.is_empty() {
                self.err(&p, "claim name must not be empty");
                continue;
            }
            let before = self.errors.len();
            let values = self.match_values(&p, claim, v);
            if self.errors.len() > before {
                owner_claim_invalid |= OWNER_CLAIMS.contains(&claim.as_str());
                continue;
            }
            rule.match_claims.insert(claim.clone(), values);
        }
        let bound = rule
            .match_claims
            .iter()
            .any(|(claim, values)| binds_owner(claim, values));
        if !bound && !owner_claim_invalid {
            self.err(
                path,
                "does not bind the caller's owner: add repository_owner_id, repository_owner or \
                 repository with a literal owner (no * or ? in the owner part); GitHub's OIDC \
                 issuer is shared by every repository on GitHub, so without it any repository \
                 could use this rule",
            );
        }
    }

    fn match_values(&mut self, path: &str, claim: &str, value: &Value) -> Vec<MatchValue> {
        match value {
            Value::String(s) => self.match_string(path, claim, s).into_iter().collect(),
            Value::Bool(b) => vec![MatchValue::Bool(*b)],
            Value::Array(items) if items.is_empty() => {
                self.err(path, "must not be an empty list: it would match nothing");
                Vec::new()
            }
            Value::Array(items) => {
                let mut out = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    let p = format!("{path}[{j}]");
                    match item {
                        Value::String(s) => out.extend(self.match_string(&p, claim, s)),
                        Value::Bool(b) => out.push(MatchValue::Bool(*b)),
                        other => self.err(&p, not_a_match_value(other)),
                    }
                }
                out
            }
            other => {
                self.err(path, not_a_match_value(other));
                Vec::new()
            }
        }
    }

    fn match_string(&mut self, path: &str, claim: &str, s: &str) -> Option<MatchValue> {
        if s.is_empty() {
            self.err(path, "must not be an empty string");
            return None;
        }
        if claim == "repository" && !s.contains('/') {
            self.err(
                path,
                format!("{s:?} is not owner/name: the repository claim always is"),
            );
            return None;
        }
        if has_glob(s) {
            self.compiled_matchers += 1;
            if let Err(e) = compile_glob(s, is_login_claim(claim)) {
                self.err(path, e);
                return None;
            }
        }
        Some(MatchValue::String(s.to_owned()))
    }

    /// `match_patterns`: claim → regex, optional.
    pub(super) fn match_patterns(
        &mut self,
        path: &str,
        value: Option<&Value>,
        rule: &mut RuleDocument,
    ) {
        let Some(obj) = self.map(path, value, None, "a map of claim to regex") else {
            return;
        };
        for (claim, v) in obj {
            let p = join(path, claim);
            if claim.is_empty() {
                self.err(&p, "claim name must not be empty");
                continue;
            }
            let Value::String(pattern) = v else {
                self.err(&p, format!("must be a regex string, not {}", kind(v)));
                continue;
            };
            if pattern.is_empty() {
                self.err(&p, "must not be an empty regex");
                continue;
            }
            self.compiled_matchers += 1;
            match compile_pattern(pattern, is_login_claim(claim)) {
                Ok(_) => {
                    rule.match_patterns.insert(claim.clone(), pattern.clone());
                }
                Err(e) => self.err(&p, e),
            }
        }
    }
}

fn not_a_match_value(v: &Value) -> String {
    let hint = if v.is_number() {
        " (quote numbers: GitHub sends every claim as a string, e.g. \"1001\")"
    } else {
        ""
    };
    format!(
        "must be a string, a bool or a list of them, not {}{hint}",
        kind(v)
    )
}

/// Does this `match` entry tie the rule to one owner? Every alternative must, or one of them
/// would let another owner in.
fn binds_owner(claim: &str, values: &[MatchValue]) -> bool {
    bound_owners(claim, values).is_some()
}

/// The owners a `match` entry binds the rule to: the literal ids of `repository_owner_id`, the
/// logins of `repository_owner`, the owner parts of `repository`. `None` when the entry binds
/// no owner (another claim, a bool, or any alternative with a glob in its owner).
pub(crate) fn bound_owners(claim: &str, values: &[MatchValue]) -> Option<Vec<String>> {
    if values.is_empty() {
        return None;
    }
    values
        .iter()
        .map(|v| match (claim, v) {
            (_, MatchValue::Bool(_)) => None,
            ("repository_owner_id" | "repository_owner", MatchValue::String(s)) => {
                (!s.is_empty() && !has_glob(s)).then(|| s.clone())
            }
            ("repository", MatchValue::String(s)) => s
                .split_once('/')
                .filter(|(owner, _)| !owner.is_empty() && !has_glob(owner))
                .map(|(owner, _)| owner.to_owned()),
            _ => None,
        })
        .collect()
}
