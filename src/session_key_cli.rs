//! `sts-broker session-key rotate|list|retire`: the operator's commands on the session signing
//! keys, against the database of a broker's configuration (see `docs/operations.md`, "Session
//! signing key"). Running replicas need no restart: they follow within
//! [`SIGNING_KEY_REFRESH`](crate::session::keys::SIGNING_KEY_REFRESH).

use crate::audit::format_time;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::session::keys::{self, SIGNING_KEY_REFRESH, SIGNING_KEY_RETENTION};
use crate::store::Store;
use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The database of `config`.
async fn store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database.url.expose_secret();
    crate::store::connect(url, 1)
        .await
        .with_context(|| format!("database {}", crate::config::redact_url(url)))
}

/// `rotate`: a new key signs from now on (on every replica within the refresh period); the
/// previous one keeps verifying the sessions it signed until it is retired. Returns the report.
pub async fn rotate(config: &Config) -> anyhow::Result<String> {
    let secrets = config.secrets()?;
    let sealer = Sealer::rotated(&secrets.token_key, &secrets.previous_token_keys);
    let store = store(config).await?;
    let rotated = keys::rotate(&*store, &sealer, OffsetDateTime::now_utc()).await?;
    let mut out = format!(
        "new signing key {} is active; replicas sign with it within {} s\n",
        rotated.kid,
        SIGNING_KEY_REFRESH.as_secs()
    );
    if let Some(previous) = rotated.previous {
        let _ = writeln!(
            out,
            "previous key {previous} still verifies the sessions it signed; it is retired \
             automatically after {} h (or at once with `session-key retire --now`, which ends \
             those sessions)",
            SIGNING_KEY_RETENTION.as_secs() / 3600
        );
    }
    Ok(out)
}

/// `list`: every kept key, oldest first: id, creation, and whether it signs or since when it
/// only verifies (and from when `retire` drops it). No key material.
pub async fn list(config: &Config) -> anyhow::Result<String> {
    let store = store(config).await?;
    let keys = store.list_signing_keys().await?;
    if keys.is_empty() {
        return Ok("no signing key yet: the first broker to start creates one\n".to_owned());
    }
    let mut out = String::new();
    for key in keys {
        let state = match key.deactivated_at {
            _ if key.active => "active (signs)".to_owned(),
            Some(at) => format!(
                "deactivated {} (verifies; retired after {})",
                format_time(at),
                format_time(at + SIGNING_KEY_RETENTION)
            ),
            None => "inactive".to_owned(),
        };
        let _ = writeln!(
            out,
            "{}  created {}  {state}",
            key.record.kid,
            format_time(key.record.created_at)
        );
    }
    Ok(out)
}

/// `retire`: drop the keys deactivated more than `keep` ago (the active key never). With
/// [`SIGNING_KEY_RETENTION`] no usable session loses its key; shorter, the sessions the dropped
/// keys signed end at once (on every replica within the refresh period). Returns the report.
pub async fn retire(config: &Config, keep: Duration) -> anyhow::Result<String> {
    let store = store(config).await?;
    let retired = keys::retire(&*store, OffsetDateTime::now_utc(), keep).await?;
    if retired.is_empty() {
        return Ok("no signing key to retire\n".to_owned());
    }
    Ok(retired
        .iter()
        .map(|kid| format!("retired signing key {kid}\n"))
        .collect())
}
