//! Audit events: one per exchange, mint, revoke and admin change, success or failure.
//!
//! An event never holds a token or a key: tokens appear only as ids and SHA-256 fingerprints.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

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
    /// `oidc` for CI callers, `admin` for the operator token, `anonymous` before verification.
    #[serde(rename = "type")]
    pub kind: String,
    /// Session id, when the caller holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Selected OIDC claims of the caller (`iss`, `sub`, `repository`, `repository_id`, `ref`,
    /// `workflow_ref`, `job_workflow_ref`, `run_id`, ...). Strings only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
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
}

/// A repository left out of a mint, with the contract's reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    /// `owner/repo`.
    pub repo: String,
    /// One of the five reason codes of the contract.
    pub reason: String,
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
            actor: Actor {
                kind: "anonymous".to_owned(),
                ..Actor::default()
            },
            policy_name: None,
            policy_version: None,
            installation_ids: Vec::new(),
            tokens: Vec::new(),
            exclusions: Vec::new(),
            details: serde_json::Value::Null,
        }
    }
}
