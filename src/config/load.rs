//! Reading the file and the environment, validating every key, and reading the secrets the
//! configuration names.

use super::credentials::{MAX_SESSION_TTL_SECONDS, MIN_ADMIN_TOKEN_LEN, MIN_SESSION_TTL_SECONDS};
use super::urls::{check_otlp_endpoint, check_raw_fetch_url, is_loopback_url};
use super::{Config, Secrets, ENV_PREFIX};
use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use figment::providers::{Env, Format as _, Toml};
use figment::Figment;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::Url;

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

    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    pub(super) fn read_secret(
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
