//! Configuration: a TOML file plus `STS_BROKER__SECTION__KEY` environment overrides, parsed once at
//! start and validated with errors that name the key.
//!
//! Environment variables read (all optional; each overrides the file's key of the same path):
//! `STS_BROKER__SERVER__LISTEN`, `STS_BROKER__SERVER__PUBLIC_URL`,
//! `STS_BROKER__SERVER__REQUEST_TIMEOUT_SECONDS`, `STS_BROKER__DATABASE__URL`,
//! `STS_BROKER__DATABASE__URL_FILE`,
//! `STS_BROKER__DATABASE__MAX_CONNECTIONS`, `STS_BROKER__GITHUB__API_URL`,
//! `STS_BROKER__GITHUB__HOST`, `STS_BROKER__GITHUB__APP_ID`, `STS_BROKER__GITHUB__PRIVATE_KEY_FILE`,
//! `STS_BROKER__GITHUB__PRIVATE_KEY`, `STS_BROKER__SESSION__TTL_SECONDS`,
//! `STS_BROKER__ADMIN__TOKEN_FILE`, `STS_BROKER__ADMIN__TOKEN`,
//! `STS_BROKER__TOKENS__ENCRYPTION_KEY_FILE`, `STS_BROKER__TOKENS__ENCRYPTION_KEY`,
//! `STS_BROKER__TELEMETRY__LOG_FORMAT`, `STS_BROKER__TELEMETRY__OTLP_ENDPOINT`,
//! `STS_BROKER__LIMITS__SESSION_MINTS_PER_MINUTE`, `STS_BROKER__LIMITS__WORKSPACE_MINTS_PER_MINUTE`,
//! `STS_BROKER__LIMITS__MAX_CONNECTIONS`, `STS_BROKER__LIMITS__HEADER_READ_TIMEOUT_SECONDS`,
//! `STS_BROKER__LIMITS__SHUTDOWN_GRACE_SECONDS`,
//! `STS_BROKER__RETENTION__SESSIONS_DAYS`, `STS_BROKER__RETENTION__TOKENS_DAYS`,
//! `STS_BROKER__AUDIT__WEBHOOK_URL`, `STS_BROKER__AUDIT__WEBHOOK_SECRET_FILE`,
//! `STS_BROKER__AUDIT__WEBHOOK_SECRET`, `STS_BROKER__AUDIT__WEBHOOK_MAX_BACKOFF_SECONDS`.
//! `[[oidc.issuers]]` is a list and is set in the file only.
//!
//! Relative `*_file` paths are resolved against the directory of the config file.
//!
//! One file per group of sections that change together: `server` (`[server]`, `[database]`,
//! `[telemetry]`), `upstream` (`[github]`, `[oidc]`), `credentials` (`[session]`, `[admin]`,
//! `[tokens]`), `audit`, `limits` (`[limits]`, `[retention]`); `load` reads and validates the
//! whole, `urls` holds the URL rules several sections share.

mod audit;
mod credentials;
mod limits;
mod load;
mod server;
mod upstream;
mod urls;

pub use audit::{AuditConfig, MIN_WEBHOOK_SECRET_LEN};
pub use credentials::{
    AdminConfig, SessionConfig, TokensConfig, MAX_SESSION_TTL_SECONDS, MIN_ADMIN_TOKEN_LEN,
    MIN_SESSION_TTL_SECONDS,
};
pub use limits::{
    LimitsConfig, RetentionConfig, DEFAULT_SESSION_RETENTION_DAYS, DEFAULT_TOKEN_RETENTION_DAYS,
    MAX_LIMIT_SECONDS, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
};
pub use server::{redact_url, DatabaseConfig, LogFormat, ServerConfig, TelemetryConfig};
pub use upstream::{GitHubConfig, IssuerConfig, OidcConfig};
pub use urls::{check_fetch_url, check_otlp_endpoint, is_loopback_url};

use secrecy::{SecretBox, SecretString};
use serde::Deserialize;
use std::path::PathBuf;

/// Prefix of environment overrides; `__` separates section and key.
pub const ENV_PREFIX: &str = "STS_BROKER__";
/// `User-Agent` of every request the broker makes (OIDC issuers, GitHub): GitHub refuses requests
/// without one, and operators of an issuer can tell the broker's traffic (and version) apart.
pub const USER_AGENT: &str = concat!("sts-broker/", env!("CARGO_PKG_VERSION"));

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[github]`.
    pub github: GitHubConfig,
    /// `[oidc]`.
    #[serde(default)]
    pub oidc: OidcConfig,
    /// `[session]`.
    #[serde(default)]
    pub session: SessionConfig,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[tokens]`.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// `[telemetry]`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[retention]`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Directory relative `*_file` paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Secrets read from files or inline values, ready to use.
pub struct Secrets {
    /// The App's PEM private key.
    pub app_private_key: SecretString,
    /// The operator bearer token.
    pub admin_token: SecretString,
    /// The 32-byte AEAD key.
    pub token_key: SecretBox<[u8; 32]>,
    /// Keys it replaced, which still open (see `tokens.previous_encryption_key_files`).
    pub previous_token_keys: Vec<SecretBox<[u8; 32]>>,
}

debug_showing!(Secrets {});

#[cfg(test)]
mod tests;
