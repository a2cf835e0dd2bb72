//! A GitHub Actions-like OIDC issuer on loopback: discovery, JWKS and RS256 tokens with the
//! claims GitHub puts in them (all strings). Also the Actions token-request endpoint
//! (`ACTIONS_ID_TOKEN_REQUEST_URL`) so the client can be tested end to end.

use crate::oidc::Claims;
use std::net::SocketAddr;

/// Claims of a GitHub Actions job, with sensible defaults; `to_claims` fills `iss`, `aud`, `iat`,
/// `nbf` (= iat - 300, as GitHub does), `exp`, `jti` and `sub` (`repo:O/R:ref:REF`).
#[derive(Debug, Clone)]
pub struct ActionsJob {
    /// `repository_owner`.
    pub owner: String,
    /// `repository_owner_id`.
    pub owner_id: String,
    /// Repository name (without owner).
    pub repo: String,
    /// `repository_id`.
    pub repo_id: String,
    /// `ref`.
    pub git_ref: String,
    /// `workflow` file path inside the repo (`.github/workflows/ci.yml`).
    pub workflow_path: String,
    /// `actor`.
    pub actor: String,
    /// `run_id`.
    pub run_id: String,
    /// `event_name`.
    pub event_name: String,
}

impl Default for ActionsJob {
    fn default() -> Self {
        Self {
            owner: "acme".into(),
            owner_id: "1001".into(),
            repo: "infra".into(),
            repo_id: "2001".into(),
            git_ref: "refs/heads/main".into(),
            workflow_path: ".github/workflows/ci.yml".into(),
            actor: "octocat".into(),
            run_id: "42".into(),
            event_name: "push".into(),
        }
    }
}

/// The issuer. Cheap to clone.
#[derive(Clone)]
pub struct OidcIssuerSimulator {
    // filled in by the implementation
}

impl OidcIssuerSimulator {
    /// A new issuer with a fresh RSA key.
    pub fn new() -> Self {
        unimplemented!()
    }

    /// Serve discovery, JWKS and the Actions token-request endpoint on `127.0.0.1:0`.
    pub async fn start(&self) -> std::io::Result<RunningIssuer> {
        unimplemented!()
    }

    /// The `iss` of tokens (`http://127.0.0.1:PORT`); only valid after `start`.
    pub fn issuer(&self) -> String {
        unimplemented!()
    }

    /// The full claims of a token for `job` and `audience`, valid for 5 minutes from now.
    pub fn claims_for(&self, job: &ActionsJob, audience: &str) -> Claims {
        let _ = (job, audience);
        unimplemented!()
    }

    /// Sign arbitrary claims with the issuer key (RS256, the published `kid`).
    pub fn sign(&self, claims: &Claims) -> String {
        let _ = claims;
        unimplemented!()
    }

    /// `sign(claims_for(job, audience))`.
    pub fn token_for(&self, job: &ActionsJob, audience: &str) -> String {
        self.sign(&self.claims_for(job, audience))
    }
}

/// An issuer bound to a port. Dropping it stops the server.
pub struct RunningIssuer {
    /// Bound address.
    pub addr: SocketAddr,
    /// The issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
}
