//! Thin typed GitHub REST client over reqwest.

use secrecy::SecretString;
use url::Url;

/// How to reach GitHub as the App.
#[derive(Clone)]
pub struct GitHubClientConfig {
    /// `https://api.github.com` or a GHES `https://HOST/api/v3`, or the simulator.
    pub api_url: Url,
    /// App id or client id: the `iss` of App JWTs.
    pub app_id: String,
    /// PEM RSA private key (PKCS#1 or PKCS#8).
    pub private_key_pem: SecretString,
    /// Called after every request, for metrics.
    pub observer: Option<super::CallObserver>,
}

/// The real `GitHubApp`.
pub struct GitHubClient {}

impl GitHubClient {
    /// Build; fails when the private key does not parse.
    pub fn new(config: GitHubClientConfig) -> Result<Self, super::GitHubError> {
        let _ = config;
        unimplemented!()
    }
}
