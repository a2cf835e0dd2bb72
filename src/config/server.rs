//! `[server]`, `[database]` and `[telemetry]`: where the broker listens, what it stores in, and
//! how it reports.

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks one (the bound address is logged).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Base URL clients reach the broker at; the `iss` of session JWTs.
    pub public_url: String,
    /// Optional second address for the operator's endpoints (`/metrics`, `/api/v1/admin/*`):
    /// when set, they are served only there and `listen`, the address CI jobs reach, answers
    /// 404 for them.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Whole-request timeout.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
}

/// `[database]`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user:pass@host/db`. Secret: may hold a password. When
    /// `url_file` is set, [`Config::load`] puts the file's URL here.
    pub url: SecretString,
    /// A file holding the URL (a Kubernetes or Docker secret), instead of `url`.
    pub url_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://./sts-broker.db"),
            url_file: None,
            max_connections: 10,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("url_file", &self.url_file)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A database URL with its password replaced, safe to log.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("REDACTED"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`; any other value is refused when the file is read, naming
    /// the key.
    pub log_format: LogFormat,
    /// OTLP/HTTP collector (`http://collector:4318`, or its full `/v1/traces` URL); when absent,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` decides, and without it nothing is exported.
    pub otlp_endpoint: Option<String>,
}
/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_request_timeout() -> u64 {
    30
}
