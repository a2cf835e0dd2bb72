//! Policy tooling on the wire: lint warnings, explain, versions and rollback.

use crate::audit::format_time;
use crate::flow::admin::PolicyVersion;
use crate::flow::mint::explain::{Decision, ExplainInput, ExplainPolicy, Explanation, Outcome};
use crate::flow::{FlowError, FlowResult};
use crate::policy::{CheckTrace, Claims, PolicyFormat, RuleTrace, Warning};
use crate::store::StoredPolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One lint finding.
#[derive(Debug, Clone, Serialize)]
pub struct WarningView {
    path: String,
    code: &'static str,
    message: String,
}

impl WarningView {
    /// Every finding, in order.
    pub fn list(warnings: Vec<Warning>) -> Vec<Self> {
        warnings
            .into_iter()
            .map(|w| Self {
                path: w.path,
                code: w.code.as_str(),
                message: w.message,
            })
            .collect()
    }
}

/// `POST /admin/workspaces/{ws}/explain` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplainRequest {
    /// The caller's OIDC claims.
    pub claims: Claims,
    /// The caller's issuer (default GitHub Actions').
    #[serde(default, deserialize_with = "super::present")]
    pub issuer: Option<String>,
    /// `owner/repo` sources.
    #[serde(default, deserialize_with = "super::present")]
    pub sources: Option<Vec<String>>,
    /// A stored policy (default `default`).
    #[serde(default, deserialize_with = "super::present")]
    pub policy_name: Option<String>,
    /// A draft: a JSON object, or a YAML or JSON document in a string.
    #[serde(default, deserialize_with = "super::present")]
    pub policy: Option<Value>,
}

impl TryFrom<ExplainRequest> for ExplainInput {
    type Error = FlowError;

    fn try_from(req: ExplainRequest) -> FlowResult<Self> {
        if req.policy.as_ref().is_some_and(Value::is_null) {
            return Err(FlowError::invalid(
                "policy: null is not a draft; leave the field out to explain a stored policy",
            ));
        }
        let policy = match (req.policy_name, req.policy) {
            (Some(_), Some(_)) => return Err(FlowError::invalid(
                "policy: give either policyName (a stored policy) or policy (a draft), not both",
            )),
            (name, None) => ExplainPolicy::Stored(name),
            (None, Some(Value::String(source))) => ExplainPolicy::Draft {
                // YAML is a superset of JSON, so a JSON document in the string parses too.
                source,
                format: PolicyFormat::Yaml,
            },
            (None, Some(object @ Value::Object(_))) => ExplainPolicy::Draft {
                source: object.to_string(),
                format: PolicyFormat::Json,
            },
            (None, Some(_)) => {
                return Err(FlowError::invalid(
                    "policy: a JSON object, or a YAML or JSON document in a string",
                ))
            }
        };
        Ok(Self {
            claims: req.claims,
            issuer: req.issuer,
            sources: req.sources,
            policy,
        })
    }
}

/// `{name, version}` of the explained policy.
#[derive(Debug, Serialize)]
struct PolicyRef {
    name: String,
    version: Option<i64>,
}

/// One check of a rule.
#[derive(Debug, Serialize)]
struct CheckView {
    claim: String,
    expected: Value,
    actual: Value,
    ok: bool,
}

/// One rule's view of a repository.
#[derive(Debug, Serialize)]
struct RuleView {
    name: String,
    grants: bool,
    matched: bool,
    checks: Vec<CheckView>,
}

/// One repository's decision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DecisionView {
    repo: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installation_id: Option<i64>,
    rules: Vec<RuleView>,
}

/// The explain answer.
#[derive(Debug, Serialize)]
pub struct ExplainView {
    policy: PolicyRef,
    decisions: Vec<DecisionView>,
    warnings: Vec<WarningView>,
}

impl From<CheckTrace> for CheckView {
    fn from(c: CheckTrace) -> Self {
        Self {
            claim: c.claim,
            expected: c.expected,
            actual: c.actual.unwrap_or(Value::Null),
            ok: c.ok,
        }
    }
}

impl From<RuleTrace> for RuleView {
    fn from(r: RuleTrace) -> Self {
        Self {
            name: r.name,
            grants: r.grants,
            matched: r.matched,
            checks: r.checks.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Decision> for DecisionView {
    fn from(d: Decision) -> Self {
        let (outcome, reason, permissions) = match d.outcome {
            Outcome::Granted(p) => ("granted", None, Some(p.to_strings())),
            Outcome::Excluded(r) => ("excluded", Some(r.as_str()), None),
        };
        Self {
            repo: d.repo,
            outcome,
            reason,
            permissions,
            installation_id: d.installation_id,
            rules: d.rules.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Explanation> for ExplainView {
    fn from(e: Explanation) -> Self {
        Self {
            policy: PolicyRef {
                name: e.policy_name,
                version: e.version,
            },
            decisions: e.decisions.into_iter().map(Into::into).collect(),
            warnings: WarningView::list(e.warnings),
        }
    }
}

/// `GET .../policies/{name}` query: `?version=N` reads one version.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// The version to read; absent = the current one.
    pub version: Option<i64>,
}

/// `POST .../policies/{name}/rollback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to restore, as a new version.
    #[serde(deserialize_with = "super::integer")]
    pub version: i64,
}

/// One version in a listing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionView {
    version: i64,
    created_at: String,
    /// SHA-256 (hex) of the stored source, to compare with a file under review.
    sha256: String,
    current: bool,
}

/// `GET .../policies/{name}/versions` answer.
#[derive(Debug, Serialize)]
pub struct VersionList {
    versions: Vec<VersionView>,
}

impl From<Vec<PolicyVersion>> for VersionList {
    fn from(versions: Vec<PolicyVersion>) -> Self {
        Self {
            versions: versions.into_iter().map(VersionView::from).collect(),
        }
    }
}

impl From<PolicyVersion> for VersionView {
    fn from(v: PolicyVersion) -> Self {
        Self {
            version: v.policy.version,
            created_at: format_time(v.policy.created_at),
            sha256: source_sha256(&v.policy),
            current: v.current,
        }
    }
}

/// Hex SHA-256 of a stored policy's source, exactly as it was sent.
fn source_sha256(p: &StoredPolicy) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(p.source.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::{ExplainInput, ExplainRequest, RollbackRequest};
    use serde_json::json;

    #[test]
    fn a_rollback_version_is_an_integer_written_with_or_without_a_fraction_of_zero() {
        for (body, version) in [
            (json!({"version": 3}), Some(3)),
            (json!({"version": 3.0}), Some(3)),
        ] {
            let parsed = serde_json::from_value::<RollbackRequest>(body).ok();
            assert_eq!(parsed.map(|r| r.version), version);
        }
        for body in [
            json!({"version": 3.5}),
            json!({"version": "3"}),
            json!({"version": null}),
            json!({"version": 1e300}),
        ] {
            assert!(
                serde_json::from_value::<RollbackRequest>(body.clone()).is_err(),
                "{body} accepted"
            );
        }
    }

    #[test]
    fn null_is_refused_for_every_optional_explain_field() {
        for field in ["issuer", "sources", "policyName", "policy"] {
            let mut body = json!({"claims": {"repository": "acme/infra"}});
            body[field] = serde_json::Value::Null;
            let refused = serde_json::from_value::<ExplainRequest>(body)
                .map_err(|e| e.to_string())
                .and_then(|r| ExplainInput::try_from(r).map_err(|e| e.to_string()));
            assert!(refused.is_err(), "{field}: null accepted");
        }
    }
}
