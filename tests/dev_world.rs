//! `sts-broker serve --dev` as a real process, used the way a developer uses it: read what it
//! prints, then run `sts-client` with no `--oidc-token` against its GitHub Actions-style OIDC
//! endpoint, as on a runner. Production `STS_BROKER__*` overrides must not reach the dev world.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test setup failures should fail the test"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Bounds a hang on a busy machine; it does not measure speed.
const STARTUP_CAP: Duration = Duration::from_secs(120);

/// What `serve --dev` printed: the broker URL and its `export NAME='VALUE'`s.
struct DevServer {
    broker: String,
    exports: BTreeMap<String, String>,
    _child: tokio::process::Child,
}

/// Start `serve --dev` on a free port with `env` added, and read its banner to the last line.
async fn serve_dev(env: &[(&str, &str)]) -> DevServer {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-broker"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    tokio::time::timeout(STARTUP_CAP, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.contains("/audit");
            banner.push(line);
            if last {
                return;
            }
        }
        panic!("serve --dev ended before its banner did: {banner:#?}");
    })
    .await
    .expect("serve --dev printed its banner");
    // Keep reading, so that the broker never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let field = |label: &str| {
        banner
            .iter()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{label}` line in {banner:#?}"))
    };
    let exports = banner
        .iter()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect();
    DevServer {
        broker: field("broker"),
        exports,
        _child: child,
    }
}

/// The client binary, built next to this package's when the workspace is tested as the README
/// says (`cargo test --workspace`).
fn sts_client_binary() -> PathBuf {
    let broker = PathBuf::from(env!("CARGO_BIN_EXE_sts-broker"));
    let client = broker.with_file_name(format!("sts-client{}", std::env::consts::EXE_SUFFIX));
    assert!(
        client.exists(),
        "{} is missing: run `cargo test --workspace`, which builds sts-client too",
        client.display()
    );
    client
}

impl DevServer {
    fn export(&self, name: &str) -> &str {
        self.exports
            .get(name)
            .unwrap_or_else(|| panic!("serve --dev printed no `export {name}=`"))
    }

    /// `sts-client env --format json --repo acme/modules` in a clean environment holding only
    /// what `serve --dev` printed (with `request_token` as the runner's bearer).
    async fn client(&self, home: &std::path::Path, request_token: &str) -> std::process::Output {
        tokio::process::Command::new(sts_client_binary())
            .args(["env", "--format", "json", "--repo", "acme/modules"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("STS_BROKER_URL", &self.broker)
            .env("STS_WORKSPACE", "acme")
            .env("GITHUB_ACTIONS", "true")
            .env(
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                self.export("ACTIONS_ID_TOKEN_REQUEST_URL"),
            )
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token)
            .env("STS_CA_CERT", self.export("STS_CA_CERT"))
            .output()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_client_mints_through_the_dev_world_with_fresh_oidc_tokens() {
    // Production overrides that would break (or redirect) the world if they were honoured.
    let server = serve_dev(&[
        (
            "STS_BROKER__DATABASE__URL",
            "postgres://nobody:secret@127.0.0.1:1/production",
        ),
        ("STS_BROKER__SERVER__PUBLIC_URL", "not a url"),
        ("STS_BROKER__GITHUB__APP_ID", "1"),
    ])
    .await;
    let request_token = server.export("ACTIONS_ID_TOKEN_REQUEST_TOKEN").to_owned();
    assert!(server
        .export("ACTIONS_ID_TOKEN_REQUEST_URL")
        .starts_with("https://127.0.0.1:"));
    assert!(PathBuf::from(server.export("STS_CA_CERT")).exists());

    // Two separate runs (separate homes, so no cached session): OIDC tokens are single use at the
    // broker, so both minting means each fetched a fresh one from the endpoint.
    let mut rewrites = Vec::new();
    for run in 1..=2 {
        let home = tempfile::tempdir().unwrap();
        let out = server.client(home.path(), &request_token).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        let env: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
        let rewrite = env
            .into_values()
            .find(|value| value.contains("x-access-token:ghs_"))
            .unwrap_or_else(|| panic!("run {run}: no git rewrite with a token"));
        rewrites.push(rewrite);
    }
    assert_ne!(rewrites[0], rewrites[1], "each run minted its own token");

    // A job with the wrong bearer gets the runner's 401, and the client says so.
    let home = tempfile::tempdir().unwrap();
    let out = server.client(home.path(), "not-the-request-token").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 401"));
    let ca = std::fs::read(server.export("STS_CA_CERT")).unwrap();
    let status = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
        .get(format!(
            "{}&audience=atmos-pro.com",
            server.export("ACTIONS_ID_TOKEN_REQUEST_URL")
        ))
        .bearer_auth("not-the-request-token")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
}
