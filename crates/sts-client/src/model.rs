//! The client's view of what the broker returns, tolerant of brokers other than ours: only `host`,
//! `owner` and `token` are needed to use a token (as in Atmos CLI); everything else is optional.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One minted token as the client keeps it (also the state file's record).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientToken {
    /// Broker token id, used to revoke through the broker; absent from brokers that lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// GitHub host, e.g. `github.com` (may carry a port against a simulator).
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) host: String,
    /// Installation account login, exactly as in users' URLs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) owner: String,
    /// The installation token. Never printed except by `env`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) token: String,
    /// RFC 3339 expiry.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) expires_at: String,
    /// `owner/repo` the token reaches; absent = every repository of the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) repositories: Option<Vec<String>>,
    /// Granted permissions.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub(crate) permissions: BTreeMap<String, String>,
    /// GitHub installation id, kept as sent (other brokers may send a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) installation_id: Option<serde_json::Value>,
}

/// What `{:?}` shows in place of a secret.
pub(crate) const REDACTED: &str = "[redacted]";

/// What `{:?}` shows of a secret field: [`REDACTED`] in its place, so that it tells whether
/// there is a secret, never what it is.
pub(crate) trait Redact {
    /// The stand-in `{:?}` shows.
    type Shown: std::fmt::Debug;
    /// The stand-in for `self`.
    fn redacted(&self) -> Self::Shown;
}

/// A secret that is always there (possibly empty, which is not worth telling either).
impl Redact for String {
    type Shown = &'static str;
    fn redacted(&self) -> &'static str {
        REDACTED
    }
}

/// A secret that may be missing: `None`, or [`REDACTED`] for one that is set.
impl<T> Redact for Option<T> {
    type Shown = Option<&'static str>;
    fn redacted(&self) -> Option<&'static str> {
        self.as_ref().map(|_| REDACTED)
    }
}

debug_redacting!(ClientToken {
    id, host, owner, expires_at, repositories, permissions, installation_id;
    redacted: token
});

impl ClientToken {
    /// Has what git needs (Atmos skips tokens lacking any of these).
    pub(crate) fn is_usable(&self) -> bool {
        !self.host.is_empty() && !self.owner.is_empty() && !self.token.is_empty()
    }

    /// Parsed `expiresAt`; `None` when absent or unparseable (treated as stale).
    pub(crate) fn expires_at(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.expires_at, &Rfc3339).ok()
    }
}

/// A token for unit tests: expires 2030-01-01T01:00:00Z; `repos` = `None` is a
/// whole-installation token.
#[cfg(test)]
pub(crate) fn tok(host: &str, owner: &str, token: &str, repos: Option<&[&str]>) -> ClientToken {
    ClientToken {
        id: None,
        host: host.to_owned(),
        owner: owner.to_owned(),
        token: token.to_owned(),
        expires_at: "2030-01-01T01:00:00Z".to_owned(),
        repositories: repos.map(|r| r.iter().map(|s| (*s).to_owned()).collect()),
        permissions: BTreeMap::new(),
        installation_id: None,
    }
}

/// A repository the broker left out, with its reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exclusion {
    /// `owner/repo` as sent.
    #[serde(default)]
    pub(crate) repo: String,
    /// One of the contract's five reason codes (shown verbatim).
    #[serde(default)]
    pub(crate) reason: String,
}

/// `null` decodes as the default, as Go's encoding/json leaves the zero value (Atmos's decoder).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
