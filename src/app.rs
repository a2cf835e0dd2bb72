//! `App`: every dependency of the broker, built in one place. No globals. The flows run on it;
//! it knows nothing of HTTP.

use crate::admin_token::AdminToken;
use crate::audit::export::ExportSettings;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::github::{GitHubApp, GitHubClient, GitHubClientConfig};
use crate::limits::{LogBudget, MintQuota};
use crate::metrics::Metrics;
use crate::oidc::{IssuerSettings, OidcVerifier};
use crate::policy::CompiledPolicy;
use crate::session::SessionKeys;
use crate::store::{Store, StoredPolicy};
use crate::telemetry::TracedGitHub;
use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many compiled policies to keep; beyond it the cache is cleared (policies are cheap to
/// recompile, this only bounds memory).
const POLICY_CACHE_CAPACITY: usize = 1024;

/// A stored policy version, compiled (or the validation errors it no longer passes).
pub type PolicyCompilation = Arc<Result<CompiledPolicy, Vec<String>>>;

/// The broker's dependencies.
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// OIDC verification against the configured issuers.
    pub oidc: OidcVerifier,
    /// GitHub, as the App.
    pub github: Arc<dyn GitHubApp>,
    /// Session JWT keys (the active one signs, every kept one verifies).
    pub sessions: SessionKeys,
    /// Seals minted tokens for later revoke.
    pub sealer: Sealer,
    /// Operator bearer token (re-read when its file changes).
    pub admin_token: AdminToken,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// How many refusal lines reach the log: refusals are the caller's to make, so their log
    /// lines are rate-limited (see [`crate::limits::REFUSAL_LOG_LINES`]).
    pub refusal_log: LogBudget,
    /// How many failure (5xx) lines reach the log: a caller can repeat a failure while it lasts
    /// (see [`crate::limits::FAILURE_LOG_LINES`]).
    pub failure_log: LogBudget,
    /// How many access lines of 4xx/5xx answers reach the log (see
    /// [`crate::limits::ACCESS_REFUSAL_LOG_LINES`]).
    pub refused_access_log: LogBudget,
    /// Audit export to the `[audit]` webhook; `None` when none is configured.
    pub audit_export: Option<ExportSettings>,
    /// Per-session and per-workspace mint quotas (`[limits]`), per replica.
    pub mint_quota: MintQuota,
    /// Compiled policies by [`policy_cache_key`]: compile once, evaluate per request.
    policies: Mutex<HashMap<[u8; 32], PolicyCompilation>>,
}

debug_showing!(App { config });

impl App {
    /// Build everything from the configuration.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let secrets = config.secrets()?;
        let metrics = Arc::new(Metrics::new());
        let store = crate::store::connect(
            config.database.url.expose_secret(),
            config.database.max_connections,
        )
        .await
        .with_context(|| {
            format!(
                "database {}",
                crate::config::redact_url(config.database.url.expose_secret())
            )
        })?;
        let observer_metrics = Arc::clone(&metrics);
        let api_url: url::Url = config.github.api_url.parse().context("github.api_url")?;
        let client = GitHubClient::new(GitHubClientConfig {
            api_url: api_url.clone(),
            app_id: config.github.app_id.clone(),
            private_key_pem: secrets.app_private_key.clone(),
            observer: Some(Arc::new(move |op, status, latency, remaining| {
                observer_metrics.github_call(op, status, latency);
                if let Some(remaining) = remaining {
                    let installation = crate::telemetry::current_installation();
                    observer_metrics.github_rate_limit(installation, remaining);
                }
            })),
        })
        .context("github app client")?;
        let github: Arc<dyn GitHubApp> = Arc::new(TracedGitHub::new(client, &api_url));
        let issuers = config
            .oidc
            .issuers
            .iter()
            .map(|i| {
                Ok(IssuerSettings {
                    issuer: i.issuer.clone(),
                    audiences: i.audiences.clone(),
                    jwks_url: i.jwks_url.as_deref().map(str::parse).transpose()?,
                    allow_http: i.allow_http,
                })
            })
            .collect::<Result<Vec<_>, url::ParseError>>()
            .context("oidc.issuers")?;
        let oidc = OidcVerifier::new(issuers).map_err(|e| anyhow::anyhow!("oidc.issuers: {e}"))?;
        let sealer = Sealer::rotated(&secrets.token_key, &secrets.previous_token_keys);
        // The key ring reads the signing keys again on its own, so it keeps a sealer of its own.
        let sessions = SessionKeys::load(
            Arc::clone(&store),
            Sealer::rotated(&secrets.token_key, &secrets.previous_token_keys),
            config.server.public_url.trim_end_matches('/'),
        )
        .await
        .context("session signing keys")?;
        let mint_quota = MintQuota::new(&config.limits, Arc::clone(&metrics));
        let audit_export = ExportSettings::from_config(&config)?;
        let admin_token = AdminToken::new(&secrets.admin_token, config.admin_token_file());
        Ok(Self {
            audit_export,
            config,
            store,
            oidc,
            github,
            sessions,
            sealer,
            admin_token,
            metrics,
            refusal_log: LogBudget::refusals(),
            failure_log: LogBudget::failures(),
            refused_access_log: LogBudget::refused_access(),
            mint_quota,
            policies: Mutex::new(HashMap::new()),
        })
    }

    /// The compiled form of a stored policy version (compiled once, then cached).
    pub fn compiled_policy(
        &self,
        stored: &StoredPolicy,
    ) -> Arc<Result<CompiledPolicy, Vec<String>>> {
        let key = policy_cache_key(stored);
        if let Some(hit) = self
            .policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Arc::clone(hit);
        }
        // The store decodes the format into `PolicyFormat` and refuses one it does not know
        // (`StoreError::Corrupt`), so nothing unknown is ever compiled as if it were JSON.
        let compiled = Arc::new(CompiledPolicy::from_source(&stored.source, stored.format));
        let mut cache = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= POLICY_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&compiled));
        compiled
    }
}

/// The compiled-policy cache key: SHA-256 over the format's stored name, a NUL (no format name
/// holds one) and the source. A compilation depends on exactly these two, so an entry can only
/// ever be served for the very text it was compiled from. Keying by (workspace, name, version)
/// did not hold: deleting a workspace deletes its policy history, so the workspace re-created
/// under the same id starts again at version 1 and was served the deleted workspace's version 1,
/// on every replica whose cache held it.
fn policy_cache_key(stored: &StoredPolicy) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(stored.format.as_str().as_bytes());
    hash.update([0]);
    hash.update(stored.source.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyFormat;
    use time::OffsetDateTime;

    fn stored(workspace: &str, version: i64, source: &str, format: PolicyFormat) -> StoredPolicy {
        StoredPolicy {
            workspace_id: workspace.to_owned(),
            name: "default".to_owned(),
            version,
            source: source.to_owned(),
            format,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_policy_cache_key_is_the_content_not_the_version() {
        let json = PolicyFormat::Json;
        let v1 = stored("acme", 1, "{\"rules\": []}", json);
        // The same workspace, name and version with another text: another key.
        let recreated = stored("acme", 1, "{\"rules\": [] }", json);
        assert_ne!(policy_cache_key(&v1), policy_cache_key(&recreated));
        // The same text in another format is another compilation.
        let as_yaml = stored("acme", 1, "{\"rules\": []}", PolicyFormat::Yaml);
        assert_ne!(policy_cache_key(&v1), policy_cache_key(&as_yaml));
        // The same text anywhere else compiles the same: one entry serves both.
        let elsewhere = stored("globex", 7, "{\"rules\": []}", json);
        assert_eq!(policy_cache_key(&v1), policy_cache_key(&elsewhere));
    }
}
