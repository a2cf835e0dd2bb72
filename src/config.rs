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

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use figment::providers::{Env, Format as _, Toml};
use figment::Figment;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::Url;

/// Prefix of environment overrides; `__` separates section and key.
pub const ENV_PREFIX: &str = "STS_BROKER__";

/// Shortest session lifetime we accept: the client re-authenticates 5 minutes before `exp`, so a
/// session must outlive that margin with room to spare.
pub const MIN_SESSION_TTL_SECONDS: u64 = 600;
/// Longest session lifetime: a session is a bearer credential; a day bounds the damage of a leak.
pub const MAX_SESSION_TTL_SECONDS: u64 = 86_400;
/// Shortest operator token: shorter is guessable.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// Largest `[limits]` timeout or grace, in seconds: an hour is past any use as a defence, and
/// keeps deadlines computed from it far from overflowing.
pub const MAX_LIMIT_SECONDS: u64 = 3600;
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
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user:pass@host/db`. Secret: may hold a password. When
    /// `url_file` is set, [`Config::load`] puts the file's URL here.
    #[serde(default = "default_database_url")]
    pub url: SecretString,
    /// A file holding the URL (a Kubernetes or Docker secret), instead of `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_database_url(),
            url_file: None,
            max_connections: default_max_connections(),
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

/// `[github]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// REST API base (`https://api.github.com`, GHES `https://HOST/api/v3`).
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// Host reported with each token (`github.com`).
    #[serde(default = "default_github_host")]
    pub host: String,
    /// App id or client id: the `iss` of App JWTs.
    pub app_id: String,
    /// PEM file of the App's private key.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The PEM inline (prefer the file or the env var).
    #[serde(default)]
    pub private_key: Option<SecretString>,
}

/// `[oidc]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Trusted issuers; only these are ever fetched.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
}

/// `[[oidc.issuers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// JWKS URL; default: discovery.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Allow http; honoured only for loopback hosts.
    #[serde(default)]
    pub allow_http: bool,
}

/// `[session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Lifetime of session JWTs.
    #[serde(default = "default_session_ttl")]
    pub ttl_seconds: u64,
}

impl SessionConfig {
    /// The session lifetime. A `std` duration, so adding it to a time needs no fallible
    /// conversion; validation keeps it between the minimum and a day.
    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ttl_seconds)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl_seconds: default_session_ttl(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the operator bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token inline (prefer the file or the env var).
    #[serde(default)]
    pub token: Option<SecretString>,
}

/// `[tokens]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// File holding 32 random bytes, base64: the AEAD key that seals tokens for later revoke.
    #[serde(default)]
    pub encryption_key_file: Option<PathBuf>,
    /// The key inline (base64).
    #[serde(default)]
    pub encryption_key: Option<SecretString>,
    /// Files of keys replaced by a rotation: they still open the tokens (and the session signing
    /// key) they sealed; nothing new is sealed with them. Drop one once everything it sealed has
    /// expired (a token lives at most an hour).
    #[serde(default)]
    pub previous_encryption_key_files: Vec<PathBuf>,
}

/// `[audit]`: export of every audit event to a SIEM webhook (contract §11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where each event is POSTed as a CloudEvent; no export when unset.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// File holding the HMAC-SHA256 key of the `X-STS-Signature` header.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// The key inline (prefer the file or the env var).
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// Longest wait between two attempts to deliver a refused event (the wait doubles per
    /// failure up to this).
    #[serde(default = "default_webhook_max_backoff")]
    pub webhook_max_backoff_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret_file: None,
            webhook_secret: None,
            webhook_max_backoff_seconds: default_webhook_max_backoff(),
        }
    }
}

/// Shortest webhook signing key: a shorter HMAC key is guessable offline from one signed body.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 32;

fn default_webhook_max_backoff() -> u64 {
    // Five minutes: a receiver back from an outage is found again soon, without the broker
    // knocking every second while it is down.
    300
}

/// `[telemetry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`; any other value is refused when the file is read, naming
    /// the key.
    #[serde(default)]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector (`http://collector:4318`, or its full `/v1/traces` URL); when absent,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` decides, and without it nothing is exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

/// `[limits]`: what one caller, one workspace or one connection may cost the broker. Every
/// value is checked to be at least 1 (0 would refuse everything or disable the defence).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `/api/v1/sts` calls one session may make in any minute; beyond: `429 rate_limited`.
    #[serde(default = "default_session_mints_per_minute")]
    pub session_mints_per_minute: u32,
    /// `/api/v1/sts` calls all sessions of one workspace may make in any minute: every tenant
    /// shares the GitHub App's rate limit, so one workspace must not spend all of it.
    #[serde(default = "default_workspace_mints_per_minute")]
    pub workspace_mints_per_minute: u32,
    /// Connections held open at once; beyond it the broker stops accepting until one closes.
    #[serde(default = "default_max_connections_held")]
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after it opened (or after
    /// its previous response) is closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_seconds: u64,
    /// On SIGTERM, in-flight requests get this long to finish; then the broker exits anyway.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
}

impl LimitsConfig {
    /// [`Self::header_read_timeout_seconds`] as a duration.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// [`Self::shutdown_grace_seconds`] as a duration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_seconds)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            session_mints_per_minute: default_session_mints_per_minute(),
            workspace_mints_per_minute: default_workspace_mints_per_minute(),
            max_connections: default_max_connections_held(),
            header_read_timeout_seconds: default_header_read_timeout(),
            shutdown_grace_seconds: default_shutdown_grace(),
        }
    }
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
fn default_database_url() -> SecretString {
    SecretString::from("sqlite://./sts-broker.db")
}
fn default_max_connections() -> u32 {
    10
}
fn default_github_api() -> String {
    "https://api.github.com".to_owned()
}
fn default_github_host() -> String {
    "github.com".to_owned()
}
fn default_session_ttl() -> u64 {
    3600
}
fn default_session_mints_per_minute() -> u32 {
    // A CI job mints a handful of times; one a second is far above any honest loop.
    60
}
fn default_workspace_mints_per_minute() -> u32 {
    // GitHub allows an App at least 5 000 requests an hour per installation; 1 200 mints a
    // minute across all of a workspace's jobs is generous for one tenant yet stops one tenant
    // from spending the budget all tenants share.
    1200
}
fn default_max_connections_held() -> usize {
    // Each open connection costs a task, buffers and a file descriptor; 10 000 stays well inside
    // a default container's `ulimit -n` of 65 536 with room for database and GitHub sockets.
    10_000
}
fn default_header_read_timeout() -> u64 {
    // A real client sends its request head in one packet; ten seconds covers slow networks and
    // still frees a slot held by a client that never finishes (slowloris).
    10
}
fn default_shutdown_grace() -> u64 {
    // Below Kubernetes' default 30 s termination grace, so the broker exits on its own before
    // it is killed, and longer than any request but a stuck one.
    20
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

impl Config {
    /// Load `path` (if any) and the environment, then validate.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_from(path, true)
    }

    /// Load `path` alone, ignoring the `STS_BROKER__*` environment, then validate: for a config
    /// that must be exactly what was written (the dev world's).
    pub fn load_file(path: &Path) -> anyhow::Result<Self> {
        Self::load_from(Some(path), false)
    }

    fn load_from(path: Option<&Path>, with_env: bool) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        if with_env {
            figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        }
        let mut config: Config = figment.extract().map_err(|e| {
            let errors: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration:\n  - {}", errors.join("\n  - "))
        })?;
        config.base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let url_set = figment.find_value("database.url").is_ok();
        config.database.url = config.database_url(url_set).map_err(|e| {
            anyhow::anyhow!("invalid configuration:\n  - database.url_file / database.url: {e:#}")
        })?;
        config.validate().map_err(|errors| {
            anyhow::anyhow!("invalid configuration:\n  - {}", errors.join("\n  - "))
        })?;
        Ok(config)
    }

    /// Check every key; all problems are reported, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "server.listen: `{}` is not an ip:port address",
                self.server.listen
            ));
        }
        if let Some(admin) = &self.server.admin_listen {
            match admin.parse::<SocketAddr>() {
                Err(_) => errors.push(format!(
                    "server.admin_listen: `{admin}` is not an ip:port address"
                )),
                // Port 0 picks a free port for each, so two of them never collide.
                Ok(addr) if addr.port() != 0 && *admin == self.server.listen => {
                    errors.push("server.admin_listen: must differ from server.listen".to_owned())
                }
                Ok(_) => {}
            }
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            if let Err(e) = check_otlp_endpoint(endpoint) {
                errors.push(format!("telemetry.otlp_endpoint: {e}"));
            }
        }
        match Url::parse(&self.server.public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => errors.push("server.public_url: must be an http(s) URL".to_owned()),
        }
        if self.server.request_timeout_seconds == 0 {
            errors.push("server.request_timeout_seconds: must be at least 1".to_owned());
        }
        let db = self.database.url.expose_secret();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            errors.push(
                "database.url: must start with sqlite:, postgres:// or postgresql://".to_owned(),
            );
        }
        if self.database.max_connections == 0 {
            errors.push("database.max_connections: must be at least 1".to_owned());
        }
        match Url::parse(&self.github.api_url) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_url(&u)) => {}
            _ => errors
                .push("github.api_url: must be an https URL (http only for loopback)".to_owned()),
        }
        if self.github.host.trim().is_empty() || self.github.host.contains('/') {
            errors.push("github.host: must be a host name such as github.com".to_owned());
        }
        if self.github.app_id.trim().is_empty() {
            errors.push("github.app_id: must not be empty".to_owned());
        }
        if let Err(e) = self.app_private_key() {
            errors.push(format!(
                "github.private_key_file / github.private_key: {e:#}"
            ));
        }
        if self.oidc.issuers.is_empty() {
            errors.push("oidc.issuers: at least one issuer is required".to_owned());
        }
        for (i, issuer) in self.oidc.issuers.iter().enumerate() {
            if let Err(e) = check_raw_fetch_url(&issuer.issuer, issuer.allow_http) {
                errors.push(format!("oidc.issuers[{i}].issuer: {e}"));
            }
            if let Some(jwks) = &issuer.jwks_url {
                if let Err(e) = check_raw_fetch_url(jwks, issuer.allow_http) {
                    errors.push(format!("oidc.issuers[{i}].jwks_url: {e}"));
                }
            }
            if issuer.audiences.is_empty() || issuer.audiences.iter().any(|a| a.trim().is_empty()) {
                errors.push(format!(
                    "oidc.issuers[{i}].audiences: at least one non-empty audience"
                ));
            }
        }
        if !(MIN_SESSION_TTL_SECONDS..=MAX_SESSION_TTL_SECONDS).contains(&self.session.ttl_seconds)
        {
            errors.push(format!(
                "session.ttl_seconds: must be between {MIN_SESSION_TTL_SECONDS} and {MAX_SESSION_TTL_SECONDS}"
            ));
        }
        if let Err(e) = self.admin_token() {
            errors.push(format!("admin.token_file / admin.token: {e:#}"));
        }
        if let Err(e) = self.token_key() {
            errors.push(format!(
                "tokens.encryption_key_file / tokens.encryption_key: {e:#}"
            ));
        }
        for (i, file) in self.tokens.previous_encryption_key_files.iter().enumerate() {
            if let Err(e) = self.previous_token_key(file) {
                errors.push(format!("tokens.previous_encryption_key_files[{i}]: {e:#}"));
            }
        }
        self.limits.validate(&mut errors);
        errors.extend(self.retention.validate());
        self.validate_audit(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn read_secret(
        &self,
        inline: Option<&SecretString>,
        file: Option<&PathBuf>,
    ) -> anyhow::Result<SecretString> {
        match (inline, file) {
            (Some(_), Some(_)) => anyhow::bail!("set the file or the inline value, not both"),
            (Some(value), None) => Ok(value.clone()),
            (None, Some(file)) => {
                let path = self.resolve(file);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(SecretString::from(text.trim().to_owned()))
            }
            (None, None) => anyhow::bail!("missing: set the file or the inline value"),
        }
    }

    /// The database URL: from `url_file` when set (`url_set`: whether the file or environment
    /// also set `url`, which is then ambiguous), else `url` or its default. Errors never hold the
    /// file's content, which may carry a password.
    fn database_url(&self, url_set: bool) -> anyhow::Result<SecretString> {
        let Some(file) = &self.database.url_file else {
            return Ok(self.database.url.clone());
        };
        anyhow::ensure!(!url_set, "set the file or the inline value, not both");
        let url = self.read_secret(None, Some(file))?;
        anyhow::ensure!(
            !url.expose_secret().is_empty(),
            "{} is empty",
            self.resolve(file).display()
        );
        Ok(url)
    }

    /// The App private key PEM; checked to be an RSA PEM.
    pub fn app_private_key(&self) -> anyhow::Result<SecretString> {
        let pem = self.read_secret(
            self.github.private_key.as_ref(),
            self.github.private_key_file.as_ref(),
        )?;
        jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
            .map_err(|_| anyhow::anyhow!("not a PEM RSA private key (PKCS#1 or PKCS#8)"))?;
        Ok(pem)
    }

    /// The operator token.
    pub fn admin_token(&self) -> anyhow::Result<SecretString> {
        let token = self.read_secret(self.admin.token.as_ref(), self.admin.token_file.as_ref())?;
        anyhow::ensure!(
            token.expose_secret().len() >= MIN_ADMIN_TOKEN_LEN,
            "must be at least {MIN_ADMIN_TOKEN_LEN} characters"
        );
        Ok(token)
    }

    /// The file the operator token is read from (resolved), if it comes from one: the broker
    /// re-reads it when it changes.
    pub fn admin_token_file(&self) -> Option<PathBuf> {
        self.admin.token_file.as_deref().map(|f| self.resolve(f))
    }

    /// The token-sealing key.
    pub fn token_key(&self) -> anyhow::Result<SecretBox<[u8; 32]>> {
        let b64 = self.read_secret(
            self.tokens.encryption_key.as_ref(),
            self.tokens.encryption_key_file.as_ref(),
        )?;
        decode_token_key(&b64)
    }

    /// A previous token-sealing key, from its file.
    fn previous_token_key(&self, file: &PathBuf) -> anyhow::Result<SecretBox<[u8; 32]>> {
        decode_token_key(&self.read_secret(None, Some(file))?)
    }

    /// `[audit]`: a webhook URL that can carry the audit log (https; http only to loopback),
    /// with its signing key; or nothing of it.
    fn validate_audit(&self, errors: &mut Vec<String>) {
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

    /// All secrets at once.
    pub fn secrets(&self) -> anyhow::Result<Secrets> {
        Ok(Secrets {
            app_private_key: self.app_private_key()?,
            admin_token: self.admin_token()?,
            token_key: self.token_key()?,
            previous_token_keys: (self.tokens.previous_encryption_key_files.iter())
                .map(|file| self.previous_token_key(file))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// A token-sealing key: base64 of exactly 32 bytes.
fn decode_token_key(b64: &SecretString) -> anyhow::Result<SecretBox<[u8; 32]>> {
    let bytes = STANDARD
        .decode(b64.expose_secret().trim())
        .map_err(|_| anyhow::anyhow!("not valid base64"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("must decode to exactly 32 bytes"))?;
    Ok(SecretBox::new(Box::new(key)))
}

impl LimitsConfig {
    /// Each key at least 1: a zero quota would refuse every mint, zero connections would serve
    /// nothing, and a zero timeout or grace would drop every request. The upper bounds keep the
    /// values meaningful (a timer past [`MAX_LIMIT_SECONDS`] is no defence) and within what the
    /// server can hold (a semaphore has at most [`tokio::sync::Semaphore::MAX_PERMITS`]).
    fn validate(&self, errors: &mut Vec<String>) {
        let max_permits = u64::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u64::MAX);
        let keys = [
            (
                "session_mints_per_minute",
                u64::from(self.session_mints_per_minute),
                u64::from(u32::MAX),
            ),
            (
                "workspace_mints_per_minute",
                u64::from(self.workspace_mints_per_minute),
                u64::from(u32::MAX),
            ),
            (
                "max_connections",
                u64::try_from(self.max_connections).unwrap_or(u64::MAX),
                max_permits,
            ),
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                MAX_LIMIT_SECONDS,
            ),
            (
                "shutdown_grace_seconds",
                self.shutdown_grace_seconds,
                MAX_LIMIT_SECONDS,
            ),
        ];
        for (key, value, max) in keys {
            if !(1..=max).contains(&value) {
                errors.push(format!("limits.{key}: must be between 1 and {max}"));
            }
        }
    }
}

/// Is the URL's host loopback (127.0.0.0/8, ::1, localhost)? The one check behind every
/// "http only on loopback" rule (GitHub API URL, OIDC issuer and JWKS URLs, policy issuers): plain
/// http is tolerated only where the traffic cannot leave the machine. `localhost` is matched
/// exactly, never as a prefix, so `localhost.evil.com` is not loopback.
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The rule for every URL the broker fetches from an OIDC issuer (issuer, discovered or
/// configured JWKS URL): `https://`, or `http://` on a loopback host when `allow_http` is set
/// (tests and dev mode). Credentials in the URL are refused: they would end up in logs.
pub fn check_fetch_url(url: &Url, allow_http: bool) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http && is_loopback_url(url) => {}
        "http" if allow_http => return Err("http is allowed only on a loopback host".into()),
        "http" => return Err("must be https (http needs allow_http and a loopback host)".into()),
        other => return Err(format!("unsupported scheme `{other}`")),
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    Ok(())
}

/// An OTLP/HTTP endpoint: an absolute http(s) URL with a host, without credentials (a secret in
/// it would reach logs; collectors take them as `OTEL_EXPORTER_OTLP_HEADERS`).
pub fn check_otlp_endpoint(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an http(s) URL with a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use OTEL_EXPORTER_OTLP_HEADERS".to_owned());
    }
    Ok(url)
}

/// [`check_fetch_url`] on a configured string.
fn check_raw_fetch_url(raw: &str, allow_http: bool) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|_| "not a URL".to_owned())?;
    check_fetch_url(&url, allow_http)
}

/// `[retention]`: how long housekeeping keeps rows that can no longer be used, counted from
/// their expiry. The audit log is never purged: it keeps, for good, what these rows said (token
/// ids, fingerprints, repositories, permissions, session ids and caller claims).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a session row is kept after its expiry; longer while a kept token row names it.
    #[serde(default = "default_session_retention_days")]
    pub sessions_days: u32,
    /// Days an issued-token row is kept after its expiry.
    #[serde(default = "default_token_retention_days")]
    pub tokens_days: u32,
}

/// Default `retention.sessions_days`. A session row is what an admin revocation by `sessionId`
/// and the token listing name; a month after the job ended covers the usual incident review,
/// and the audit log still holds the session's id and claims.
pub const DEFAULT_SESSION_RETENTION_DAYS: u32 = 30;
/// Default `retention.tokens_days`. A token row lets an operator match a fingerprint from a
/// leak report or GitHub's audit log to the job, policy and repositories through the admin API
/// (`GET .../tokens`); a quarter covers late reports. The audit event keeps the same facts.
pub const DEFAULT_TOKEN_RETENTION_DAYS: u32 = 90;
/// Shortest retention: a row outlives its expiry by at least a day, so the operator looking
/// into a job that just ended still finds it.
pub const MIN_RETENTION_DAYS: u32 = 1;
/// Longest retention, ten years: beyond it the value is a typo, and the day count must stay a
/// valid duration for the purge's arithmetic.
pub const MAX_RETENTION_DAYS: u32 = 3650;

fn default_session_retention_days() -> u32 {
    DEFAULT_SESSION_RETENTION_DAYS
}
fn default_token_retention_days() -> u32 {
    DEFAULT_TOKEN_RETENTION_DAYS
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sessions_days: DEFAULT_SESSION_RETENTION_DAYS,
            tokens_days: DEFAULT_TOKEN_RETENTION_DAYS,
        }
    }
}

impl RetentionConfig {
    /// One message per key out of range.
    fn validate(&self) -> Vec<String> {
        [
            ("retention.sessions_days", self.sessions_days),
            ("retention.tokens_days", self.tokens_days),
        ]
        .into_iter()
        .filter(|(_, days)| !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(days))
        .map(|(key, _)| {
            format!("{key}: must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS} days")
        })
        .collect()
    }
}

#[cfg(test)]
mod tests;
