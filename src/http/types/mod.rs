//! Request and response bodies on the wire, as `openapi.yaml` describes them, and their
//! conversions to and from the flows' inputs and outputs. The admin API's bodies are in
//! [`admin`]. (`sts-client` keeps its own copies, so it can be built without the broker.)

pub mod admin;
pub mod policy;

use crate::audit::{format_time, ExclusionReason};
use crate::flow::exchange::{ExchangeInput, NewSession};
use crate::flow::mint::{Excluded as MintExcluded, MintInput, Minted, MintedToken};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// For `#[serde(default, deserialize_with = "present")]` on an optional field: absent is `None`,
/// `null` is refused. A plain `Option` takes `null` as absent, but the spec marks no field
/// `nullable`, and a typo'd client sending `{"all": null}` should hear so, not get the default.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// For `#[serde(deserialize_with = "integer")]`: an integer field that also takes a number with
/// no fractional part (`3.0`), which JSON Schema's `type: integer` counts as an integer
/// (JSON Schema Validation, section 6.1.1) and some generators and languages send.
pub(crate) fn integer<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    number
        .as_f64()
        .filter(|f| f.fract() == 0.0 && (i64::MIN as f64..=i64::MAX as f64).contains(f))
        .map(|f| f as i64)
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {number}")))
}

/// The envelope around every `/api/v1` response (what Atmos CLI decodes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// `true` on success.
    pub success: bool,
    /// The HTTP status, repeated.
    pub status: u16,
    /// Request id (also the `x-request-id` header).
    #[serde(default)]
    pub request: String,
    /// Stable snake_case error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_tag: Option<String>,
    /// Human-readable error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Trace id to quote to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// `POST /auth/github-oidc` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeRequest {
    /// The GitHub Actions OIDC JWT.
    pub token: String,
    /// Workspace to bind the session to.
    pub workspace_id: String,
}

impl From<ExchangeRequest> for ExchangeInput {
    fn from(req: ExchangeRequest) -> Self {
        Self {
            token: SecretString::from(req.token),
            workspace_id: req.workspace_id,
        }
    }
}

/// `POST /auth/github-oidc` data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeResponse {
    /// The session JWT.
    pub token: String,
    /// RFC 3339 expiry of the session.
    pub expires_at: String,
}

/// `POST /sts` body. Unknown fields are ignored (forward compatibility with clients).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MintRequest {
    /// `owner/repo` targets; absent = everything the caller's rules grant.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sources: Option<Vec<String>>,
    /// Policy to evaluate; default `default`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_name: Option<String>,
    /// Downscoping: ask for at most these permissions (`{"contents": "read"}`); absent =
    /// everything the policy grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<BTreeMap<String, String>>,
}

impl From<MintRequest> for MintInput {
    fn from(req: MintRequest) -> Self {
        Self {
            sources: req.sources,
            policy_name: req.policy_name,
            permissions: req.permissions,
        }
    }
}

impl From<NewSession> for ExchangeResponse {
    fn from(session: NewSession) -> Self {
        Self {
            token: session.token.expose_secret().to_owned(),
            expires_at: format_time(session.expires_at),
        }
    }
}

/// One minted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// Broker token id (for `/sts/revoke`).
    pub id: String,
    /// GitHub host (`github.com`).
    pub host: String,
    /// Installation account login, exactly as GitHub spells it.
    pub owner: String,
    /// The installation token.
    pub token: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// `owner/repo` the token reaches; absent for a whole-installation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    /// Granted permissions.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// GitHub installation id.
    pub installation_id: i64,
}

impl From<MintedToken> for Token {
    fn from(t: MintedToken) -> Self {
        Self {
            id: t.id,
            host: t.host,
            owner: t.owner,
            token: t.token.expose_secret().to_owned(),
            expires_at: format_time(t.expires_at),
            repositories: t.repositories,
            permissions: t.permissions,
            installation_id: t.installation_id,
        }
    }
}

/// A repository left out, with its reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// `owner/repo` as the caller sent it.
    pub repo: String,
    /// Why.
    pub reason: ExclusionReason,
}

impl From<MintExcluded> for Excluded {
    fn from(e: MintExcluded) -> Self {
        Self {
            repo: e.repo,
            reason: e.reason,
        }
    }
}

/// `POST /sts` data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MintResponse {
    /// Minted tokens, one per (installation, permission set).
    pub tokens: Vec<Token>,
    /// Sources that got nothing, with why.
    #[serde(default)]
    pub excluded: Vec<Excluded>,
}

impl From<Minted> for MintResponse {
    fn from(minted: Minted) -> Self {
        Self {
            tokens: minted.tokens.into_iter().map(Into::into).collect(),
            excluded: minted.excluded.into_iter().map(Into::into).collect(),
        }
    }
}

/// `POST /sts/revoke` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// Token ids; absent = every token of this session.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ids: Option<Vec<String>>,
}

/// Data of every revoke call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// Tokens revoked by this call.
    pub revoked: u64,
}
