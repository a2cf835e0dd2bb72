//! `sts-client`: trade a GitHub Actions OIDC token for least-privilege GitHub tokens through an
//! sts-broker, and hand them to git, Terraform and `gh`.
//!
//! Wire-compatible with Atmos CLI's `atmos/pro` provider + `github/sts` integration: the same
//! broker calls, the same state rules and the same git rewrites, so the two can be swapped.

/// `impl Debug` that shows the fields before `;` as they are and the `redacted` ones only as
/// [`model::REDACTED`] where they are set (see [`model::Redact`]): for the types that hold a token
/// or a password, which must never reach a log line through `{:?}`. Defined before the modules so
/// that every one of them can use it.
macro_rules! debug_redacting {
    ($type:ident { $($shown:ident),* ; redacted: $($secret:ident),+ $(,)? }) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($type))
                    $(.field(stringify!($shown), &self.$shown))*
                    $(.field(stringify!($secret), &$crate::model::Redact::redacted(&self.$secret)))+
                    .finish()
            }
        }
    };
}

mod broker;
mod credential;
mod error;
mod exec;
mod flow;
mod github;
mod model;
mod oidc;
mod render;
mod state;
mod ui;

use clap::{Args, Parser, Subcommand};
use error::ClientError;
use flow::Context;
use render::{EnvFormat, GitConfigMode, RenderOptions, TokenEnv};
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Atmos CLI's default OIDC audience, which brokers expect unless told otherwise.
const DEFAULT_AUDIENCE: &str = "atmos-pro.com";
/// Largest git credential request read from stdin; real ones are a few hundred bytes.
const MAX_CREDENTIAL_REQUEST: u64 = 64 * 1024;

#[derive(Parser)]
#[command(
    name = "sts-client",
    version,
    about = "Get short-lived, least-privilege GitHub tokens from an sts-broker and hand them to git, Terraform and gh",
    after_help = "Environment: STS_BROKER_URL (or ATMOS_PRO_BASE_URL), STS_WORKSPACE (or ATMOS_PRO_WORKSPACE_ID), \
STS_POLICY, STS_REPOS (comma-separated), STS_OIDC_TOKEN, STS_AUDIENCE, STS_STATE_DIR, STS_CA_CERT, \
STS_GITHUB_API_URL, STS_GIT_CONFIG_MODE, STS_TOKEN_ENV. In GitHub Actions the OIDC token is requested \
from the runner (the job needs `permissions: id-token: write`)."
)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Options {
    /// Broker base URL, e.g. https://sts.example.com [env: STS_BROKER_URL, ATMOS_PRO_BASE_URL]
    #[arg(long, global = true, value_parser = broker_url_arg)]
    url: Option<String>,
    /// API path under the base URL [env: STS_ENDPOINT, ATMOS_PRO_ENDPOINT] [default: api/v1]
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Workspace id at the broker [env: STS_WORKSPACE, ATMOS_PRO_WORKSPACE_ID]
    #[arg(long, global = true)]
    workspace: Option<String>,
    /// Trust policy to evaluate [default: default]
    #[arg(long, global = true, env = "STS_POLICY")]
    policy: Option<String>,
    /// Target repository `owner/repo` (repeatable); none = all that the policy grants
    #[arg(long = "repo", global = true, env = "STS_REPOS", value_delimiter = ',')]
    repos: Vec<String>,
    /// Ask for less than the policy grants: `NAME=LEVEL` (repeatable), e.g. `contents=read`;
    /// each token gets the intersection with its grant
    #[arg(long = "permission", global = true, value_name = "NAME=LEVEL")]
    permissions: Vec<String>,
    /// Audience to request for the GitHub Actions OIDC token
    #[arg(long, global = true, env = "STS_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    audience: String,
    /// An OIDC token to use instead of asking the GitHub Actions runner (prefer the env var:
    /// flags are visible to other processes)
    #[arg(long, global = true, env = "STS_OIDC_TOKEN", hide_env_values = true)]
    oidc_token: Option<String>,
    /// Where minted tokens are cached [default: $XDG_DATA_HOME/sts-client]
    #[arg(long, global = true, env = "STS_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for the broker, the runner and GitHub
    #[arg(long, global = true, env = "STS_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// GitHub REST API for direct revocation [default: from each token's host]
    #[arg(long, global = true, env = "STS_GITHUB_API_URL")]
    github_api_url: Option<String>,
    /// How git learns the tokens: `env` (GIT_CONFIG_* variables) or `file` (an included 0600 file)
    #[arg(
        long,
        global = true,
        env = "STS_GIT_CONFIG_MODE",
        value_enum,
        default_value = "env"
    )]
    git_config_mode: GitConfigMode,
    /// Also export the token as this variable: a name (only with exactly one token), or a
    /// template such as `GH_TOKEN_{owner}`; empty to disable [default: ATMOS_PRO_GITHUB_TOKEN]
    #[arg(long, global = true, env = "STS_TOKEN_ENV")]
    token_env: Option<String>,
    /// Print only warnings and errors
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Mint (or reuse cached) tokens and print a summary; no token is printed
    Login,
    /// Print the environment that makes git use the tokens (the only command that prints tokens)
    Env {
        /// Output format; `github` appends to $GITHUB_ENV (or --output-file)
        #[arg(long, value_enum, default_value = "bash")]
        format: EnvFormat,
        /// Write here instead of stdout: appended (JSON: replaced), as Atmos does; created 0600
        #[arg(long)]
        output_file: Option<PathBuf>,
    },
    /// Run a command with the tokens; revoke them when it ends (unless --keep)
    Exec {
        /// Leave the tokens live (and cached) after the command
        #[arg(long)]
        keep: bool,
        /// The command and its arguments, after `--`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
    /// Revoke cached tokens through the broker (else at GitHub), end the session, remove the state
    Logout,
    /// git credential helper: `git config credential.helper '!sts-client git-credential'`
    GitCredential {
        /// `get`, `store` or `erase` (given by git)
        operation: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::set_quiet(cli.options.quiet);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            ui::error(&format!("cannot start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            ui::error(&error.to_string());
            ExitCode::FAILURE
        }
    }
}

/// First non-empty of the given value and the named environment variables.
fn first_set(given: Option<String>, vars: &[&str]) -> Option<String> {
    given.filter(|v| !v.is_empty()).or_else(|| {
        vars.iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    })
}

/// `--url`: refused by clap, as a usage error (exit 2), unless [`is_http_url`].
fn broker_url_arg(raw: &str) -> Result<String, String> {
    if is_http_url(raw) {
        Ok(raw.to_owned())
    } else {
        Err("expected an http(s) URL such as https://sts.example.com".to_owned())
    }
}

/// An absolute `http`/`https` URL with a host: anything else is a typo better caught before
/// any request (and before a cache keyed on it is written).
fn is_http_url(raw: &str) -> bool {
    url::Url::parse(raw)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("sts-client/", env!("CARGO_PKG_VERSION")))
        .timeout(broker::REQUEST_TIMEOUT)
        .connect_timeout(broker::CONNECT_TIMEOUT)
        // Every call carries a bearer credential; a redirect must not carry it elsewhere.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Usage(format!("--ca-cert {}: {e}", path.display())))?;
        let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            ClientError::Usage(format!(
                "--ca-cert {}: not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))
}

fn context(options: &Options) -> Result<Context, ClientError> {
    let oidc = oidc::OidcSource::resolve(
        options.oidc_token.clone(),
        std::env::var(oidc::ENV_ID_TOKEN).ok(),
        std::env::var(oidc::ENV_REQUEST_URL).ok(),
        std::env::var(oidc::ENV_REQUEST_TOKEN).ok(),
    )?;
    let sources: Vec<String> = options
        .repos
        .iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if let Some(bad) = sources
        .iter()
        .find(|r| r.split('/').count() != 2 || r.split('/').any(str::is_empty))
    {
        return Err(ClientError::Usage(format!(
            "--repo {bad}: expected owner/repo"
        )));
    }
    let broker_url = first_set(
        options.url.clone(),
        &["STS_BROKER_URL", "ATMOS_PRO_BASE_URL"],
    );
    if let Some(bad) = broker_url.as_deref().filter(|url| !is_http_url(url)) {
        return Err(ClientError::Usage(format!(
            "broker URL `{bad}` (--url, STS_BROKER_URL or ATMOS_PRO_BASE_URL): expected an \
             http(s) URL such as https://sts.example.com"
        )));
    }
    let mut permissions = std::collections::BTreeMap::new();
    for p in &options.permissions {
        let Some((name, level)) = p
            .split_once('=')
            .filter(|(n, l)| !n.is_empty() && !l.is_empty())
        else {
            return Err(ClientError::Usage(format!(
                "--permission {p}: expected NAME=LEVEL, e.g. contents=read"
            )));
        };
        permissions.insert(name.trim().to_owned(), level.trim().to_owned());
    }
    Ok(Context {
        http: http_client(options.ca_cert.as_deref())?,
        broker_url,
        endpoint: first_set(
            options.endpoint.clone(),
            &["STS_ENDPOINT", "ATMOS_PRO_ENDPOINT"],
        )
        .unwrap_or_else(|| broker::DEFAULT_ENDPOINT.to_owned()),
        workspace: first_set(
            options.workspace.clone(),
            &["STS_WORKSPACE", "ATMOS_PRO_WORKSPACE_ID"],
        ),
        policy: options.policy.clone().filter(|p| !p.is_empty()),
        sources,
        permissions,
        audience: options.audience.clone(),
        oidc,
        // Absolute, so that file mode's include.path (which git requires absolute) is.
        state_root: options
            .state_dir
            .clone()
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
            .or_else(state::default_root),
        github_api_url: options.github_api_url.clone().filter(|u| !u.is_empty()),
    })
}

async fn run(cli: Cli) -> Result<i32, ClientError> {
    let options = &cli.options;
    let ctx = context(options)?;
    match cli.command {
        Command::Login => {
            ctx.obtain().await?;
            Ok(0)
        }
        Command::Env {
            format,
            output_file,
        } => {
            let obtained = ctx.obtain().await?;
            let rendered = render_for(options, &obtained)?;
            write_env(format, output_file.as_deref(), &rendered.env)?;
            Ok(0)
        }
        Command::Exec { keep, command } => {
            let mut signals = exec::Signals::install()
                .map_err(|e| ClientError::Usage(format!("cannot handle signals: {e}")))?;
            let obtained = tokio::select! {
                obtained = ctx.obtain() => obtained?,
                number = signals.next() => {
                    // Dropping the mint mid-flight is safe: the session was saved before the mint,
                    // and ending it revokes whatever the broker minted for it.
                    ui::warn("interrupted before the command started");
                    if !keep {
                        revoke_saved(&ctx).await;
                    }
                    return Ok(128 + number);
                }
            };
            let code = match render_for(options, &obtained) {
                Err(error) => {
                    ui::error(&error.to_string());
                    1
                }
                Ok(rendered) => match exec::run(&command, &rendered.env, &mut signals).await {
                    Ok(code) => code,
                    Err(e) => {
                        ui::error(&format!(
                            "cannot run `{}`: {e}",
                            command
                                .first()
                                .map(|c| c.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ));
                        exec::EXIT_CANNOT_RUN
                    }
                },
            };
            if keep {
                ui::note("--keep: tokens stay live and cached");
            } else if let Err(error) = ctx.logout(&obtained.dir, &obtained.state).await {
                // The command's status is what the job acts on (as in Atmos); the failure to
                // revoke is loud but does not replace it. The tokens expire within the hour.
                ui::warn(&error.to_string());
            }
            Ok(code)
        }
        Command::Logout => {
            let states = ctx.matching_states()?;
            if states.is_empty() {
                ui::note("nothing to log out of");
            }
            let mut failure = None;
            for (dir, state) in &states {
                if let Err(error) = ctx.logout(dir, state).await {
                    ui::error(&error.to_string());
                    failure = Some(error);
                }
            }
            match failure {
                Some(error) => Err(error),
                None => Ok(0),
            }
        }
        Command::GitCredential { operation } => git_credential(&ctx, &operation).await,
    }
}

fn render_for(
    options: &Options,
    obtained: &flow::Obtained,
) -> Result<render::Rendered, ClientError> {
    let git_config_path = obtained.dir.join(state::GIT_CONFIG_FILE);
    let render_options = RenderOptions {
        mode: options.git_config_mode,
        token_env: TokenEnv::from_flag(options.token_env.as_deref()),
        git_config_path: Some(git_config_path.clone()),
    };
    let rendered = render::environment(&obtained.state.tokens, &render_options)
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    for warning in &rendered.warnings {
        ui::warn(warning);
    }
    if let Some(contents) = &rendered.git_config_file {
        state::write_private(&git_config_path, contents.as_bytes()).map_err(|e| {
            ClientError::State(format!(
                "could not write {}: {e}",
                git_config_path.display()
            ))
        })?;
    }
    Ok(rendered)
}

/// Revoke what this invocation's entry holds (after an interrupted `exec`); best effort.
async fn revoke_saved(ctx: &Context) {
    let (Ok(key), Ok(root)) = (ctx.key(), ctx.state_root()) else {
        return;
    };
    let dir = state::dir_for(&root, &key);
    if let Some(saved) = state::load(&dir, Some(&key)) {
        if let Err(error) = ctx.logout(&dir, &saved).await {
            ui::warn(&error.to_string());
        }
    }
}

/// In GitHub Actions, tell the runner to hide every token from the logs. On stderr: the runner
/// reads workflow commands from both streams, and stdout belongs to `env` output and to the
/// child of `exec`, which callers parse.
pub(crate) fn mask_in_actions(tokens: &[model::ClientToken]) {
    if ui::in_github_actions() {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr
            .write_all(render::add_mask_lines(tokens).as_bytes())
            .and_then(|()| stderr.flush());
    }
}

fn write_env(
    format: EnvFormat,
    output_file: Option<&Path>,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ClientError> {
    let text = render::format_env(env, format);
    let target = match (format, output_file) {
        (_, Some(path)) => Some(path.to_path_buf()),
        (EnvFormat::Github, None) => Some(
            std::env::var_os("GITHUB_ENV")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    ClientError::Usage(
                        "--format github needs $GITHUB_ENV (set in GitHub Actions) or --output-file"
                            .to_owned(),
                    )
                })?,
        ),
        (_, None) => None,
    };
    match target {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| ClientError::State(format!("writing to stdout: {e}")))?;
        }
        Some(path) => {
            // Atmos appends every format but JSON, which must stay one object.
            let append = format != EnvFormat::Json;
            write_secret_file(&path, text.as_bytes(), append).map_err(|e| {
                ClientError::State(format!("could not write {}: {e}", path.display()))
            })?;
            ui::note(&format!(
                "wrote {} variables to {}",
                env.len(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// Append or replace, creating the file 0600: it holds tokens.
fn write_secret_file(path: &Path, bytes: &[u8], append: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// git's credential-helper protocol. `get` answers with the token for the URL's owner (minting
/// when needed and possible); `erase` drops a token git saw rejected, so the next `get` mints
/// again; `store` is a no-op because tokens come from the broker. Unknown operations are ignored,
/// as the protocol asks.
async fn git_credential(ctx: &Context, operation: &str) -> Result<i32, ClientError> {
    let mut input = String::new();
    std::io::stdin()
        .take(MAX_CREDENTIAL_REQUEST)
        .read_to_string(&mut input)
        .map_err(|e| ClientError::Usage(format!("reading the credential request: {e}")))?;
    let request = credential::parse_request(&input).map_err(ClientError::Usage)?;
    let now = time::OffsetDateTime::now_utc();
    match credential::Operation::from_arg(operation) {
        Some(credential::Operation::Get) => {
            let tokens: Vec<model::ClientToken> = match ctx.key() {
                Ok(_) => ctx.obtain().await?.state.tokens,
                // Not configured for a mint here: serve from whatever fresh state there is.
                Err(_) => ctx
                    .matching_states()?
                    .into_iter()
                    .flat_map(|(_, state)| state.tokens)
                    .collect(),
            };
            if let Some(token) = credential::select_token(&tokens, &request, now) {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(credential::format_get_response(token).as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|e| ClientError::State(format!("writing to git: {e}")))?;
            }
            Ok(0)
        }
        Some(credential::Operation::Erase) => {
            for (dir, _) in ctx.matching_states()? {
                let _lock = state::lock_entry(&dir).map_err(|e| {
                    ClientError::State(format!("could not lock {}: {e}", dir.display()))
                })?;
                let Some(mut state) = state::load(&dir, None) else {
                    continue;
                };
                let mut drop = credential::erase_matches(&state.tokens, &request);
                if drop.is_empty() {
                    continue;
                }
                // git saw the token rejected (revoked by an operator, say): stop handing it out
                // and mint again at the next `get`; keep it for `logout` in case it still lives.
                drop.sort_unstable();
                for index in drop.into_iter().rev() {
                    let token = state.tokens.remove(index);
                    state.retired.push(token);
                }
                state.remint = true;
                state::save(&dir, &state).map_err(|e| {
                    ClientError::State(format!("could not save {}: {e}", dir.display()))
                })?;
            }
            Ok(0)
        }
        Some(credential::Operation::Store) | None => Ok(0),
    }
}
