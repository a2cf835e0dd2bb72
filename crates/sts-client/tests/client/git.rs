//! The real `git` against the simulator's git smart HTTPS server: a private repository is
//! reachable only while the client's tokens are live, through each of the ways the client hands
//! tokens to git.

use crate::helpers::{env_to_file, output, World};
use std::path::{Path, PathBuf};
use sts_sim::git::readme_for;

/// git with no user or system config, no prompts, trusting the simulator's CA.
pub(crate) fn git_command(
    w: &World,
    args: &[&str],
    global_config: &Path,
) -> tokio::process::Command {
    clean_command(w, "git", args, global_config)
}

/// `program` with only PATH and HOME from us, plus [`isolate_git`].
fn clean_command(
    w: &World,
    program: &str,
    args: &[&str],
    global_config: &Path,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", w.home.path())
        .kill_on_drop(true);
    isolate_git(w, &mut command, global_config);
    command
}

/// Whatever git `command` runs (itself or a child) sees no user or system config, never prompts,
/// trusts the simulator's CA and works in the test's home.
pub(crate) fn isolate_git(w: &World, command: &mut tokio::process::Command, global_config: &Path) {
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", global_config)
        .env("GIT_SSL_CAINFO", ca(w))
        .current_dir(w.home.path());
}

fn ca(w: &World) -> PathBuf {
    w.world
        .ca_pem_path()
        .expect("git is installed (CI installs it); the dev world has a git server")
        .to_path_buf()
}

pub(crate) fn repo_url(w: &World, repo: &str) -> String {
    let url = w.world.git_url().expect("the dev world has a git server");
    format!("{url}/{repo}")
}

pub(crate) fn empty_global_config(w: &World) -> PathBuf {
    let path = w.home.path().join("empty.gitconfig");
    std::fs::write(&path, "").unwrap();
    path
}

pub(crate) fn readme(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("README.md")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_works_under_exec_only_and_not_after_the_revoke() {
    let w = World::start().await;
    let config = empty_global_config(&w);
    let url = repo_url(&w, "acme/modules");

    let run = output(git_command(&w, &["clone", &url, "without"], &config)).await;
    assert_ne!(run.code, 0, "a private repository needs a token");

    let seen = w.home.path().join("seen-token");
    let script = format!(
        "git clone {url} with && printf %s \"$ATMOS_PRO_GITHUB_TOKEN\" > {}",
        seen.display()
    );
    let mut command = w.command(&["exec", "--repo", "acme/modules", "--", "sh", "-c", &script]);
    command.env("STS_OIDC_TOKEN", w.oidc());
    isolate_git(&w, &mut command, &config);
    let run = output(command).await;
    run.ok();
    assert_eq!(
        readme(&w.home.path().join("with")),
        readme_for("acme", "modules")
    );
    let token = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !run.all_output().contains(&token),
        "no token in the client's output"
    );

    // The token git used is dead now: even written into the URL it gets nothing.
    let host = w.world.git_host().unwrap();
    let with_token = format!("https://x-access-token:{token}@{host}/acme/modules");
    let run = output(git_command(&w, &["clone", &with_token, "after"], &config)).await;
    assert_ne!(run.code, 0, "revoked on exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_reaches_only_what_the_policy_granted() {
    let w = World::start().await;
    let config = empty_global_config(&w);
    let script = format!("git clone {} payroll", repo_url(&w, "acme/payroll"));
    let mut command = w.command(&["exec", "--repo", "acme/modules", "--", "sh", "-c", &script]);
    command.env("STS_OIDC_TOKEN", w.oidc());
    isolate_git(&w, &mut command, &config);
    let run = output(command).await;
    assert_ne!(run.code, 0, "acme/payroll is not granted: {}", run.stderr);
    assert!(!w.home.path().join("payroll/README.md").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_through_the_credential_helper_with_no_token_in_env_or_url() {
    let w = World::start().await;
    let config = w.home.path().join("helper.gitconfig");
    std::fs::write(
        &config,
        format!(
            "[credential]\n\thelper = \"!{} git-credential\"\n\tuseHttpPath = true\n",
            env!("CARGO_BIN_EXE_sts-client")
        ),
    )
    .unwrap();
    let url = repo_url(&w, "acme/modules");
    let clone = |target: &'static str, oidc: Option<String>| {
        let mut command = git_command(&w, &["clone", &url, target], &config);
        command
            .env("XDG_DATA_HOME", w.home.path().join("data"))
            .env("STS_BROKER_URL", &w.broker.url)
            .env("STS_WORKSPACE", sts_broker::dev::DEV_WORKSPACE)
            .env("STS_REPOS", "acme/modules");
        if let Some(oidc) = oidc {
            command.env("STS_OIDC_TOKEN", oidc);
        }
        output(command)
    };
    let run = clone("first", Some(w.oidc())).await;
    run.ok();
    assert_eq!(
        readme(&w.home.path().join("first")),
        readme_for("acme", "modules")
    );

    // Logged out, and no OIDC token to mint again: git gets no credential and fails.
    w.run(&["logout"], &[]).await.ok();
    let run = clone("second", None).await;
    assert_ne!(run.code, 0, "after logout the helper has nothing to give");
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_in_a_shell_that_sourced_env_bash() {
    let w = World::start().await;
    let config = empty_global_config(&w);
    let env_file = w.home.path().join("sts.env");
    let run = w.run_as_job(&env_to_file("bash", &env_file), &[]).await;
    run.ok();
    let script = |target: &str| {
        format!(
            ". {} && git clone {} {target}",
            env_file.display(),
            repo_url(&w, "acme/modules")
        )
    };
    let shell = |target: &str| output(clean_command(&w, "sh", &["-c", &script(target)], &config));
    shell("first").await.ok();
    assert_eq!(
        readme(&w.home.path().join("first")),
        readme_for("acme", "modules")
    );

    w.run(&["logout"], &[]).await.ok();
    let run = shell("second").await;
    assert_ne!(run.code, 0, "the sourced token was revoked by logout");
}
