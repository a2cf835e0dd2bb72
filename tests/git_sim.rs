//! The simulator's git smart HTTPS server, driven by the real `git` binary: clones and pushes
//! succeed only with live installation tokens that reach the repository, exactly as Atmos's
//! `insteadOf` rewrites present them. These tests need `git` on PATH and fail without it.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors by design"
)]

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use sts_sim::git::{readme_for, RunningGitServer};
use sts_sim::github::{GitHubSimulator, RunningSimulator, SimInstallation};
use sts_sim::testing::{
    app_jwt, client_trusting, revoke_installation_token, shared_app_key as app_key,
};
use support::{spawn_dev_broker, BrokerApi};

const APP_ID: &str = "777";
const INSTALLATION: i64 = 1;

/// The simulator's API and git servers, and a home for `git` that holds no configuration.
struct World {
    sim: GitHubSimulator,
    api: RunningSimulator,
    git: RunningGitServer,
    cli: GitCli,
    http: reqwest::Client,
}

async fn world() -> World {
    let sim = GitHubSimulator::new(APP_ID, app_key().public_key());
    sim.add_installation(
        SimInstallation::organization(INSTALLATION, "acme", 1001)
            .with_repo(2001, "infra", true)
            .with_repo(2002, "modules", true)
            .with_repo(2003, "website", false),
    );
    let api = sim.start().await.unwrap();
    let git = sim
        .start_git()
        .await
        .expect("the git server needs the `git` binary on PATH");
    World {
        sim,
        api,
        cli: GitCli::new(&git.ca_pem_path),
        git,
        http: reqwest::Client::new(),
    }
}

impl World {
    /// Mint an installation token through the REST API, as the broker does.
    async fn mint(&self, body: Value) -> String {
        let response = self
            .http
            .post(format!(
                "{}/app/installations/{INSTALLATION}/access_tokens",
                self.api.url
            ))
            .bearer_auth(app_jwt(app_key(), APP_ID))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    async fn revoke(&self, token: &str) {
        let response = revoke_installation_token(&self.http, &self.api.url, token).await;
        assert_eq!(response.status(), 204);
    }

    /// A token for `acme/infra` alone, with `contents: {level}`.
    async fn mint_infra(&self, level: &str) -> String {
        let permissions = json!({ "contents": level });
        self.mint(json!({"repositories": ["infra"], "permissions": permissions}))
            .await
    }

    /// Clone `path` with `token` in its URL, as [`World::url_with_token`] writes it.
    async fn clone_with(&self, token: &str, path: &str) -> Result<PathBuf, Output> {
        self.clone(&self.url_with_token(token, path), &[]).await
    }

    /// `https://HOST/path` as a user writes it.
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.git.url)
    }

    /// `https://x-access-token:TOKEN@HOST/path`.
    fn url_with_token(&self, token: &str, path: &str) -> String {
        format!("https://x-access-token:{token}@{}/{path}", self.git.host)
    }

    async fn git(&self, cwd: &Path, args: &[&str], env: &[(String, String)]) -> Output {
        self.cli.git(cwd, args, env).await
    }

    async fn clone(&self, url: &str, env: &[(String, String)]) -> Result<PathBuf, Output> {
        self.cli.clone(url, env).await
    }

    /// `git push REMOTE HEAD:main` in `work`.
    async fn push(&self, work: &Path, remote: &str) -> Output {
        self.git(work, &["push", remote, "HEAD:main"], &[]).await
    }

    /// Write `file` in `work` and commit it with `message`; both steps must succeed.
    async fn commit(&self, work: &Path, file: &str, contents: &str, message: &str) {
        std::fs::write(work.join(file), contents).unwrap();
        let added = self.git(work, &["add", file], &[]).await;
        assert!(added.status.success(), "{}", stderr(&added));
        let committed = self
            .git(work, &["commit", "--quiet", "-m", message], &[])
            .await;
        assert!(committed.status.success(), "{}", stderr(&committed));
    }
}

/// The `git` binary with a home of its own and one CA to trust.
struct GitCli {
    home: tempfile::TempDir,
    ca_pem_path: PathBuf,
}

impl GitCli {
    fn new(ca_pem_path: &Path) -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            ca_pem_path: ca_pem_path.to_owned(),
        }
    }

    /// Run `git` hermetically: no user or system config, no prompts, trusting only the CA.
    async fn git(&self, cwd: &Path, args: &[&str], env: &[(String, String)]) -> Output {
        let mut command = tokio::process::Command::new("git");
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_SSL_CAINFO", &self.ca_pem_path)
            .env("GIT_AUTHOR_NAME", "CI")
            .env("GIT_AUTHOR_EMAIL", "ci@example.invalid")
            .env("GIT_COMMITTER_NAME", "CI")
            .env("GIT_COMMITTER_EMAIL", "ci@example.invalid")
            .env("LC_ALL", "C");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().await.unwrap()
    }

    /// `git clone URL <fresh dir>`; the dir on success, the output on failure.
    async fn clone(&self, url: &str, env: &[(String, String)]) -> Result<PathBuf, Output> {
        let target = self
            .home
            .path()
            .join(format!("clone-{}", uuid::Uuid::new_v4()));
        let output = self
            .git(
                self.home.path(),
                &["clone", "--quiet", url, target.to_str().unwrap()],
                env,
            )
            .await;
        if output.status.success() {
            Ok(target)
        } else {
            assert!(!target.join("README.md").exists());
            Err(output)
        }
    }
}

/// The `GIT_CONFIG_*` variables Atmos exports (`git_config_mode: env`) so that git sends the
/// URLs under each of `instead_of` to `host/owner` with `token`.
fn insteadof_env(
    token: &str,
    host: &str,
    owner: &str,
    instead_of: &[String],
) -> Vec<(String, String)> {
    let key = format!("url.https://x-access-token:{token}@{host}/{owner}/.insteadOf");
    let mut env = vec![("GIT_CONFIG_COUNT".to_owned(), instead_of.len().to_string())];
    for (n, value) in instead_of.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{n}"), key.clone()));
        env.push((format!("GIT_CONFIG_VALUE_{n}"), value.clone()));
    }
    env
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `git` said `needle` on stderr (which the failure shows).
fn assert_stderr_contains(output: &Output, needle: &str) {
    let said = stderr(output);
    assert!(said.contains(needle), "{said}");
}

fn readme(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("README.md")).unwrap()
}

#[tokio::test]
async fn a_private_clone_needs_a_live_token_that_reaches_the_repository() {
    let w = world().await;

    let anonymous = w.clone(&w.url("acme/infra"), &[]).await.unwrap_err();
    assert_stderr_contains(&anonymous, "terminal prompts disabled");

    let token = w.mint_infra("read").await;
    let cloned = w.clone_with(&token, "acme/infra").await.unwrap();
    assert_eq!(readme(&cloned), readme_for("acme", "infra"));

    let elsewhere = w.clone_with(&token, "acme/modules").await.unwrap_err();
    assert_stderr_contains(&elsewhere, "not found");

    let wrong_user = format!("https://someone:{token}@{}/acme/infra", w.git.host);
    w.clone(&wrong_user, &[]).await.unwrap_err();

    w.revoke(&token).await;
    let revoked = w.clone_with(&token, "acme/infra").await.unwrap_err();
    assert_stderr_contains(&revoked, "Authentication failed");

    let expiring = w.mint(json!({})).await;
    w.clone_with(&expiring, "acme/infra").await.unwrap();
    assert!(w.sim.expire_token(&expiring));
    w.clone_with(&expiring, "acme/infra").await.unwrap_err();
}

#[tokio::test]
async fn a_push_needs_contents_write_and_lands_for_the_next_clone() {
    let w = world().await;
    let reader = w.mint_infra("read").await;
    let writer = w.mint_infra("write").await;
    let work = w.clone_with(&reader, "acme/infra").await.unwrap();
    w.commit(
        &work,
        "CHANGELOG.md",
        "pushed through the simulator\n",
        "Add a changelog",
    )
    .await;

    let refused = w.push(&work, "origin").await;
    assert!(!refused.status.success());
    assert_stderr_contains(&refused, "403");

    let pushed = w
        .push(&work, &w.url_with_token(&writer, "acme/infra"))
        .await;
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    let again = w.clone_with(&reader, "acme/infra").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(again.join("CHANGELOG.md")).unwrap(),
        "pushed through the simulator\n"
    );
    let log = w.git(&again, &["log", "-1", "--format=%s"], &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).trim(),
        "Add a changelog"
    );

    // Enough branches that git gzips its fetch request (it does above 1 KiB): the server must
    // hand `Content-Encoding: gzip` to the backend.
    let branches: Vec<String> = (0..40)
        .map(|n| format!("HEAD:refs/heads/feature-with-a-long-name-{n:02}"))
        .collect();
    let mut args = vec!["push".to_owned(), w.url_with_token(&writer, "acme/infra")];
    args.extend(branches);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pushed = w.git(&again, &args, &[]).await;
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let mirror = w.clone_with(&reader, "acme/infra").await.unwrap();
    let fetched = w
        .git(
            &mirror,
            &[
                "fetch",
                "--quiet",
                "origin",
                "+refs/heads/*:refs/heads/*",
                "--update-head-ok",
            ],
            &[],
        )
        .await;
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let listed = w
        .git(
            &mirror,
            &["for-each-ref", "--format=%(refname)", "refs/heads/"],
            &[],
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 41);
}

#[tokio::test]
async fn an_atmos_insteadof_rewrite_carries_the_token_for_urls_as_users_write_them() {
    let w = world().await;
    let token = w.mint(json!({"permissions": {"contents": "read"}})).await;
    let host = &w.git.host;
    // Exactly what Atmos exports with `git_config_mode: env`.
    let rewrites = insteadof_env(
        &token,
        host,
        "acme",
        &[
            format!("https://{host}/acme/"),
            format!("ssh://git@{host}/acme/"),
        ],
    );
    for path in ["acme/infra", "acme/modules.git"] {
        let cloned = w.clone(&w.url(path), &rewrites).await.unwrap();
        let name = path.trim_start_matches("acme/").trim_end_matches(".git");
        assert_eq!(readme(&cloned), readme_for("acme", name));
    }
    // The rewrite is a prefix match on the owner as written: another owner gets no token.
    w.clone(&w.url("acme-labs/infra"), &rewrites)
        .await
        .unwrap_err();
}

#[tokio::test]
async fn public_repositories_are_readable_anonymously_but_not_writable() {
    let w = world().await;
    let cloned = w.clone(&w.url("ACME/Website.git"), &[]).await.unwrap();
    assert_eq!(readme(&cloned), readme_for("acme", "website"));

    let reader = w.mint_infra("read").await;
    w.commit(&cloned, "x.txt", "x\n", "x").await;
    let anonymous = w.push(&cloned, "origin").await;
    assert!(!anonymous.status.success());
    let unreached = w
        .push(&cloned, &w.url_with_token(&reader, "acme/website"))
        .await;
    assert!(!unreached.status.success());
    assert_stderr_contains(&unreached, "403");
}

#[tokio::test]
async fn repositories_added_later_are_served_and_bad_requests_do_not_stop_the_server() {
    let w = world().await;
    w.sim.add_installation(
        SimInstallation::organization(INSTALLATION, "acme", 1001)
            .with_repo(2001, "infra", true)
            .with_repo(2004, "late-arrival", true),
    );
    let token = w.mint(json!({"repositories": ["late-arrival"]})).await;

    let trusting = client_trusting(&w.git.ca);
    let cases = [
        ("/acme/late-arrival/info/refs", 403),
        ("/acme/%2e%2e/info/refs?service=git-upload-pack", 404),
        (
            "/acme/late-arrival%2f..%2f..%2finfra/info/refs?service=git-upload-pack",
            404,
        ),
        ("/acme/late-arrival/objects/info/packs", 404),
        ("/nothing", 404),
    ];
    for (path, status) in cases {
        let response = trusting
            .get(format!("{}{path}", w.git.url))
            .basic_auth("x-access-token", Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    let challenged = trusting
        .get(format!(
            "{}/acme/late-arrival/info/refs?service=git-upload-pack",
            w.git.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(challenged.status(), 401);
    assert_eq!(
        challenged.headers()["www-authenticate"],
        r#"Basic realm="GitHub""#
    );
    // Whatever the backend makes of a body that is not a pkt-line stream, the server must go on
    // serving (the clone below).
    trusting
        .post(format!("{}/acme/late-arrival/git-upload-pack", w.git.url))
        .basic_auth("x-access-token", Some(&token))
        .header("content-type", "application/x-git-upload-pack-request")
        .body("this is not a pkt-line stream")
        .send()
        .await
        .unwrap();

    let cloned = w.clone_with(&token, "acme/late-arrival").await.unwrap();
    assert_eq!(readme(&cloned), readme_for("acme", "late-arrival"));
    assert!(w
        .git
        .repository_path("acme", "late-arrival")
        .join("HEAD")
        .exists());
    assert!(w.sim.request_count("/acme/late-arrival/") >= 2);
}

#[tokio::test]
async fn tokens_the_dev_broker_mints_clone_from_the_host_they_name_until_revoked() {
    let (world, broker) = spawn_dev_broker(|_| {}).await;
    let git_host = world
        .git_host()
        .expect("the dev world's git server needs the `git` binary on PATH")
        .to_owned();
    assert_eq!(world.config.github.host, git_host);
    let ca = world.ca_pem_path().unwrap();
    assert!(ca.starts_with(world.dir.path()));
    let cli = GitCli::new(ca);
    let http = reqwest::Client::new();
    let api = BrokerApi {
        http: &http,
        base: &broker.url,
    };

    let session = api.main_session(&world).await;
    let minted = api
        .sts(
            &session,
            json!({ "sources": ["acme/modules"], "policyName": "default" }),
        )
        .await
        .body;
    let token = &minted["data"]["tokens"][0];
    assert_eq!(token["host"], git_host.as_str(), "{minted}");
    let (host, owner, secret) = (
        token["host"].as_str().unwrap(),
        token["owner"].as_str().unwrap(),
        token["token"].as_str().unwrap(),
    );
    let rewrite = insteadof_env(secret, host, owner, &[format!("https://{host}/{owner}/")]);
    let modules = format!("https://{host}/{owner}/modules");
    let cloned = cli.clone(&modules, &rewrite).await.unwrap();
    assert_eq!(readme(&cloned), readme_for("acme", "modules"));
    // The policy does not grant payroll: the token does not reach it.
    cli.clone(&format!("https://{host}/{owner}/payroll"), &rewrite)
        .await
        .unwrap_err();

    let revoked = api.revoke(&session, json!({})).await;
    assert_eq!(revoked.status, 200);
    cli.clone(&modules, &rewrite).await.unwrap_err();
}
