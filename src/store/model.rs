//! Rows as the rest of the broker sees them. Backend-neutral: no sqlx types here.

use crate::audit::chain::ChainLink;
use crate::audit::AuditEvent;
use crate::policy::PolicyFormat;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A tenant: its policies, installation links and tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Caller-chosen id (`[a-z0-9][a-z0-9-_]{0,62}`), used in URLs and in the exchange body.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The STS entitlement: when false, `/sts` answers 403.
    pub sts_enabled: bool,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// A GitHub App installation linked to a workspace. One workspace per installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationLink {
    /// Workspace id.
    pub workspace_id: String,
    /// Account login exactly as GitHub spells it.
    pub owner: String,
    /// GitHub account id of the owner.
    pub account_id: i64,
    /// GitHub installation id.
    pub installation_id: i64,
    /// `all` or `selected`, as GitHub reported at link time.
    pub repository_selection: String,
    /// Link time.
    pub created_at: OffsetDateTime,
}

/// A policy version to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPolicy {
    /// Workspace id.
    pub workspace_id: String,
    /// Policy name (`[a-z0-9][a-z0-9-_.]{0,62}`).
    pub name: String,
    /// The policy as the admin sent it (YAML or JSON text).
    pub source: String,
    /// How `source` is written; stored as [`PolicyFormat::as_str`].
    pub format: PolicyFormat,
    /// When it was put.
    pub created_at: OffsetDateTime,
}

/// One stored policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// Workspace id.
    pub workspace_id: String,
    /// Policy name.
    pub name: String,
    /// 1, 2, 3… per (workspace, name).
    pub version: i64,
    /// The policy as the admin sent it.
    pub source: String,
    /// How `source` is written.
    pub format: PolicyFormat,
    /// When this version was put.
    pub created_at: OffsetDateTime,
}

/// The replay key of an accepted OIDC token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JtiRecord {
    /// Token issuer.
    pub issuer: String,
    /// `jti`, or `sha256:<hex>` of the whole token when it has none.
    pub jti: String,
    /// Keep at least until the token's `exp` + leeway: after that it is refused anyway.
    pub expires_at: OffsetDateTime,
}

/// A broker session, created by an OIDC exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// Session id (the session JWT's `jti` and `sid`).
    pub id: String,
    /// Workspace it is bound to.
    pub workspace_id: String,
    /// OIDC issuer of the exchanged token.
    pub issuer: String,
    /// OIDC `sub`.
    pub subject: String,
    /// All verified claims of the OIDC token (a JSON object).
    pub claims: serde_json::Value,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Expiry (the session JWT's `exp`).
    pub expires_at: OffsetDateTime,
    /// Set once revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// A minted installation token, as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// Broker-assigned id (`tok_…`).
    pub id: String,
    /// Workspace id.
    pub workspace_id: String,
    /// Session that minted it.
    pub session_id: Option<String>,
    /// GitHub installation id.
    pub installation_id: i64,
    /// Installation account login.
    pub owner: String,
    /// GitHub host (`github.com`).
    pub host: String,
    /// `owner/repo` list; `None` for a whole-installation token.
    pub repositories: Option<Vec<String>>,
    /// Granted permissions.
    pub permissions: BTreeMap<String, String>,
    /// `sha256:<hex>` of the token.
    pub fingerprint: String,
    /// The token sealed with the broker's AEAD key, so it can be revoked later; cleared once
    /// expired.
    pub sealed_token: Option<String>,
    /// Policy that granted it.
    pub policy_name: String,
    /// Version of that policy.
    pub policy_version: i64,
    /// Mint time.
    pub created_at: OffsetDateTime,
    /// GitHub's `expires_at`.
    pub expires_at: OffsetDateTime,
    /// Set once revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Where an issued token stands at some moment. Revoked wins over expired: a token revoked
/// before it ran out stays `Revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Neither revoked nor expired.
    Active,
    /// Revoked (whenever it expires).
    Revoked,
    /// Not revoked, and its `expires_at` has passed (expiring exactly now counts as expired).
    Expired,
}

impl TokenState {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

impl IssuedToken {
    /// The token's state at `now`. The store filters with the same rule in SQL.
    pub fn state_at(&self, now: OffsetDateTime) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// Which token rows to list. Every condition is applied in the query, before `limit`, so a page
/// is short only when matching rows ran out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFilter {
    /// Only tokens in this state at this moment.
    pub state: Option<(TokenState, OffsetDateTime)>,
    /// Only tokens of this session.
    pub session_id: Option<String>,
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// At most this many rows (newest first); `None` = all.
    pub limit: Option<u32>,
}

/// What `purge_expired` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Sealed tokens cleared.
    pub sealed_tokens_cleared: u64,
    /// Replay keys deleted.
    pub replay_keys_deleted: u64,
    /// Issued-token rows deleted, past their retention.
    pub tokens_deleted: u64,
    /// Session rows deleted, past their retention.
    pub sessions_deleted: u64,
}

/// How long `purge_expired` keeps rows after they expired (`[retention]` of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Session rows.
    pub sessions: time::Duration,
    /// Issued-token rows.
    pub tokens: time::Duration,
}

impl Retention {
    /// Sessions kept `sessions_days` days after expiry, token rows `tokens_days` days.
    pub fn days(sessions_days: u32, tokens_days: u32) -> Self {
        Self {
            sessions: time::Duration::days(i64::from(sessions_days)),
            tokens: time::Duration::days(i64::from(tokens_days)),
        }
    }
}

/// A stored audit event with its place in its workspace's hash chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEvent {
    /// The event.
    pub event: AuditEvent,
    /// Its chain columns; `None` only for a row not linked yet (see `audit::chain`).
    pub link: Option<ChainLink>,
}

/// One page of audit events.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<ChainedEvent>,
    /// Cursor for the next (older) page; `None` when this page is the last.
    pub next_cursor: Option<i64>,
}

/// The session signing key, private half sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRecord {
    /// JWK `kid`.
    pub kid: String,
    /// JWS algorithm (`ES256`).
    pub algorithm: String,
    /// PKCS#8 PEM of the private key, sealed with the broker's AEAD key.
    pub private_key_sealed: String,
    /// The public JWK (a JSON object).
    pub public_jwk: serde_json::Value,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// A mint about to ask GitHub for a caller's tokens. Written before the first call and resolved
/// (deleted) in the same transaction as the mint's outcome, so a crash in between leaves it open
/// and the broker can report that GitHub may have minted tokens nobody recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct MintIntent {
    /// `int_…`.
    pub id: String,
    /// Workspace of the minting session.
    pub workspace_id: String,
    /// The minting session.
    pub session_id: String,
    /// Request id of the mint, for the audit event.
    pub request_id: Option<String>,
    /// Policy evaluated.
    pub policy_name: String,
    /// Its version, when it exists.
    pub policy_version: Option<i64>,
    /// Who asked, as the audit log names callers.
    pub actor: crate::audit::Actor,
    /// The tokens the mint is about to ask for.
    pub planned: Vec<PlannedToken>,
    /// When it was written.
    pub created_at: OffsetDateTime,
}

/// One token a mint intends to ask GitHub for: never a token, only what it would reach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedToken {
    /// GitHub installation id.
    pub installation_id: i64,
    /// Installation account login.
    pub owner: String,
    /// `owner/repo` names; `None` for a whole-installation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    /// Permissions asked for.
    pub permissions: BTreeMap<String, String>,
    /// Policy rules whose grants it carries.
    pub rules: Vec<String>,
}

/// A mint's tokens and success event, to record together with the resolution of its intent.
#[derive(Debug, Clone, Copy)]
pub struct MintRecord<'a> {
    /// Workspace that must still exist and be entitled.
    pub workspace_id: &'a str,
    /// Session that must still exist and not be revoked.
    pub session_id: &'a str,
    /// The intent this record resolves, if one was written.
    pub intent_id: Option<&'a str>,
    /// Token rows.
    pub tokens: &'a [IssuedToken],
    /// The success event.
    pub audit: &'a AuditEvent,
}

/// Why the store refused to record a mint: what changed while GitHub was minting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceRefusal {
    /// The workspace was deleted.
    WorkspaceMissing,
    /// The workspace lost its STS entitlement (deleting a workspace starts with this).
    WorkspaceDisabled,
    /// The session row is gone.
    SessionMissing,
    /// The session was ended (logout, administrator, workspace deletion).
    SessionRevoked,
}

impl IssuanceRefusal {
    /// The refusal the workspace's row gives: `sts_enabled` is `None` when the row is gone.
    /// Checked before the session's ([`by_session`](Self::by_session)).
    pub(crate) fn by_workspace(sts_enabled: Option<bool>) -> Option<Self> {
        match sts_enabled {
            None => Some(Self::WorkspaceMissing),
            Some(false) => Some(Self::WorkspaceDisabled),
            Some(true) => None,
        }
    }

    /// The refusal the session's row gives a mint into `workspace_id`: `session` is its
    /// workspace and whether it was ended, `None` when the row is gone. A session of another
    /// workspace is as good as missing.
    pub(crate) fn by_session(workspace_id: &str, session: Option<(&str, bool)>) -> Option<Self> {
        match session {
            None => Some(Self::SessionMissing),
            Some((owner, _)) if owner != workspace_id => Some(Self::SessionMissing),
            Some((_, true)) => Some(Self::SessionRevoked),
            Some((_, false)) => None,
        }
    }
}

/// What `record_mint` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuance {
    /// Token rows, intent resolution and audit event are written.
    Recorded,
    /// Nothing was written.
    Refused(IssuanceRefusal),
}
