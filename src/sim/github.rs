//! A GitHub REST API simulator for the endpoints the broker (and git) use.
//!
//! Behaves as GitHub documents it: App JWTs checked against the App's public key (RS256,
//! `iss` = app id, `iat`/`exp` window ≤ 10 min); 404 for an unknown installation; 422 when a
//! permission/level exceeds the installation's ceiling or a repository is not accessible; 403 for
//! a suspended installation; installation tokens that `GET /installation/repositories` accepts and
//! that stop working once revoked or expired.

use rsa::RsaPublicKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A repository of a simulated installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRepo {
    /// Repository id.
    pub id: i64,
    /// Name without owner.
    pub name: String,
    /// Private repositories need a token to be read.
    pub private: bool,
}

/// A simulated installation of the App.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimInstallation {
    /// Installation id.
    pub id: i64,
    /// Account login (exact spelling).
    pub account_login: String,
    /// Account id.
    pub account_id: i64,
    /// `Organization` or `User`.
    pub account_type: String,
    /// Permission ceiling.
    pub permissions: BTreeMap<String, String>,
    /// `all` or `selected`.
    pub repository_selection: String,
    /// Repositories the installation reaches.
    pub repositories: Vec<SimRepo>,
    /// Suspended installations refuse to mint (403).
    pub suspended: bool,
}

/// What the simulator saw about one token it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTokenInfo {
    /// Installation id.
    pub installation_id: i64,
    /// `owner/name` it reaches.
    pub repositories: Vec<String>,
    /// Permissions it carries.
    pub permissions: BTreeMap<String, String>,
    /// Revoked through `DELETE /installation/token`.
    pub revoked: bool,
}

/// The simulator's configuration and state. Cheap to clone (shared state).
#[derive(Clone)]
pub struct GitHubSimulator {
    // filled in by the implementation
}

impl GitHubSimulator {
    /// A simulator for the App `app_id` (App JWT `iss`; the numeric id or the client id) whose
    /// JWTs are verified with `app_public_key`.
    pub fn new(app_id: &str, app_public_key: RsaPublicKey) -> Self {
        let _ = (app_id, app_public_key);
        unimplemented!("GitHubSimulator::new")
    }

    /// Add or replace an installation.
    pub fn add_installation(&self, installation: SimInstallation) {
        let _ = installation;
        unimplemented!()
    }

    /// Suspend or unsuspend an installation.
    pub fn set_suspended(&self, installation_id: i64, suspended: bool) {
        let _ = (installation_id, suspended);
        unimplemented!()
    }

    /// Serve on `127.0.0.1:0`; returns the bound address. The server runs until the process ends
    /// or the returned handle is dropped.
    pub async fn start(&self) -> std::io::Result<RunningSimulator> {
        unimplemented!()
    }

    /// Is `token` an installation token that GitHub would accept now?
    pub fn token_is_live(&self, token: &str) -> bool {
        let _ = token;
        unimplemented!()
    }

    /// What the simulator knows about `token` (also after revocation).
    pub fn token_info(&self, token: &str) -> Option<SimTokenInfo> {
        let _ = token;
        unimplemented!()
    }

    /// How many tokens were minted and revoked so far.
    pub fn counts(&self) -> (u64, u64) {
        unimplemented!()
    }
}

/// A simulator bound to a port. Dropping it stops the server.
pub struct RunningSimulator {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, to use as the broker's `github.api_url`.
    pub url: String,
    // shutdown handle, filled in by the implementation
}
