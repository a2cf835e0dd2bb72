//! Audit events: one per exchange, mint, revoke and admin change, success or failure.
//!
//! An event never holds a token or a key: tokens appear only as ids and SHA-256 fingerprints.
//! Each workspace's stored events form a hash chain ([`chain`]), which [`verify`] re-checks.

pub mod chain;
pub mod export;
pub mod verify;
pub mod view;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Claims copied into the audit actor (strings only). Never the raw token.
const AUDITED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "ref",
    "workflow_ref",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "actor",
    "event_name",
    "environment",
];

/// `t` as RFC 3339 in UTC (`…Z`), the one time format of audit details and the wire.
pub fn format_time(t: OffsetDateTime) -> String {
    // RFC 3339 cannot write years outside 0000–9999; every time here is "now" plus at most a
    // day, a stored copy of such a time, or GitHub's expiry parsed from RFC 3339.
    #[expect(
        clippy::expect_used,
        reason = "a UTC time within years 0000-9999 always formats as RFC 3339"
    )]
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("rfc 3339 formatting of a utc time")
}

/// Who an actor is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A CI caller, known by its verified OIDC claims.
    Oidc,
    /// The operator token.
    Admin,
    /// Nobody verified yet.
    #[default]
    Anonymous,
}

impl ActorKind {
    /// The stored (serialized) form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Admin => "admin",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Why a repository was left out of a mint: the five reason codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// No link for the owner, or the installation cannot reach the repository.
    NotInstalledInWorkspace,
    /// The installation is suspended.
    InstallationSuspended,
    /// No policy of that name, or no rule meant for the caller's owner grants the repository.
    NoTrustPolicy,
    /// Some rule meant for the caller's owner grants the repository but the caller fails its
    /// match.
    TrustPolicyDenied,
    /// The stored policy no longer compiles, or grants what the installation cannot give.
    TrustPolicyInvalid,
}

impl ExclusionReason {
    /// Every reason, for documentation checks.
    pub const ALL: [Self; 5] = [
        Self::NotInstalledInWorkspace,
        Self::InstallationSuspended,
        Self::NoTrustPolicy,
        Self::TrustPolicyDenied,
        Self::TrustPolicyInvalid,
    ];

    /// The code on the wire and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInstalledInWorkspace => "not_installed_in_workspace",
            Self::InstallationSuspended => "installation_suspended",
            Self::NoTrustPolicy => "no_trust_policy",
            Self::TrustPolicyDenied => "trust_policy_denied",
            Self::TrustPolicyInvalid => "trust_policy_invalid",
        }
    }
}

impl std::fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as a stable snake_case string in the stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// `POST /auth/github-oidc`.
    Exchange,
    /// `POST /sts`.
    Mint,
    /// `POST /sts/revoke` or an admin revocation.
    Revoke,
    /// `DELETE /auth/session`.
    SessionRevoke,
    /// Any change through the admin API.
    Admin,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Did what was asked.
    Success,
    /// Refused on purpose (bad token, policy, entitlement).
    Denied,
    /// Could not be done (GitHub or the database failed).
    Failure,
}

/// Who asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// Who the actor is.
    #[serde(rename = "type")]
    pub kind: ActorKind,
    /// Session id, when the caller holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Selected OIDC claims of the caller (`iss`, `sub`, `repository`, `repository_id`, `ref`,
    /// `workflow_ref`, `job_workflow_ref`, `run_id`, ...). Strings only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
}

impl Actor {
    /// An actor of `kind` with no session and no claims.
    pub fn of(kind: ActorKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// A CI caller, from its verified OIDC claims: only the [`AUDITED_CLAIMS`] that are strings.
    pub fn from_claims(claims: &serde_json::Value, session_id: Option<&str>) -> Self {
        let claims = AUDITED_CLAIMS
            .iter()
            .filter_map(|k| {
                claims
                    .get(*k)
                    .and_then(|v| v.as_str())
                    .map(|v| ((*k).to_owned(), v.to_owned()))
            })
            .collect();
        Self {
            kind: ActorKind::Oidc,
            session_id: session_id.map(str::to_owned),
            claims,
        }
    }
}

/// A token that the event is about: never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditToken {
    /// Broker-assigned token id.
    pub id: String,
    /// `sha256:<hex>` of the token value.
    pub fingerprint: String,
    /// GitHub installation id the token belongs to.
    pub installation_id: i64,
    /// Installation account login.
    pub owner: String,
    /// `owner/repo` names the token reaches; absent for a whole-installation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    /// Granted permissions.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// RFC 3339 expiry.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// Version of the policy that granted the token (mint events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<i64>,
    /// Names of the policy rules whose grants the token carries (mint events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// On the event of a mint that did not hand the token out: whether GitHub confirmed it
    /// revoked. `false` means it may be live until it expires; the log says so loudly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    /// Token requests GitHub took to mint it (mint events). More than 1 means GitHub failed
    /// transiently and the mint was retried; a retry after a 5xx or a timeout may have left a
    /// token GitHub minted but never delivered, which only expiry ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// A repository left out of a mint, with the contract's reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    /// `owner/repo`.
    pub repo: String,
    /// Why, as the contract names it.
    pub reason: ExclusionReason,
}

impl Exclusion {
    /// `repo` left out for `reason`.
    pub fn new(repo: impl Into<String>, reason: ExclusionReason) -> Self {
        Self {
            repo: repo.into(),
            reason,
        }
    }
}

/// One audit event. Built up during a flow and written once at its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// UUIDv7, so ids sort by time.
    pub id: String,
    /// When the event was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// What happened.
    pub kind: AuditKind,
    /// The finer action (`exchange`, `mint`, `workspace.create`, `policy.put`, ...).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Machine-readable reason for a denial or failure (`token_replayed`, `github_unavailable`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Workspace the event belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Request id of the HTTP request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who asked.
    pub actor: Actor,
    /// Policy name, when one was evaluated or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// Policy version, when one was evaluated or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<i64>,
    /// Installation ids involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installation_ids: Vec<i64>,
    /// Tokens issued or revoked (metadata and fingerprints only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AuditToken>,
    /// Repositories excluded from a mint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<Exclusion>,
    /// Anything else worth keeping (requested sources, admin change details). No secrets.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// A new event of `kind`/`action` stamped now, with an `anonymous` actor and outcome `Failure`
    /// until the flow says otherwise (so an event that is never finished reads as a failure).
    pub fn new(kind: AuditKind, action: impl Into<String>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            time: OffsetDateTime::now_utc(),
            kind,
            action: action.into(),
            outcome: Outcome::Failure,
            reason: None,
            workspace_id: None,
            request_id: None,
            actor: Actor::of(ActorKind::Anonymous),
            policy_name: None,
            policy_version: None,
            installation_ids: Vec::new(),
            tokens: Vec::new(),
            exclusions: Vec::new(),
            details: serde_json::Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_actor_keeps_only_listed_string_claims() {
        let claims = serde_json::json!({
            "sub": "repo:acme/infra:ref:refs/heads/main", "repository": "acme/infra",
            "run_id": "42", "repository_id": 7, "secret_custom": "x"
        });
        let actor = Actor::from_claims(&claims, Some("ses_1"));
        assert_eq!(actor.kind, ActorKind::Oidc);
        assert_eq!(
            actor.claims.get("repository").map(String::as_str),
            Some("acme/infra")
        );
        assert!(
            !actor.claims.contains_key("repository_id"),
            "numbers are not strings"
        );
        assert!(!actor.claims.contains_key("secret_custom"));
    }

    #[test]
    fn enums_serialize_as_the_strings_already_stored() {
        for kind in [ActorKind::Oidc, ActorKind::Admin, ActorKind::Anonymous] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for reason in ExclusionReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
            assert_eq!(
                serde_json::from_value::<ExclusionReason>(reason.as_str().into()).unwrap(),
                reason
            );
        }
    }

    #[test]
    fn times_are_written_in_utc_with_z() {
        let t = OffsetDateTime::UNIX_EPOCH.to_offset(time::macros::offset!(+2));
        assert_eq!(format_time(t), "1970-01-01T00:00:00Z");
    }
}
