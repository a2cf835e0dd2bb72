//! A self-contained world for `serve --dev`, `demo`, tests and benchmarks: the GitHub simulator
//! (REST API, and git smart HTTPS for its repositories), the OIDC issuer simulator, generated keys
//! and secrets in a temp dir, and a config that points the broker at them. Not for production.
//!
//! The broker's `github.host` is the git server's `127.0.0.1:PORT`, so minted tokens name a host
//! that `git` can clone from (trusting the world's `git-ca.pem`). Without `git` installed the world
//! still starts, with `github.host = "github.com"` and no git server (a warning says so).
//!
//! The world also serves GitHub Actions' OIDC token-request endpoint over https on loopback, as a
//! runner does (`ACTIONS_ID_TOKEN_REQUEST_URL`, `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), so any Actions
//! client fetches fresh OIDC tokens unchanged; its CA is the git server's (one file to trust).
//!
//! The world's config is its own: the production `STS_BROKER__*` overrides are ignored, so that
//! a shell set up for a real broker cannot point the dev world at (and seed demo data into) a
//! real database.

use crate::config::Config;
use anyhow::Context as _;
use base64::Engine as _;
use secrecy::ExposeSecret as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use sts_sim::git::RunningGitServer;
use sts_sim::github::{GitHubSimulator, RunningSimulator, SimInstallation, GHES_API_PREFIX};
use sts_sim::keys::RsaKeyPair;
use sts_sim::oidc::{OidcIssuerSimulator, RunningIssuer};
use sts_sim::tls::{serve_tls, RunningTls, TestCa};

/// App id of the simulated GitHub App.
pub const DEV_APP_ID: &str = "424242";
/// Audience the dev issuer's tokens carry (what Atmos CLI asks for).
pub const DEV_AUDIENCE: &str = "atmos-pro.com";
/// Workspace seeded in dev mode and the demo.
pub const DEV_WORKSPACE: &str = "acme";
/// File in the world's dir holding the git server's CA (PEM), for `GIT_SSL_CAINFO`; the Actions
/// OIDC endpoint's certificate chains to it too.
pub const GIT_CA_FILE: &str = "git-ca.pem";
/// The world's CA file when `git` is not installed (no git server): the Actions endpoint's alone.
pub const ACTIONS_CA_FILE: &str = "actions-ca.pem";

/// The policy seeded in dev mode and the demo; `ISSUER` stands for the dev issuer's URL (see
/// [`dev_policy`]), since a rule's issuer defaults to GitHub's.
pub const DEV_POLICY: &str = r#"description: infra deploys from main read shared modules; releases may push the website
rules:
  - name: infra-main
    issuer: ISSUER
    match:
      repository_owner_id: "1001"
      repository: acme/infra
      ref: refs/heads/main
    match_patterns:
      workflow_ref: 'acme/infra/\.github/workflows/(ci|deploy)\.yml@refs/heads/main'
    grant:
      repositories: ["acme/terraform-*", "acme/modules", "acme-labs/shared-modules", "dormant-co/legacy"]
      permissions: {contents: read}
  - name: release-tags
    issuer: ISSUER
    match:
      repository: acme/infra
      ref: refs/tags/v*
    grant:
      repositories: ["acme/website"]
      permissions: {contents: write}
"#;

/// [`DEV_POLICY`] for the issuer at `issuer`.
pub fn dev_policy(issuer: &str) -> String {
    DEV_POLICY.replace("ISSUER", issuer)
}

/// The simulated installations: two orgs and a suspended one. All their repositories are private.
pub fn dev_installations() -> Vec<SimInstallation> {
    let acme = [
        (2001, "infra"),
        (2002, "modules"),
        (2003, "terraform-aws-vpc"),
        (2004, "terraform-aws-eks"),
        (2005, "website"),
        (2006, "payroll"),
    ]
    .into_iter()
    .fold(
        SimInstallation::organization(100, "acme", 1001)
            .with_permission("issues", "write")
            .with_permission("pull_requests", "write"),
        |acme, (id, name)| acme.with_repo(id, name, true),
    );
    let mut acme_labs = SimInstallation::organization(200, "acme-labs", 3001)
        .with_permission("contents", "read")
        .with_repo(4001, "shared-modules", true);
    acme_labs.repository_selection = "selected".into();
    let mut dormant = SimInstallation::organization(300, "dormant-co", 5001)
        .with_permission("contents", "read")
        .with_repo(6001, "legacy", true);
    dormant.suspended = true;
    vec![acme, acme_labs, dormant]
}

/// The Actions OIDC token-request endpoint: the issuer's routes again, over https.
struct DevActions {
    tls: RunningTls,
    ca_pem_path: PathBuf,
    /// The CA, when the world has no git server to share one with.
    _own_ca: Option<TestCa>,
}

impl DevActions {
    /// Serve `issuer`'s token endpoint over https, reusing the git server's CA when there is one.
    async fn start(
        issuer: &OidcIssuerSimulator,
        git: Option<&DevGit>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let (ca_pem_path, own_ca) = match git {
            Some(git) => (git.ca_pem_path.clone(), None),
            None => {
                let ca = TestCa::generate();
                let path = dir.join(ACTIONS_CA_FILE);
                ca.write_ca(&path)?;
                (path, Some(ca))
            }
        };
        let ca = own_ca
            .as_ref()
            .or(git.map(|git| &git.server.ca))
            .context("a CA for the Actions endpoint")?;
        let tls = serve_tls(issuer.router(), ca)
            .await
            .context("actions oidc endpoint")?;
        Ok(Self {
            tls,
            ca_pem_path,
            _own_ca: own_ca,
        })
    }
}

/// Running simulators plus a broker config pointing at them.
pub struct DevWorld {
    /// The OIDC issuer.
    pub issuer: OidcIssuerSimulator,
    /// The GitHub API.
    pub github: GitHubSimulator,
    /// Broker configuration (SQLite in `dir`).
    pub config: Config,
    /// Operator token.
    pub admin_token: String,
    /// Holds keys, secrets and the database.
    pub dir: tempfile::TempDir,
    git: Option<DevGit>,
    actions: DevActions,
    _issuer_server: RunningIssuer,
    _github_server: RunningSimulator,
}

/// The world's git server and where its CA was written.
struct DevGit {
    server: RunningGitServer,
    ca_pem_path: PathBuf,
    /// `HOST:PORT` the world's tokens name: the broker's `github.host`.
    host: String,
    /// `https://{host}`.
    url: String,
}

/// Which GitHub the world simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevGitHub {
    /// github.com: the API at the root of its own origin, git on another.
    Dotcom,
    /// GitHub Enterprise Server (or ghe.com): git at `https://HOST/OWNER/REPO` and the API at
    /// `https://HOST/api/v3`, with `HOST` = `localhost:PORT` (not the `127.0.0.1` the
    /// simulators listen on, so that a host taken from the wrong place shows). The broker reaches
    /// the same API at `http://localhost:PORT2/api/v3`: it has no setting to trust a private CA.
    /// Needs `git`.
    Enterprise,
}

impl DevWorld {
    /// Start the simulators and write a config for a broker that will listen on `broker_addr`.
    pub async fn start(broker_addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_as(broker_addr, DevGitHub::Dotcom).await
    }

    /// [`Self::start`], simulating `flavour` of GitHub.
    pub async fn start_as(broker_addr: SocketAddr, flavour: DevGitHub) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let app_key = RsaKeyPair::generate();
        let github = GitHubSimulator::new(DEV_APP_ID, app_key.public_key());
        for installation in dev_installations() {
            github.add_installation(installation);
        }
        let api_prefix = match flavour {
            DevGitHub::Dotcom => "",
            DevGitHub::Enterprise => GHES_API_PREFIX,
        };
        let github_server = github
            .start_under(api_prefix)
            .await
            .context("github simulator")?;
        let git_server = match flavour {
            DevGitHub::Dotcom => github.start_git().await,
            DevGitHub::Enterprise => github.start_git_with_api(api_prefix).await,
        };
        let git_server = match git_server {
            Ok(server) => Some(server),
            Err(error)
                if error.kind() == std::io::ErrorKind::NotFound && flavour == DevGitHub::Dotcom =>
            {
                tracing::warn!(error = %error, "dev world starts without a git server");
                None
            }
            Err(error) => return Err(error).context("git server"),
        };
        let issuer = OidcIssuerSimulator::new();
        let issuer_server = issuer.start().await.context("oidc issuer simulator")?;

        let admin_token = crate::crypto::random_hex(24);
        let key_file = dir.path().join("app.pem");
        std::fs::write(&key_file, app_key.private_pkcs1_pem().expose_secret())?;
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        let token_key = base64::engine::general_purpose::STANDARD.encode(key);
        std::fs::write(dir.path().join("token-key"), token_key)?;
        std::fs::write(dir.path().join("admin-token"), &admin_token)?;
        restrict(dir.path())?;
        let git = match git_server {
            Some(server) => {
                let ca_pem_path = dir.path().join(GIT_CA_FILE);
                server.ca.write_ca(&ca_pem_path)?;
                let host = match flavour {
                    DevGitHub::Dotcom => server.host.clone(),
                    DevGitHub::Enterprise => format!("localhost:{}", server.addr.port()),
                };
                Some(DevGit {
                    url: format!("https://{host}"),
                    host,
                    server,
                    ca_pem_path,
                })
            }
            None => None,
        };
        let actions = DevActions::start(&issuer, git.as_ref(), dir.path()).await?;
        let github_host = git.as_ref().map_or("github.com", |git| git.host.as_str());
        let github_url = match flavour {
            DevGitHub::Dotcom => github_server.url.clone(),
            DevGitHub::Enterprise => {
                format!("http://localhost:{}{api_prefix}", github_server.addr.port())
            }
        };
        let toml = format!(
            r#"
[server]
listen = "{broker_addr}"
public_url = "http://{broker_addr}"

[database]
url = "sqlite://{db}"

[github]
api_url = "{github_url}"
host = "{github_host}"
app_id = "{DEV_APP_ID}"
private_key_file = "app.pem"

[[oidc.issuers]]
issuer = "{issuer_url}"
audiences = ["{DEV_AUDIENCE}", "sts-broker"]
allow_http = true

[admin]
token_file = "admin-token"

[tokens]
encryption_key_file = "token-key"
"#,
            db = dir.path().join("sts-broker.db").display(),
            issuer_url = issuer_server.issuer,
        );
        let config_path = dir.path().join("broker.toml");
        std::fs::write(&config_path, toml)?;
        let config = Config::load_file(&config_path)?;
        Ok(Self {
            issuer,
            github,
            config,
            admin_token,
            dir,
            git,
            actions,
            _issuer_server: issuer_server,
            _github_server: github_server,
        })
    }

    /// `https://127.0.0.1:PORT` of the git server (`None` when `git` is not installed).
    pub fn git_url(&self) -> Option<&str> {
        self.git.as_ref().map(|git| git.url.as_str())
    }

    /// `127.0.0.1:PORT` of the git server: the broker's `github.host`, reported with every token.
    pub fn git_host(&self) -> Option<&str> {
        self.git.as_ref().map(|git| git.host.as_str())
    }

    /// The CA the git server's certificate chains to (`None` when `git` is not installed); other
    /// loopback TLS servers of the world (the Actions OIDC endpoint in tests) can reuse it.
    pub fn test_ca(&self) -> Option<&sts_sim::tls::TestCa> {
        self.git.as_ref().map(|git| &git.server.ca)
    }

    /// The git server's CA certificate (PEM) in the world's dir: `GIT_SSL_CAINFO=<this>`.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.git.as_ref().map(|git| git.ca_pem_path.as_path())
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL` of the world's runner: its https OIDC token endpoint.
    pub fn actions_request_url(&self) -> String {
        format!("{}/actions/token?api-version=2.0", self.actions.tls.url)
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN` of the world's runner.
    pub fn actions_request_token(&self) -> String {
        self.issuer.actions_request_token()
    }

    /// The CA (PEM) the Actions endpoint's certificate chains to: always present, and the git
    /// server's CA when git is installed.
    pub fn actions_ca_path(&self) -> &Path {
        &self.actions.ca_pem_path
    }

    /// Seed the workspace, its installation links and the policy through the admin API.
    pub async fn seed(&self, base_url: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let admin = |req: reqwest::RequestBuilder| req.bearer_auth(&self.admin_token);
        let api = format!("{base_url}/api/v1/admin/workspaces");
        let res = admin(http.post(&api))
            .json(&serde_json::json!({ "id": DEV_WORKSPACE, "name": "Acme Corp" }))
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "create workspace: {}",
            res.status()
        );
        for owner in ["acme", "acme-labs", "dormant-co"] {
            let res = admin(http.put(format!("{api}/{DEV_WORKSPACE}/installations/{owner}")))
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "link {owner}: {}", res.status());
        }
        let res = admin(http.put(format!("{api}/{DEV_WORKSPACE}/policies/default")))
            .header("content-type", "application/yaml")
            .body(dev_policy(&self.issuer.issuer()))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "put policy: {}", res.status());
        Ok(())
    }
}

#[cfg(unix)]
fn restrict(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["app.pem", "token-key", "admin-token"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// `serve --dev`: simulators, a seeded broker on `listen`, and instructions, until Ctrl-C.
pub async fn serve_dev(listen: &str) -> anyhow::Result<()> {
    let listener = crate::server::bind(listen).await?;
    let addr = listener.local_addr()?;
    let world = DevWorld::start(addr).await?;
    let app = crate::app::App::build(world.config.clone()).await?;
    let broker = crate::server::spawn(app, listener)?;
    world.seed(&broker.url).await?;
    let job = sts_sim::oidc::ActionsJob::default();
    let oidc = world.issuer.token_for(&job, DEV_AUDIENCE);
    println!("sts-broker dev mode (NOT for production: simulated GitHub and OIDC issuer)");
    println!("  broker        {}", broker.url);
    println!("  github sim    {}", world.config.github.api_url);
    println!("  oidc issuer   {}", world.issuer.issuer());
    match (world.git_url(), world.ca_pem_path()) {
        (Some(git_url), Some(ca)) => {
            println!("  git (https)   {git_url}  (e.g. {git_url}/acme/modules; minted tokens name this host)");
            println!("  git CA        export GIT_SSL_CAINFO={}", ca.display());
        }
        _ => println!("  git (https)   not started: `git` is not installed"),
    }
    println!("  admin token   {}", world.admin_token);
    println!("  workspace     {DEV_WORKSPACE} (policy `default`, installations acme, acme-labs, dormant-co)");
    println!();
    println!("A GitHub Actions runner's OIDC endpoint (jobs of acme/infra@main), for any Actions client:");
    println!(
        "export ACTIONS_ID_TOKEN_REQUEST_URL='{}'",
        world.actions_request_url()
    );
    println!(
        "export ACTIONS_ID_TOKEN_REQUEST_TOKEN='{}'",
        world.actions_request_token()
    );
    println!("export STS_CA_CERT='{}'", world.actions_ca_path().display());
    println!(
        "  (the CA to trust: sts-client reads STS_CA_CERT; Go clients such as Atmos read SSL_CERT_FILE)"
    );
    println!(
        "  sts-client env --format bash --url {} --workspace {DEV_WORKSPACE} --repo acme/modules",
        broker.url
    );
    println!();
    println!("Or with a single-use OIDC token given outright:");
    println!(
        "  sts-client env --format bash --url {} --workspace {DEV_WORKSPACE} --repo acme/modules --oidc-token {oidc}",
        broker.url
    );
    println!();
    println!("Or by hand:");
    println!(
        "  curl -s {}/api/v1/auth/github-oidc -H 'content-type: application/json' -d '{{\"token\":\"{oidc}\",\"workspaceId\":\"{DEV_WORKSPACE}\"}}'",
        broker.url
    );
    println!(
        "  curl -s {}/api/v1/admin/workspaces/{DEV_WORKSPACE}/audit -H 'authorization: Bearer {}'",
        broker.url, world.admin_token
    );
    crate::server::run_until_stopped(broker).await?;
    Ok(())
}
