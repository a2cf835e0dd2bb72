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
//!   for App installation tokens (and the form Atmos writes into its `insteadOf` rewrites). The
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

use crate::github::{level_rank, GitHubSimulator, SimRequest, TokenAccess};
use crate::tls::{serve_tls, RunningTls, TestCa};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

/// The username GitHub documents for App installation tokens over git (`x-access-token:<token>`).
pub const GIT_USERNAME: &str = "x-access-token";
/// Realm of the Basic challenge, as github.com sends it.
pub const GIT_REALM: &str = "GitHub";
/// The branch every simulated repository starts with.
pub const DEFAULT_BRANCH: &str = "main";
/// The git program; found on `PATH`.
pub const GIT_PROGRAM: &str = "git";
/// Largest request body (a push's pack, or a fetch negotiation) the server buffers: a client must
/// not be able to fill memory through the simulator.
pub const MAX_GIT_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Largest CGI response head (`Status:` and headers) read from `git http-backend`: a broken
/// backend must not make the server buffer without bound.
pub const MAX_CGI_HEAD_BYTES: usize = 64 * 1024;
/// How much of `git http-backend`'s stderr is kept for the log.
const MAX_CGI_STDERR_BYTES: u64 = 16 * 1024;
/// Size of the chunks the backend's output is streamed in.
const BODY_CHUNK_BYTES: usize = 16 * 1024;
/// Author and committer of every repository's first commit: fixed, so that the commit (and its
/// id) does not depend on the user's git configuration or the clock.
const SIM_IDENTITY: &str = "sts-broker simulator <simulator@sts-broker.invalid>";
/// Date of every repository's first commit (2024-01-01T00:00:00Z), for the same reason.
const SIM_COMMIT_TIME: &str = "1704067200 +0000";
/// Longest owner or repository name accepted as a path segment on disk (GitHub's limit is 100).
const MAX_NAME_CHARS: usize = 100;

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

impl std::fmt::Debug for RunningGitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGitServer")
            .field("url", &self.url)
            .field("ca_pem_path", &self.ca_pem_path)
            .finish_non_exhaustive()
    }
}

impl RunningGitServer {
    /// Where the bare repository of `owner/name` lives (GitHub's spelling of both).
    pub fn repository_path(&self, owner: &str, name: &str) -> PathBuf {
        self.root.join(owner).join(format!("{name}.git"))
    }
}

impl GitHubSimulator {
    /// Serve git smart HTTP for this simulator's repositories over TLS on `127.0.0.1:0`, with a
    /// fresh throwaway CA. Fails with [`std::io::ErrorKind::NotFound`] when `git` is not
    /// installed.
    pub async fn start_git(&self) -> std::io::Result<RunningGitServer> {
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
        let tls = serve_tls(router(server), &ca).await?;
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

async fn check_git_installed(home: &FsPath) -> std::io::Result<()> {
    let output = isolated_git(home)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "git is not installed (or not on PATH): the simulator's git server needs it",
        )),
    }
}

/// `git` with an environment that ignores the user's and the system's git configuration.
fn isolated_git(home: &FsPath) -> Command {
    let mut command = Command::new(GIT_PROGRAM);
    command.env_clear();
    for (key, value) in isolated_env(home) {
        command.env(key, value);
    }
    command.kill_on_drop(true);
    command
}

fn isolated_env(home: &FsPath) -> Vec<(&'static str, OsString)> {
    let mut env = vec![
        ("HOME", home.as_os_str().to_owned()),
        ("GIT_CONFIG_GLOBAL", OsString::from("/dev/null")),
        ("GIT_CONFIG_NOSYSTEM", OsString::from("1")),
        ("LC_ALL", OsString::from("C")),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH", path));
    }
    env
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

/// Credentials a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credentials {
    /// No `Authorization` header.
    Anonymous,
    /// `Basic x-access-token:<token>`.
    Token(String),
    /// Anything else: another scheme, another username, an empty password, bad base64.
    Unusable,
}

fn basic_credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::Anonymous;
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim());
    let decoded = encoded
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    match decoded.as_deref().and_then(|pair| pair.split_once(':')) {
        Some((GIT_USERNAME, token)) if !token.is_empty() => Credentials::Token(token.to_owned()),
        _ => Credentials::Unusable,
    }
}

/// A repository a request may use, with GitHub's spelling of its names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    owner: String,
    name: String,
    /// `REMOTE_USER` for the backend: set for authenticated callers (`git http-backend` enables
    /// `receive-pack` only then).
    authenticated: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// 401 with a Basic challenge.
    Challenge,
    /// 404 "Repository not found."
    NotFound,
    /// 403 on a push without `contents: write`.
    PushDenied { owner: String, name: String },
    /// 403 for dumb HTTP.
    DumbHttp,
    /// 413.
    TooLarge,
    /// 500/502: the backend could not run or answered nonsense (logged).
    Backend(StatusCode),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let text = |status: StatusCode, message: String| {
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response()
        };
        match self {
            Self::Challenge => {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "Invalid username or token. Password authentication is not supported for Git operations.\n"
                        .to_owned(),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="GitHub""#),
                );
                response
            }
            Self::NotFound => text(StatusCode::NOT_FOUND, "Repository not found.\n".to_owned()),
            Self::PushDenied { owner, name } => text(
                StatusCode::FORBIDDEN,
                format!("Permission to {owner}/{name}.git denied to {GIT_USERNAME}.\n"),
            ),
            Self::DumbHttp => text(
                StatusCode::FORBIDDEN,
                "Dumb HTTP is not supported: use a git client that speaks smart HTTP.\n".to_owned(),
            ),
            Self::TooLarge => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or unreadable.\n".to_owned(),
            ),
            Self::Backend(status) => text(status, "git backend failure\n".to_owned()),
        }
    }
}

/// Decide whether `credentials` may use `service` on `owner/name` (see the module docs).
fn authorize(
    sim: &GitHubSimulator,
    owner: &str,
    name: &str,
    service: Service,
    credentials: &Credentials,
) -> Result<Target, Refusal> {
    let found = sim.find_repository(owner, name);
    let token = match credentials {
        Credentials::Anonymous => {
            return match found {
                Some((owner, repo)) if !repo.private && service == Service::UploadPack => {
                    Ok(Target {
                        owner,
                        name: repo.name,
                        authenticated: false,
                    })
                }
                // Also for repositories that do not exist: an anonymous caller must not learn
                // which private repositories do.
                _ => Err(Refusal::Challenge),
            };
        }
        Credentials::Unusable => return Err(Refusal::Challenge),
        Credentials::Token(token) => token,
    };
    let permissions = match sim.token_access(token, owner, name) {
        TokenAccess::Invalid => return Err(Refusal::Challenge),
        TokenAccess::NoAccess => None,
        TokenAccess::Reaches { permissions } => Some(permissions),
    };
    let Some((owner, repo)) = found else {
        return Err(Refusal::NotFound);
    };
    if permissions.is_none() && repo.private {
        return Err(Refusal::NotFound);
    }
    let can_push = permissions.as_ref().is_some_and(|permissions| {
        permissions
            .get("contents")
            .and_then(|level| level_rank(level))
            .is_some_and(|rank| rank >= 2)
    });
    if service == Service::ReceivePack && !can_push {
        return Err(Refusal::PushDenied {
            owner,
            name: repo.name,
        });
    }
    Ok(Target {
        owner,
        name: repo.name,
        authenticated: true,
    })
}

fn router(server: Arc<GitServer>) -> Router {
    Router::new()
        .route("/{owner}/{repo}/info/refs", get(info_refs))
        .route("/{owner}/{repo}/git-upload-pack", post(upload_pack))
        .route("/{owner}/{repo}/git-receive-pack", post(receive_pack))
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
) -> Response {
    let Some(service) = query.service.as_deref().and_then(Service::from_name) else {
        return Refusal::DumbHttp.into_response();
    };
    server
        .serve(&owner, &repo, service, "info/refs", request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn upload_pack(
    State(server): State<Arc<GitServer>>,
    Path((owner, repo)): Path<(String, String)>,
    request: Request,
) -> Response {
    let service = Service::UploadPack;
    server
        .serve(&owner, &repo, service, service.name(), request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn receive_pack(
    State(server): State<Arc<GitServer>>,
    Path((owner, repo)): Path<(String, String)>,
    request: Request,
) -> Response {
    let service = Service::ReceivePack;
    server
        .serve(&owner, &repo, service, service.name(), request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
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

    /// The bare repository of `owner/name`, created with one commit if it is not there yet.
    async fn ensure_repository(&self, owner: &str, name: &str) -> std::io::Result<PathBuf> {
        if !is_safe_owner(owner) || !is_safe_repo_name(name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{owner}/{name} cannot be a path on disk"),
            ));
        }
        let path = self.root.join(owner).join(format!("{name}.git"));
        if tokio::fs::try_exists(&path).await? {
            return Ok(path);
        }
        let _creating = self.creating.lock().await;
        if tokio::fs::try_exists(&path).await? {
            return Ok(path);
        }
        // Built aside and renamed into place, so that a concurrent request never sees a
        // half-made repository.
        let staging = tempfile::Builder::new()
            .prefix(".staging")
            .tempdir_in(&self.root)?;
        let bare = staging.path().join("repo.git");
        let home = staging.path();
        run_git(
            isolated_git(home)
                .args(["-c", &format!("init.defaultBranch={DEFAULT_BRANCH}")])
                .args(["init", "--bare", "--quiet"])
                .arg(&bare),
            None,
        )
        .await?;
        let import = first_commit_stream(owner, name);
        run_git(
            isolated_git(home)
                .arg("--git-dir")
                .arg(&bare)
                .args(["fast-import", "--quiet"]),
            Some(import.as_bytes()),
        )
        .await?;
        tokio::fs::create_dir_all(self.root.join(owner)).await?;
        tokio::fs::rename(&bare, &path).await?;
        Ok(path)
    }

    /// Run `git http-backend` for `cgi` and stream its answer.
    async fn run_backend(&self, cgi: CgiRequest) -> Result<Response, Refusal> {
        let mut command = isolated_git(&self.root);
        command
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", &cgi.path_info)
            .env("REQUEST_METHOD", cgi.method.as_str())
            .env("QUERY_STRING", &cgi.query)
            // The server listens on loopback only.
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if cgi.method == Method::POST {
            command.env("CONTENT_LENGTH", cgi.body.len().to_string());
        }
        if let Some(content_type) = &cgi.content_type {
            command.env("CONTENT_TYPE", content_type);
        }
        if let Some(encoding) = &cgi.content_encoding {
            // `git http-backend` inflates gzip request bodies itself.
            command.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if let Some(protocol) = &cgi.git_protocol {
            command.env("HTTP_GIT_PROTOCOL", protocol);
        }
        if let Some(user) = cgi.remote_user {
            command.env("REMOTE_USER", user);
        }
        let backend_failed = |error: std::io::Error| {
            tracing::warn!(error = %error, "git http-backend could not run");
            Refusal::Backend(StatusCode::INTERNAL_SERVER_ERROR)
        };
        let mut child = command.spawn().map_err(backend_failed)?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(backend_failed(std::io::Error::other("missing pipes")));
        };
        let body = cgi.body;
        tokio::spawn(async move {
            // The backend may stop reading early (on error); it reports that on stdout/stderr.
            let _ = stdin.write_all(&body).await;
        });
        let path_info = cgi.path_info;
        tokio::spawn(async move {
            let mut log = Vec::new();
            let mut stderr = stderr;
            let (status, _) = tokio::join!(child.wait(), async {
                let _ = (&mut stderr)
                    .take(MAX_CGI_STDERR_BYTES)
                    .read_to_end(&mut log)
                    .await;
                // Keep draining so the backend never blocks on a full pipe.
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            });
            let failed = !status.as_ref().is_ok_and(std::process::ExitStatus::success);
            if failed || !log.is_empty() {
                tracing::debug!(
                    path = %path_info,
                    status = ?status,
                    stderr = %String::from_utf8_lossy(&log),
                    "git http-backend finished"
                );
            }
        });
        let mut reader = tokio::io::BufReader::with_capacity(BODY_CHUNK_BYTES, stdout);
        let head = read_cgi_head(&mut reader).await;
        let (status, headers) = head
            .and_then(|head| parse_cgi_head(&head))
            .map_err(|error| {
                tracing::warn!(error = %error, "git http-backend answered nonsense");
                Refusal::Backend(StatusCode::BAD_GATEWAY)
            })?;
        let mut response = Response::new(Body::from_stream(body_stream(reader)));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// What the CGI backend is told about one request.
struct CgiRequest {
    method: Method,
    path_info: String,
    query: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    git_protocol: Option<String>,
    remote_user: Option<&'static str>,
    body: Bytes,
}

async fn run_git(command: &mut Command, stdin: Option<&[u8]>) -> std::io::Result<()> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await?;
    }
    let output = child.wait_with_output().await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "git failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The README every simulated repository starts with.
pub fn readme_for(owner: &str, name: &str) -> String {
    format!("# {owner}/{name}\n\nA repository of the sts-broker GitHub simulator.\n")
}

/// A `git fast-import` stream for the first commit of `owner/name` on [`DEFAULT_BRANCH`].
fn first_commit_stream(owner: &str, name: &str) -> String {
    let message = format!("Initial commit of {owner}/{name}\n");
    let readme = readme_for(owner, name);
    format!(
        "commit refs/heads/{DEFAULT_BRANCH}\n\
         author {SIM_IDENTITY} {SIM_COMMIT_TIME}\n\
         committer {SIM_IDENTITY} {SIM_COMMIT_TIME}\n\
         data {}\n{message}\n\
         M 100644 inline README.md\n\
         data {}\n{readme}\n",
        message.len(),
        readme.len(),
    )
}

/// A GitHub login as a path segment: letters, digits, hyphens.
fn is_safe_owner(owner: &str) -> bool {
    !owner.is_empty()
        && owner.len() <= MAX_NAME_CHARS
        && owner
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// A GitHub repository name as a path segment: letters, digits, `.`, `_`, `-`, never `.`/`..`.
fn is_safe_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// `Git-Protocol` values are `key=value` pairs joined by `:`; anything else is not passed on.
fn is_safe_git_protocol(value: &str) -> bool {
    value.len() <= 256
        && value.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'=' | b':' | b'.' | b'_' | b'-')
        })
}

/// Why a CGI response head could not be used.
#[derive(Debug, thiserror::Error)]
enum CgiError {
    #[error("reading the cgi response: {0}")]
    Io(#[from] std::io::Error),
    #[error("the cgi response ended before its head did")]
    Truncated,
    #[error("the cgi response head is longer than {MAX_CGI_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed cgi response head: {0}")]
    Malformed(&'static str),
}

/// Read the CGI response head, up to and without the blank line that ends it.
async fn read_cgi_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, CgiError> {
    let mut head = Vec::new();
    loop {
        let remaining = MAX_CGI_HEAD_BYTES.saturating_sub(head.len());
        if remaining == 0 {
            return Err(CgiError::TooLarge);
        }
        let mut line = Vec::new();
        let limit = u64::try_from(remaining).unwrap_or(u64::MAX);
        let read = (&mut *reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(CgiError::Truncated);
        }
        if line == b"\n" || line == b"\r\n" {
            return Ok(head);
        }
        if !line.ends_with(b"\n") {
            return Err(if read == remaining {
                CgiError::TooLarge
            } else {
                CgiError::Truncated
            });
        }
        head.extend_from_slice(&line);
    }
}

/// Status and headers of a CGI response head (RFC 3875 §6): `Status: 403 Forbidden` sets the
/// status (200 without one), every other line is a header.
fn parse_cgi_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), CgiError> {
    let text = std::str::from_utf8(head).map_err(|_| CgiError::Malformed("not utf-8"))?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let (name, value) = line
            .split_once(':')
            .ok_or(CgiError::Malformed("a line without a colon"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse::<u16>().ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or(CgiError::Malformed("a bad status"))?;
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CgiError::Malformed("a bad header name"))?;
        // Framing is the server's business, not the script's.
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| CgiError::Malformed("a bad header value"))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// The rest of the backend's stdout, chunk by chunk; a read error ends the body with that error.
fn body_stream<R>(reader: R) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut chunk = vec![0u8; BODY_CHUNK_BYTES];
        match reader.read(&mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok(Bytes::from(chunk)), Some(reader)))
            }
            Err(error) => Some((Err(error), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::SimInstallation;
    use crate::keys::RsaKeyPair;

    fn simulator() -> GitHubSimulator {
        let sim = GitHubSimulator::new("1", RsaKeyPair::generate().public_key());
        sim.add_installation(
            SimInstallation::organization(1, "Acme", 1001)
                .with_repo(2001, "infra", true)
                .with_repo(2003, "website", false),
        );
        sim
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    #[test]
    fn parses_a_cgi_head_with_a_status_and_headers() {
        let head = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\nCache-Control: max-age=0\r\n";
        let (status, headers) = parse_cgi_head(head).unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(headers.get_all(header::CACHE_CONTROL).iter().count(), 2);
        assert!(!headers.contains_key("status"));
    }

    #[test]
    fn a_cgi_head_without_a_status_is_a_200_and_framing_headers_are_dropped() {
        let head = b"Content-Type: application/x-git-upload-pack-advertisement\nTransfer-Encoding: chunked\n";
        let (status, headers) = parse_cgi_head(head).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/x-git-upload-pack-advertisement"
        );
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn malformed_cgi_heads_are_errors() {
        let cases: [&[u8]; 4] = [
            b"no colon here\n",
            b"Status: abc\n",
            b"Status: 99\n",
            b"Bad Name: x\n",
        ];
        for head in cases {
            assert!(
                matches!(parse_cgi_head(head), Err(CgiError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn reads_the_head_and_leaves_the_body() {
        let output: &[u8] = b"Status: 200 OK\r\nContent-Type: x/y\r\n\r\n0008NAK\nPACK";
        let mut reader = tokio::io::BufReader::new(output);
        let head = read_cgi_head(&mut reader).await.unwrap();
        assert_eq!(head, b"Status: 200 OK\r\nContent-Type: x/y\r\n");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"0008NAK\nPACK");
    }

    #[tokio::test]
    async fn refuses_truncated_and_endless_heads() {
        let truncated: &[u8] = b"Content-Type: x/y\r\n";
        let result = read_cgi_head(&mut tokio::io::BufReader::new(truncated)).await;
        assert!(matches!(result, Err(CgiError::Truncated)), "{result:?}");
        let endless = vec![b'a'; MAX_CGI_HEAD_BYTES + 10];
        let result = read_cgi_head(&mut tokio::io::BufReader::new(endless.as_slice())).await;
        assert!(matches!(result, Err(CgiError::TooLarge)), "{result:?}");
    }

    #[test]
    fn only_x_access_token_basic_credentials_carry_a_token() {
        assert_eq!(basic_credentials(&HeaderMap::new()), Credentials::Anonymous);
        assert_eq!(
            basic_credentials(&basic("x-access-token", "ghs_abc")),
            Credentials::Token("ghs_abc".to_owned())
        );
        assert_eq!(
            basic_credentials(&basic("someone", "ghs_abc")),
            Credentials::Unusable
        );
        assert_eq!(
            basic_credentials(&basic("x-access-token", "")),
            Credentials::Unusable
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ghs_abc"),
        );
        assert_eq!(basic_credentials(&bearer), Credentials::Unusable);
    }

    #[test]
    fn anonymous_callers_read_public_repositories_and_are_challenged_elsewhere() {
        let sim = simulator();
        let anonymous = Credentials::Anonymous;
        let read = authorize(&sim, "acme", "WEBSITE", Service::UploadPack, &anonymous).unwrap();
        assert_eq!(
            read,
            Target {
                owner: "Acme".to_owned(),
                name: "website".to_owned(),
                authenticated: false
            }
        );
        let cases = [
            ("infra", Service::UploadPack),
            ("website", Service::ReceivePack),
            ("nothing", Service::UploadPack),
        ];
        for (name, service) in cases {
            assert_eq!(
                authorize(&sim, "acme", name, service, &anonymous),
                Err(Refusal::Challenge),
                "{name} {service:?}"
            );
        }
        let unknown_token = Credentials::Token("ghs_unknown".to_owned());
        assert_eq!(
            authorize(&sim, "acme", "website", Service::UploadPack, &unknown_token),
            Err(Refusal::Challenge)
        );
    }

    #[test]
    fn only_safe_names_become_paths() {
        for owner in ["acme", "Acme-Labs", "a1"] {
            assert!(is_safe_owner(owner), "{owner}");
        }
        for owner in ["", "..", "a/b", "a.b", "a b"] {
            assert!(!is_safe_owner(owner), "{owner}");
        }
        for name in ["infra", ".github", "terraform-aws_vpc.v2"] {
            assert!(is_safe_repo_name(name), "{name}");
        }
        for name in ["", ".", "..", "a/b", "a\\b", "a%2fb"] {
            assert!(!is_safe_repo_name(name), "{name}");
        }
    }

    #[test]
    fn the_first_commit_stream_declares_exact_lengths() {
        let stream = first_commit_stream("acme", "infra");
        let readme = readme_for("acme", "infra");
        assert!(stream.contains(&format!("data {}\n{readme}", readme.len())));
        assert!(stream.starts_with("commit refs/heads/main\n"));
    }
}
