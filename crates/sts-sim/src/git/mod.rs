//! Git smart HTTP for the simulator's repositories, over TLS on loopback, so that the real `git`
//! binary can clone and push with the installation tokens the simulator mints.
//!
//! # What it serves
//!
//! Every repository of every simulated installation is a bare repository with one commit on
//! `main` (a `README.md` naming it), created when the server starts, or on first request for
//! repositories added later. URLs are GitHub's: `https://HOST/OWNER/REPO(.git)/info/refs?service=…`,
//! `…/git-upload-pack`, `…/git-receive-pack`; owner and name match case-insensitively. Requests
//! are handed to `git http-backend` (CGI); dumb HTTP is refused.
//!
//! # What it accepts
//!
//! - Credentials are HTTP Basic `x-access-token:<installation token>`, the form GitHub documents
//!   for App installation tokens
//!   (<https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation>,
//!   and the form Atmos writes into its `insteadOf` rewrites). The
//!   simulator is stricter than github.com, which takes any username with a token: a client that
//!   sends another username fails here instead of relying on leniency.
//! - The token must be one the simulator minted, not revoked, not expired, and its scope must
//!   include the repository (a token minted for selected repositories reaches only those).
//! - Reading (`git-upload-pack`) needs such a token, except for public repositories, which anyone
//!   may read. Pushing (`git-receive-pack`) always needs a token with `contents: write`.
//!
//! # How it refuses (as github.com does)
//!
//! | case | answer |
//! |---|---|
//! | no credentials, private or unknown repository, or any push | 401 + `WWW-Authenticate: Basic realm="GitHub"` |
//! | wrong username, unknown, revoked or expired token | 401 + `WWW-Authenticate` |
//! | live token that does not reach the repository (or no such repository) | 404 `Repository not found.` |
//! | push with a token that can read but lacks `contents: write`; push to a public repository it does not reach | 403 `Permission to OWNER/REPO.git denied` |
//! | `info/refs` without a smart `service` (dumb HTTP) | 403 |
//!
//! An anonymous caller is asked for credentials rather than told "not found", so a private
//! repository's existence does not leak; an authenticated one that cannot see it gets the 404.
//! With `GIT_TERMINAL_PROMPT=0` every refusal makes `git` fail.
//!
//! # Inside
//!
//! `access` decides who may do what (credentials, the table above); `repos` keeps the bare
//! repositories on disk and runs `git` isolated from the user's configuration; `cgi` hands a
//! request to `git http-backend` and streams its answer back.

mod access;
mod cgi;
mod repos;

pub use cgi::MAX_CGI_HEAD_BYTES;
pub use repos::{readme_for, DEFAULT_BRANCH, GIT_PROGRAM};

use crate::github::{GitHubSimulator, SimRequest};
use crate::tls::{serve_tls, RunningTls, TestCa};
use access::{authorize, basic_credentials, Refusal};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use cgi::{is_safe_git_protocol, CgiRequest};
use repos::{check_git_installed, repository_path};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The username GitHub documents for App installation tokens over git (`x-access-token:<token>`).
pub const GIT_USERNAME: &str = "x-access-token";
/// Realm of the Basic challenge, as github.com sends it.
pub const GIT_REALM: &str = "GitHub";
/// Largest request body (a push's pack, or a fetch negotiation) the server buffers: a client must
/// not be able to fill memory through the simulator.
pub const MAX_GIT_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// A git smart HTTP server bound to a port. Dropping it stops the server and deletes the
/// repositories.
pub struct RunningGitServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`; clone `{url}/OWNER/REPO`.
    pub url: String,
    /// `127.0.0.1:PORT`, to use as the broker's `github.host`.
    pub host: String,
    /// The CA to trust, PEM: `GIT_SSL_CAINFO={ca_pem_path}`.
    pub ca_pem_path: PathBuf,
    /// The CA (and server certificate) the server presents.
    pub ca: TestCa,
    root: PathBuf,
    // Dropped first: stop serving, then delete the repositories.
    _tls: RunningTls,
    _dir: tempfile::TempDir,
}

debug_showing!(RunningGitServer { url, ca_pem_path });

impl RunningGitServer {
    /// Where the bare repository of `owner/name` lives (GitHub's spelling of both).
    pub fn repository_path(&self, owner: &str, name: &str) -> PathBuf {
        repository_path(&self.root, owner, name)
    }
}

impl GitHubSimulator {
    /// Serve git smart HTTP for this simulator's repositories over TLS on `127.0.0.1:0`, with a
    /// fresh throwaway CA. Fails with [`std::io::ErrorKind::NotFound`] when `git` is not
    /// installed.
    pub async fn start_git(&self) -> std::io::Result<RunningGitServer> {
        self.start_git_serving(None).await
    }

    /// [`Self::start_git`], also serving the REST API under `api_prefix` on the same https
    /// origin, as GitHub Enterprise Server does (`https://HOST/OWNER/REPO` for git,
    /// `https://HOST/api/v3` for the API, [`crate::github::GHES_API_PREFIX`]): clients that derive
    /// the API from the host (`sts-client` revoking its tokens) reach it there.
    pub async fn start_git_with_api(&self, api_prefix: &str) -> std::io::Result<RunningGitServer> {
        self.start_git_serving(Some(api_prefix)).await
    }

    async fn start_git_serving(
        &self,
        api_prefix: Option<&str>,
    ) -> std::io::Result<RunningGitServer> {
        let dir = tempfile::Builder::new().prefix("sts-git-sim").tempdir()?;
        let root = dir.path().join("repos");
        std::fs::create_dir(&root)?;
        check_git_installed(dir.path()).await?;
        let server = Arc::new(GitServer {
            sim: self.clone(),
            root: root.clone(),
            creating: tokio::sync::Mutex::new(()),
        });
        for (owner, repo) in self.repositories() {
            match server.ensure_repository(&owner, &repo.name).await {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::warn!(
                        repository = %format!("{owner}/{}", repo.name),
                        "git server skips a repository whose name cannot be a path"
                    );
                }
                Err(error) => return Err(error),
            }
        }
        let ca = TestCa::generate();
        let ca_pem_path = dir.path().join("ca.pem");
        ca.write_ca(&ca_pem_path)?;
        let mut routes = router(server);
        if let Some(prefix) = api_prefix {
            routes = routes.nest(prefix, self.router());
        }
        let tls = serve_tls(routes, &ca).await?;
        Ok(RunningGitServer {
            addr: tls.addr,
            url: tls.url.clone(),
            host: tls.host.clone(),
            ca_pem_path,
            ca,
            root,
            _tls: tls,
            _dir: dir,
        })
    }
}

/// Shared state of the git routes.
struct GitServer {
    sim: GitHubSimulator,
    /// `GIT_PROJECT_ROOT`: `<root>/<owner>/<name>.git`.
    root: PathBuf,
    /// Serialises repository creation.
    creating: tokio::sync::Mutex<()>,
}

/// The two smart HTTP services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Fetch and clone.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "git-upload-pack" => Some(Self::UploadPack),
            "git-receive-pack" => Some(Self::ReceivePack),
            _ => None,
        }
    }
}

fn router(server: Arc<GitServer>) -> Router {
    Router::new()
        .route("/{owner}/{repo}/info/refs", get(info_refs))
        .route(
            "/{owner}/{repo}/git-upload-pack",
            smart_service(Service::UploadPack),
        )
        .route(
            "/{owner}/{repo}/git-receive-pack",
            smart_service(Service::ReceivePack),
        )
        .fallback(|| async { Refusal::NotFound })
        .layer(middleware::from_fn_with_state(server.clone(), record))
        .with_state(server)
}

/// Log git requests in the simulator's request log (no credentials are kept).
async fn record(State(server): State<Arc<GitServer>>, request: Request, next: Next) -> Response {
    server.sim.record_request(SimRequest::of(&request));
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct ServiceQuery {
    service: Option<String>,
}

async fn info_refs(
    State(server): State<Arc<GitServer>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<ServiceQuery>,
    request: Request,
) -> Result<Response, Refusal> {
    let Some(service) = query.service.as_deref().and_then(Service::from_name) else {
        return Err(Refusal::DumbHttp);
    };
    server
        .serve(&owner, &repo, service, "info/refs", request)
        .await
}

/// `POST /OWNER/REPO/<service>`: the service's own endpoint, named after it.
fn smart_service(service: Service) -> MethodRouter<Arc<GitServer>> {
    post(
        move |State(server): State<Arc<GitServer>>,
              Path((owner, repo)): Path<(String, String)>,
              request: Request| async move {
            server
                .serve(&owner, &repo, service, service.name(), request)
                .await
        },
    )
}

impl GitServer {
    /// Authorize, make sure the repository exists on disk, and hand the request to the backend.
    async fn serve(
        &self,
        owner: &str,
        repo: &str,
        service: Service,
        endpoint: &str,
        request: Request,
    ) -> Result<Response, Refusal> {
        let name = repo.strip_suffix(".git").unwrap_or(repo);
        let credentials = basic_credentials(request.headers());
        let target = authorize(&self.sim, owner, name, service, &credentials).inspect_err(
            |refusal| tracing::debug!(?refusal, repository = %format!("{owner}/{name}"), service = service.name(), "git request refused"),
        )?;
        self.ensure_repository(&target.owner, &target.name)
            .await
            .map_err(|error| {
                tracing::warn!(error = %error, "git server could not create a repository");
                Refusal::Backend(StatusCode::INTERNAL_SERVER_ERROR)
            })?;
        let (parts, body) = request.into_parts();
        let declared_too_large = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .is_some_and(|length| length > MAX_GIT_REQUEST_BYTES);
        if declared_too_large {
            return Err(Refusal::TooLarge);
        }
        let body = axum::body::to_bytes(body, MAX_GIT_REQUEST_BYTES)
            .await
            .map_err(|_| Refusal::TooLarge)?;
        let header_text = |name: HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let cgi = CgiRequest {
            method: parts.method.clone(),
            path_info: format!("/{}/{}.git/{endpoint}", target.owner, target.name),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: header_text(header::CONTENT_TYPE),
            content_encoding: header_text(header::CONTENT_ENCODING),
            git_protocol: header_text(HeaderName::from_static("git-protocol"))
                .filter(|value| is_safe_git_protocol(value)),
            remote_user: target.authenticated.then_some(GIT_USERNAME),
            body,
        };
        self.run_backend(cgi).await
    }
}
