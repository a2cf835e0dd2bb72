use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use sts_broker::app::App;
use sts_broker::dev::{DevGitHub, DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::ActionsJob;

/// A broker seeded with the dev world, and a private home for the client.
pub(crate) struct World {
    pub(crate) world: DevWorld,
    pub(crate) broker: RunningBroker,
    pub(crate) home: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
}

/// What one run of the client did.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Every output, to check that no token leaked.
    pub(crate) fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Fail unless stderr mentions `needle`, showing stderr when it does not.
    #[track_caller]
    pub(crate) fn assert_stderr(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "{}", self.stderr);
        self
    }

    /// stdout as the JSON object `env --format json` prints.
    pub(crate) fn env_json(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {}", self.stdout))
    }
}

/// The CI job the dev policy's `infra-main` rule trusts.
pub(crate) fn main_job() -> ActionsJob {
    ActionsJob::default()
}

impl World {
    pub(crate) async fn start() -> Self {
        Self::start_as(DevGitHub::Dotcom).await
    }

    /// A world simulating `flavour` of GitHub.
    pub(crate) async fn start_as(flavour: DevGitHub) -> Self {
        sts_broker::telemetry::init_for_test();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let world = DevWorld::start_as(listener.local_addr().unwrap(), flavour)
            .await
            .unwrap();
        let app = App::build(world.config.clone()).await.unwrap();
        let broker = sts_broker::server::spawn(app, listener).unwrap();
        world.seed(&broker.url).await.unwrap();
        Self {
            world,
            broker,
            home: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn oidc(&self) -> String {
        self.world.issuer.token_for(&main_job(), DEV_AUDIENCE)
    }

    pub(crate) fn state_root(&self) -> PathBuf {
        self.home.path().join("data/sts-client")
    }

    /// The client with a clean environment: only what the test gives reaches it.
    pub(crate) fn command(&self, args: &[&str]) -> tokio::process::Command {
        client_command(self.home.path(), &self.broker.url, DEV_WORKSPACE, args)
    }

    pub(crate) async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        output(command).await
    }

    /// Run with a fresh OIDC token for the trusted job.
    pub(crate) async fn run_as_job(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let token = self.oidc();
        let mut all: Vec<(&str, &str)> = vec![("STS_OIDC_TOKEN", token.as_str())];
        all.extend_from_slice(env);
        self.run(args, &all).await
    }

    /// `login --repo acme/modules` as the trusted job, which must succeed; the token it cached.
    pub(crate) async fn login(&self) -> String {
        self.run_as_job(&["login", "--repo", "acme/modules"], &[])
            .await
            .ok();
        self.cached_tokens().remove(0)
    }

    /// `token` is revoked at GitHub and no state is left behind, as `how` the run ended must leave
    /// them.
    pub(crate) fn assert_revoked_and_forgotten(&self, token: &str, how: &str) {
        let live = self.world.github.token_is_live(token);
        assert!(!live, "{how}: the token is still live at GitHub");
        assert!(self.states().is_empty(), "{how}: a state file is left");
    }

    /// Every state file under the root, parsed.
    pub(crate) fn states(&self) -> Vec<(PathBuf, Value)> {
        let Ok(entries) = std::fs::read_dir(self.state_root()) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("state.json").exists())
            .map(|dir| {
                let text = std::fs::read_to_string(dir.join("state.json")).unwrap();
                (dir, serde_json::from_str(&text).unwrap())
            })
            .collect()
    }

    /// The tokens in the only state file.
    pub(crate) fn cached_tokens(&self) -> Vec<String> {
        let states = self.states();
        assert_eq!(states.len(), 1, "expected one state entry");
        states[0].1["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The host of the first token in the only state entry.
    pub(crate) fn cached_host(&self) -> String {
        self.states()[0].1["tokens"][0]["host"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The session JWT kept in the only state entry.
    pub(crate) fn saved_session(&self) -> String {
        self.states()[0].1["session"]["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// End `session` at the broker (as an operator's revoke or its expiry would).
    pub(crate) async fn end_session(&self, session: &str) {
        let res = self
            .http
            .delete(format!("{}/api/v1/auth/session", self.broker.url))
            .bearer_auth(session)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }

    /// Make the cached tokens look stale so that the next run has to mint.
    pub(crate) fn age_tokens(&self) {
        let (dir, mut state) = self.states().remove(0);
        for token in state["tokens"].as_array_mut().unwrap() {
            token["expiresAt"] = Value::from("2000-01-01T00:00:00Z");
        }
        std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    }

    pub(crate) async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let res = self
            .http
            .request(method, format!("{}/api/v1/admin{path}", self.broker.url))
            .bearer_auth(&self.world.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "admin {path}: {}", res.status());
        res.json().await.unwrap()
    }

    pub(crate) fn minted_and_revoked(&self) -> (u64, u64) {
        self.world.github.counts()
    }
}

/// The client with a clean environment (PATH, a private HOME and data dir, the broker and the
/// workspace): nothing from the developer's or CI's environment leaks into a test.
pub(crate) fn client_command(
    home: &Path,
    broker_url: &str,
    workspace: &str,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-client"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("STS_BROKER_URL", broker_url)
        .env("STS_WORKSPACE", workspace)
        .kill_on_drop(true);
    command
}

/// `env --format FORMAT --repo acme/modules --output-file PATH`.
pub(crate) fn env_to_file<'a>(format: &'a str, path: &'a Path) -> [&'a str; 7] {
    let path = path.to_str().expect("a UTF-8 test path");
    [
        "env",
        "--format",
        format,
        "--repo",
        "acme/modules",
        "--output-file",
        path,
    ]
}

pub(crate) async fn output(mut command: tokio::process::Command) -> Run {
    let out = command.output().await.expect("sts-client runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(unix)]
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
