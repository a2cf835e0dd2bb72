//! Support for tests that run against the simulators, here and in the crates that use them: one
//! App key per process, App JWTs GitHub would accept, an HTTP client that trusts a [`TestCa`],
//! and a check that dropping a server's handle stops it. A failure here panics, failing the calling
//! test, so none of it belongs in code that serves anything.

#![expect(
    clippy::expect_used,
    reason = "test support: a failure fails the test that asked for it"
)]

use crate::github::SimInstallation;
use crate::keys::RsaKeyPair;
use crate::tls::TestCa;
use jsonwebtoken::{Algorithm, Header};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// One App key for the whole process: RSA generation is the slow part of a simulator test.
pub fn shared_app_key() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(RsaKeyPair::generate)
}

/// Installation 1 on organization `Acme` (account 1001): private `infra` (2001) and `modules`
/// (2002), public `website` (2003), and `issues: read` beside the default permissions. The
/// simulator's own tests and the broker's GitHub client tests both start from it.
pub fn acme_installation() -> SimInstallation {
    SimInstallation::organization(1, "Acme", 1001)
        .with_repo(2001, "infra", true)
        .with_repo(2002, "modules", true)
        .with_repo(2003, "website", false)
        .with_permission("issues", "read")
}

/// Claims of an App JWT that GitHub accepts now for `app_id`: `iat` backdated 60 s, as GitHub
/// advises against clock drift, and `exp` 9 minutes ahead, inside GitHub's 10-minute limit
/// (<https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app>).
pub fn app_jwt_claims(app_id: &str) -> serde_json::Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    serde_json::json!({ "iat": now - 60, "exp": now + 540, "iss": app_id })
}

/// An App JWT for `app_id`, signed (RS256) with `key`, that GitHub accepts now.
pub fn app_jwt(key: &RsaKeyPair, app_id: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &app_jwt_claims(app_id),
        &key.encoding_key(),
    )
    .expect("an RS256 JWT signed with our own RSA key")
}

/// The string `field` of each element of `array`, a JSON array whose elements all have it: the
/// `kid`s of a JWKS, the `full_name`s of a repository list.
pub fn strings_at<'a>(array: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    array
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|element| element[field].as_str().expect("a string field"))
        .collect()
}

/// An HTTP client that trusts `ca` (and the usual roots), for the simulators' TLS servers.
pub fn client_trusting(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(ca.root_certificate())
        .build()
        .expect("an HTTP client with one more root certificate")
}

/// `DELETE /installation/token` at the GitHub API `api_url` with `token`: a holder revoking its
/// own installation token
/// (<https://docs.github.com/en/rest/apps/installations#revoke-an-installation-access-token>).
pub async fn revoke_installation_token(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
) -> reqwest::Response {
    http.delete(format!("{api_url}/installation/token"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the GitHub API answers")
}

/// Whether a server that accepts connections on `addr` refuses them within `within` once its
/// handle `running` is dropped: how a test checks that dropping a handle stops its server.
pub async fn stops_on_drop<T>(running: T, addr: SocketAddr, within: Duration) -> bool {
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_ok(),
        "the server accepts connections before its handle is dropped"
    );
    drop(running);
    // Stopping happens in the server's own task: poll until it has.
    const POLL: Duration = Duration::from_millis(20);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
