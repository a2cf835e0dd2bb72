//! The client's flow against the broker: mint, cache, render, exec, logout, errors.

use crate::helpers::{env_to_file, main_job, output, Run, World};
use serde_json::{json, Value};
use sts_broker::dev::{DEV_AUDIENCE, DEV_WORKSPACE};

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    let all = run.all_output();
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!all.contains(secret), "a secret reached the output:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_mints_caches_privately_and_prints_no_token() {
    let w = World::start().await;
    let oidc = w.oidc();
    let run = w
        .run(
            &["login", "--repo", "acme/modules"],
            &[("STS_OIDC_TOKEN", &oidc)],
        )
        .await;
    run.ok();
    run.assert_stderr("minted 1 token for acme");
    let tokens = w.cached_tokens();
    assert_eq!(tokens.len(), 1);
    assert!(w.world.github.token_is_live(&tokens[0]));
    assert_no_secret(&run, &[&tokens[0], &oidc]);
    #[cfg(unix)]
    {
        let (dir, state) = &w.states()[0];
        assert_eq!(crate::helpers::mode(dir), 0o700);
        assert_eq!(crate::helpers::mode(&dir.join("state.json")), 0o600);
        // The session is kept (for logout), the OIDC token is not.
        assert!(state["session"]["token"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert!(!std::fs::read_to_string(dir.join("state.json"))
            .unwrap()
            .contains(&oidc));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn env_json_is_the_atmos_environment_and_the_cache_is_reused() {
    let w = World::start().await;
    let first = w
        .run_as_job(&["env", "--format", "json", "--repo", "acme/modules"], &[])
        .await;
    first.ok();
    let env = first.env_json();
    let token = w.cached_tokens().remove(0);
    let host = w.cached_host();
    let rewrite = format!("url.https://x-access-token:{token}@{host}/acme/.insteadOf");
    let expected: std::collections::BTreeMap<String, String> = [
        ("GIT_CONFIG_COUNT", "2".to_owned()),
        ("GIT_CONFIG_KEY_0", rewrite.clone()),
        ("GIT_CONFIG_VALUE_0", format!("https://{host}/acme/")),
        ("GIT_CONFIG_KEY_1", rewrite),
        ("GIT_CONFIG_VALUE_1", format!("ssh://git@{host}/acme/")),
        ("ATMOS_PRO_GITHUB_TOKEN", token.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(env, expected);
    assert!(!first.stderr.contains(&token));

    // No OIDC token this time: only the cache can answer, and no new mint happens.
    let (minted, _) = w.minted_and_revoked();
    let second = w
        .run(&["env", "--format", "json", "--repo", "acme/modules"], &[])
        .await;
    second.ok();
    assert_eq!(second.env_json(), expected);
    assert_eq!(w.minted_and_revoked().0, minted);
    second.assert_stderr("reusing 1 token");
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusions_are_warnings_and_all_excluded_is_still_success() {
    let w = World::start().await;
    let run = w
        .run_as_job(
            &[
                "login",
                "--repo",
                "dormant-co/legacy",
                "--repo",
                "acme/terraform-nowhere",
                "--repo",
                "stranger/repo",
            ],
            &[],
        )
        .await;
    run.ok();
    run.assert_stderr("dormant-co/legacy: installation_suspended");
    run.assert_stderr("acme/terraform-nowhere: not_installed_in_workspace");
    run.assert_stderr("stranger/repo: no_trust_policy");
    run.assert_stderr("no tokens granted (3 excluded)");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_passes_the_exit_code_through_and_revokes_on_exit() {
    let w = World::start().await;
    let out = w.home.path().join("seen-token");
    let script = format!(
        "test \"$GIT_CONFIG_COUNT\" = 2 || exit 99; printf %s \"$ATMOS_PRO_GITHUB_TOKEN\" > {}; exit 7",
        out.display()
    );
    let run = w
        .run_as_job(
            &["exec", "--repo", "acme/modules", "--", "sh", "-c", &script],
            &[],
        )
        .await;
    assert_eq!(run.code, 7, "{}", run.stderr);
    let token = std::fs::read_to_string(&out).unwrap();
    assert!(token.starts_with("ghs_"), "{token}");
    w.assert_revoked_and_forgotten(&token, "on exit");
    assert_no_secret(&run, &[&token]);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_keep_leaves_the_tokens_live_and_cached() {
    let w = World::start().await;
    let run = w
        .run_as_job(
            &["exec", "--keep", "--repo", "acme/modules", "--", "true"],
            &[],
        )
        .await;
    run.ok();
    let token = w.cached_tokens().remove(0);
    assert!(w.world.github.token_is_live(&token));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_of_a_missing_program_is_127_and_still_revokes() {
    let w = World::start().await;
    let (_, revoked_before) = w.minted_and_revoked();
    let run = w
        .run_as_job(
            &[
                "exec",
                "--repo",
                "acme/modules",
                "--",
                "no-such-program-here",
            ],
            &[],
        )
        .await;
    assert_eq!(run.code, 127, "{}", run.stderr);
    run.assert_stderr("cannot run `no-such-program-here`");
    assert!(
        w.minted_and_revoked().1 > revoked_before,
        "revoked at GitHub"
    );
    assert!(w.states().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_through_the_broker_and_is_idempotent() {
    let w = World::start().await;
    let token = w.login().await;
    let session = w.saved_session();

    let run = w.run(&["logout"], &[]).await;
    run.ok();
    w.assert_revoked_and_forgotten(&token, "logout");
    // The session is over too: the broker refuses it.
    let res = w
        .http
        .post(format!("{}/api/v1/sts", w.broker.url))
        .bearer_auth(&session)
        .json(&json!({"policyName": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let again = w.run(&["logout"], &[]).await;
    again.ok();
    again.assert_stderr("nothing to log out of");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_falls_back_to_github_when_the_broker_is_gone() {
    let w = World::start().await;
    let token = w.login().await;
    let (dir, mut state) = w.states().remove(0);
    state["key"]["brokerUrl"] = json!("http://127.0.0.1:9");
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();

    let mut command = w.command(&["logout"]);
    command
        .env_remove("STS_BROKER_URL")
        .env("STS_GITHUB_API_URL", &w.world.config.github.api_url);
    let run = output(command).await;
    run.ok();
    w.assert_revoked_and_forgotten(&token, "logout at GitHub directly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_state_file_is_minted_over_not_fatal() {
    let w = World::start().await;
    let first = w.login().await;
    let (dir, _) = w.states().remove(0);
    std::fs::write(dir.join("state.json"), "{not json").unwrap();
    let run = w
        .run_as_job(&["login", "--repo", "acme/modules"], &[])
        .await;
    run.ok();
    run.assert_stderr("ignoring damaged state");
    assert_ne!(w.cached_tokens()[0], first, "minted again");
    assert_eq!(w.cached_tokens().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_session_is_renewed_once_with_a_fresh_oidc_token() {
    let w = World::start().await;
    let first_oidc = w.oidc();
    w.run(
        &["login", "--repo", "acme/modules"],
        &[("STS_OIDC_TOKEN", &first_oidc)],
    )
    .await
    .ok();
    w.end_session(&w.saved_session()).await;
    w.age_tokens();

    // The only OIDC token at hand was already used: a clear failure, not a loop.
    let run = w
        .run(
            &["login", "--repo", "acme/modules"],
            &[("STS_OIDC_TOKEN", &first_oidc)],
        )
        .await;
    assert_eq!(run.code, 1);
    run.assert_stderr("authenticating again");
    run.assert_stderr("single use");

    // A fresh one: re-authenticated once, minted.
    let run = w
        .run_as_job(&["login", "--repo", "acme/modules"], &[])
        .await;
    run.ok();
    run.assert_stderr("minted 1 token for acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_without_the_entitlement_is_named() {
    let w = World::start().await;
    w.admin(
        reqwest::Method::PATCH,
        &format!("/workspaces/{DEV_WORKSPACE}"),
        json!({"stsEnabled": false}),
    )
    .await;
    let run = w.run_as_job(&["login"], &[]).await;
    assert_eq!(run.code, 1);
    run.assert_stderr("not entitled");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_broker_and_missing_inputs_are_clear_errors() {
    let w = World::start().await;
    let run = w
        .run_as_job(&["login"], &[("STS_BROKER_URL", "http://127.0.0.1:9")])
        .await;
    assert_eq!(run.code, 1);
    run.assert_stderr("cannot reach the broker at http://127.0.0.1:9");

    let run = w.run(&["login"], &[]).await;
    assert_eq!(run.code, 1);
    run.assert_stderr("id-token: write");

    let mut command = w.command(&["login"]);
    command.env_remove("STS_WORKSPACE");
    let run = output(command).await;
    assert_eq!(run.code, 1);
    run.assert_stderr("no workspace");

    let run = w
        .run(
            &["login"],
            &[("ACTIONS_ID_TOKEN_REQUEST_URL", "https://x/y")],
        )
        .await;
    assert_eq!(
        run.code, 1,
        "half an Actions environment is refused up front"
    );
    run.assert_stderr("ACTIONS_ID_TOKEN_REQUEST_TOKEN");

    let run = w
        .run(
            &["login"],
            &[
                ("ACTIONS_ID_TOKEN_REQUEST_URL", "http://127.0.0.1:9/token"),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t"),
            ],
        )
        .await;
    assert_eq!(run.code, 1, "the request token is never sent in clear");
    run.assert_stderr("must be an https URL");

    let run = w.run_as_job(&["login", "--repo", "not-a-repo"], &[]).await;
    assert_eq!(run.code, 1);
    run.assert_stderr("expected owner/repo");
}

#[tokio::test(flavor = "multi_thread")]
async fn atmos_environment_variables_are_understood() {
    let w = World::start().await;
    let mut command = w.command(&["login", "--repo", "acme/modules"]);
    let base = format!("{}/", w.broker.url);
    command
        .env_remove("STS_BROKER_URL")
        .env_remove("STS_WORKSPACE")
        .env("ATMOS_PRO_BASE_URL", &base)
        .env("ATMOS_PRO_WORKSPACE_ID", DEV_WORKSPACE)
        // Atmos CLI's local test recipe: a token in ACTIONS_ID_TOKEN, placeholder request vars.
        .env("GITHUB_ACTIONS", "true")
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", "https://x")
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "x")
        .env(
            "ACTIONS_ID_TOKEN",
            w.world.issuer.token_for(&main_job(), DEV_AUDIENCE),
        );
    output(command).await.ok();
    assert_eq!(w.cached_tokens().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn env_github_appends_to_github_env_and_masks_tokens() {
    let w = World::start().await;
    let github_env = w.home.path().join("github_env");
    std::fs::write(&github_env, "EARLIER=kept\n").unwrap();
    let path = github_env.to_str().unwrap();
    let run = w
        .run_as_job(
            &["env", "--format", "github", "--repo", "acme/modules"],
            &[("GITHUB_ENV", path), ("GITHUB_ACTIONS", "true")],
        )
        .await;
    run.ok();
    let token = w.cached_tokens().remove(0);
    let written = std::fs::read_to_string(&github_env).unwrap();
    assert!(written.starts_with("EARLIER=kept\n"), "{written}");
    assert!(written.contains("GIT_CONFIG_COUNT=2\n"), "{written}");
    assert!(
        written.contains(&format!("ATMOS_PRO_GITHUB_TOKEN={token}\n")),
        "{written}"
    );
    run.assert_stderr(&format!("::add-mask::{token}\n"));
    assert_eq!(run.stdout, "", "stdout stays clean");

    // A file the client creates is private from the start.
    let fresh = w.home.path().join("fresh_env");
    let run = w.run(&env_to_file("dotenv", &fresh), &[]).await;
    run.ok();
    #[cfg(unix)]
    assert_eq!(crate::helpers::mode(&fresh), 0o600);
    assert!(std::fs::read_to_string(&fresh)
        .unwrap()
        .contains("GIT_CONFIG_COUNT='2'"));

    let run = w
        .run(
            &["env", "--format", "github", "--repo", "acme/modules"],
            &[],
        )
        .await;
    assert_eq!(run.code, 1, "no GITHUB_ENV and no --output-file");
    run.assert_stderr("GITHUB_ENV");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_credential_get_serves_the_owners_token() {
    let w = World::start().await;
    let token = w.login().await;
    let host = w.cached_host();

    let answer = credential(
        &w,
        "get",
        &format!("protocol=https\nhost={host}\npath=acme/modules.git\n\n"),
    )
    .await;
    assert!(answer.contains("username=x-access-token\n"), "{answer}");
    assert!(answer.contains(&format!("password={token}\n")), "{answer}");
    // Another owner gets nothing (git then fails or asks elsewhere).
    let answer = credential(
        &w,
        "get",
        &format!("protocol=https\nhost={host}\npath=beta/x.git\n\n"),
    )
    .await;
    assert_eq!(answer, "");
    // git saw the token rejected: it is dropped so the next `get` mints again.
    let answer = credential(&w, "erase", &format!("protocol=https\nhost={host}\npath=acme/modules.git\nusername=x-access-token\npassword={token}\n\n")).await;
    assert_eq!(answer, "");
    let state: Value = w.states().remove(0).1;
    assert!(state["tokens"].as_array().unwrap().is_empty());
    assert_eq!(state["remint"], true);

    // The next `get` mints again (an OIDC token is at hand) and serves the new token.
    let answer = credential_with(
        &w,
        "get",
        &format!("protocol=https\nhost={host}\npath=acme/modules.git\n\n"),
        &[("STS_OIDC_TOKEN", &w.oidc())],
    )
    .await;
    let new_token = w.cached_tokens().remove(0);
    assert_ne!(new_token, token);
    assert!(
        answer.contains(&format!("password={new_token}\n")),
        "{answer}"
    );

    // logout revokes both: the current one through the broker, the erased one at GitHub.
    let mut command = w.command(&["logout"]);
    command.env("STS_GITHUB_API_URL", &w.world.config.github.api_url);
    output(command).await.ok();
    assert!(!w.world.github.token_is_live(&new_token));
    assert!(!w.world.github.token_is_live(&token));
}

/// Send SIGTERM to `pid`, as a CI runner cancelling a job does.
#[cfg(unix)]
async fn sigterm(pid: u32) {
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

async fn credential(w: &World, operation: &str, input: &str) -> String {
    credential_with(w, operation, input, &[]).await
}

async fn credential_with(w: &World, operation: &str, input: &str, env: &[(&str, &str)]) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut command = w.command(&["git-credential", operation, "--repo", "acme/modules"]);
    command
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn exec_forwards_sigterm_and_still_revokes() {
    let w = World::start().await;
    let ready = w.home.path().join("ready");
    let seen = w.home.path().join("seen-token");
    // The child reports readiness only after its trap is set, then waits to be told to stop.
    let script = format!(
        "trap 'exit 42' TERM; printf %s \"$ATMOS_PRO_GITHUB_TOKEN\" > {seen}; touch {ready}; \
         while :; do sleep 0.1; done",
        seen = seen.display(),
        ready = ready.display()
    );
    let token = w.oidc();
    let mut command = w.command(&["exec", "--repo", "acme/modules", "--", "sh", "-c", &script]);
    command
        .env("STS_OIDC_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap();
    let mut waited = 0;
    while !ready.exists() {
        assert!(waited < 600, "the child never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    sigterm(pid).await;
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = std::fs::read_to_string(&seen).unwrap();
    assert!(!minted.is_empty());
    assert!(
        !w.world.github.token_is_live(&minted),
        "revoked after the signal"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn exec_interrupted_while_minting_exits_cleanly_instead_of_dying() {
    // A broker that accepts and never answers: the client is stuck in the exchange.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel::<()>(1);
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted_tx.try_send(());
        }
    });
    let w = World::start().await;
    let mut command = w.command(&["exec", "--", "true"]);
    command
        .env("STS_BROKER_URL", &url)
        .env("STS_OIDC_TOKEN", "header.payload.signature")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap();
    accepted.recv().await.unwrap();
    sigterm(pid).await;
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("interrupted before the command started"),
        "{stderr}"
    );
    hold.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_steps_share_one_mint() {
    let w = World::start().await;
    let (a, b) = (w.oidc(), w.oidc());
    let (env_a, env_b) = (
        [("STS_OIDC_TOKEN", a.as_str())],
        [("STS_OIDC_TOKEN", b.as_str())],
    );
    let args = ["login", "--repo", "acme/modules"];
    let (first, second) = tokio::join!(w.run(&args, &env_a), w.run(&args, &env_b));
    first.ok();
    second.ok();
    let stderr = format!("{}{}", first.stderr, second.stderr);
    assert_eq!(
        stderr.matches("minted 1 token for acme").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("reusing 1 token").count(), 1, "{stderr}");
    assert_eq!(w.cached_tokens().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_url_that_is_not_a_url_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["not a url", "sts.example.com", "ftp://sts.example.com"] {
        let command = crate::helpers::client_command(
            home.path(),
            "http://127.0.0.1:9",
            DEV_WORKSPACE,
            &["login", "--url", bad, "--oidc-token", "x"],
        );
        let run = output(command).await;
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        run.assert_stderr(&format!("'{bad}' for '--url <URL>'"));
        run.assert_stderr("expected an http(s) URL");
    }
    // The same mistake in the environment is refused before any request, naming where it was.
    let command = crate::helpers::client_command(
        home.path(),
        "not a url",
        DEV_WORKSPACE,
        &["login", "--oidc-token", "x"],
    );
    let run = output(command).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr("broker URL `not a url` (--url, STS_BROKER_URL");
}
