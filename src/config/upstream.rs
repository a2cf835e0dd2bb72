//! `[github]` and `[oidc]`: the services the broker calls, the App it acts as and the issuers it
//! trusts.

use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;

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
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Trusted issuers; only these are ever fetched.
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

fn default_github_api() -> String {
    "https://api.github.com".to_owned()
}
fn default_github_host() -> String {
    "github.com".to_owned()
}
