//! Explanations: for one caller and one repository, what every rule of a policy says and why.
//! For policy administrators (the explain endpoint, `sts-broker policy test`), never for the
//! caller of `/sts`: a trace shows what a workspace grants to whom.

use super::{Claims, CompiledPolicy, CompiledRule, RepoRef, RepoSelector};
use serde_json::Value;

/// One check of one rule: the caller's issuer (`iss`), or one `match`/`match_patterns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTrace {
    /// Claim name (`iss` for the rule's issuer).
    pub claim: String,
    /// What the policy wrote: a value, a list of values, or a pattern.
    pub expected: Value,
    /// The caller's value; `None` when the claim is absent.
    pub actual: Option<Value>,
    /// Did the check pass?
    pub ok: bool,
}

/// What one rule says about one repository for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    /// Rule name.
    pub name: String,
    /// Does the rule's grant cover the repository (`owner/*`: does it grant the whole
    /// installation)?
    pub grants: bool,
    /// Does the caller pass every check?
    pub matched: bool,
    /// Every check, in evaluation order (all are evaluated, not only up to the first failure).
    pub checks: Vec<CheckTrace>,
}

/// The name that stands for a whole installation in a trace target (`acme/*`).
pub const WHOLE_INSTALLATION: &str = "*";

impl CompiledRule {
    /// Does the rule grant `repo`, or the whole installation when its name is `*`?
    fn grants_target(&self, repo: &RepoRef) -> bool {
        if repo.name != WHOLE_INSTALLATION {
            return self.covers(repo);
        }
        self.grants.iter().any(|(owner, sel)| {
            owner.eq_ignore_ascii_case(&repo.owner) && *sel == RepoSelector::All
        })
    }

    fn trace(&self, issuer: &str, claims: &Claims, repo: &RepoRef) -> RuleTrace {
        let mut checks = vec![CheckTrace {
            claim: "iss".to_owned(),
            expected: Value::String(self.issuer.clone()),
            actual: Some(Value::String(issuer.to_owned())),
            ok: issuer == self.issuer,
        }];
        checks.extend(self.matchers.iter().map(|m| CheckTrace {
            claim: m.claim.clone(),
            expected: m.expected.clone(),
            actual: claims.get(&m.claim).cloned(),
            ok: m.check(claims).is_ok(),
        }));
        RuleTrace {
            name: self.name.clone(),
            grants: self.grants_target(repo),
            matched: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

impl CompiledPolicy {
    /// Every rule's view of `repo` (`owner/*` for a whole installation) for a caller from
    /// `issuer` with `claims`, in policy order.
    pub fn trace(&self, issuer: &str, claims: &Claims, repo: &RepoRef) -> Vec<RuleTrace> {
        self.rules
            .iter()
            .map(|r| r.trace(issuer, claims, repo))
            .collect()
    }
}
