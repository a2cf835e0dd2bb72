//! `[audit]`: export of the audit log to a webhook, and its checks.

use super::urls::check_raw_fetch_url;
use super::{Config, MAX_LIMIT_SECONDS};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::path::PathBuf;

/// `[audit]`: export of every audit event to a SIEM webhook (contract §11).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Where each event is POSTed as a CloudEvent; no export when unset.
    pub webhook_url: Option<String>,
    /// File holding the HMAC-SHA256 key of the `X-STS-Signature` header.
    pub webhook_secret_file: Option<PathBuf>,
    /// The key inline (prefer the file or the env var).
    pub webhook_secret: Option<SecretString>,
    /// Longest wait between two attempts to deliver a refused event (the wait doubles per
    /// failure up to this).
    pub webhook_max_backoff_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret_file: None,
            webhook_secret: None,
            // Five minutes: a receiver back from an outage is found again soon, without the broker
            // knocking every second while it is down.
            webhook_max_backoff_seconds: 300,
        }
    }
}

/// Shortest webhook signing key: a shorter HMAC key is guessable offline from one signed body.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 32;

impl Config {
    /// `[audit]`: a webhook URL that can carry the audit log (https; http only to loopback),
    /// with its signing key; or nothing of it.
    pub(super) fn validate_audit(&self, errors: &mut Vec<String>) {
        let audit = &self.audit;
        if !(1..=MAX_LIMIT_SECONDS).contains(&audit.webhook_max_backoff_seconds) {
            errors.push(format!(
                "audit.webhook_max_backoff_seconds: must be between 1 and {MAX_LIMIT_SECONDS}"
            ));
        }
        let Some(url) = &audit.webhook_url else {
            if audit.webhook_secret.is_some() || audit.webhook_secret_file.is_some() {
                errors.push("audit.webhook_secret_file: set without audit.webhook_url".to_owned());
            }
            return;
        };
        if let Err(e) = check_raw_fetch_url(url, true) {
            errors.push(format!("audit.webhook_url: {e}"));
        }
        if let Err(e) = self.webhook_secret() {
            errors.push(format!(
                "audit.webhook_secret_file / audit.webhook_secret: {e:#}"
            ));
        }
    }

    /// The webhook's HMAC key.
    pub fn webhook_secret(&self) -> anyhow::Result<SecretString> {
        let secret = self.read_secret(
            self.audit.webhook_secret.as_ref(),
            self.audit.webhook_secret_file.as_ref(),
        )?;
        anyhow::ensure!(
            secret.expose_secret().len() >= MIN_WEBHOOK_SECRET_LEN,
            "must be at least {MIN_WEBHOOK_SECRET_LEN} characters"
        );
        Ok(secret)
    }
}
