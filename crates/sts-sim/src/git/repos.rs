//! The bare repositories on disk, each created with one commit on first use, and `git` run
//! isolated from the user's and the system's configuration.

use super::GitServer;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// The branch every simulated repository starts with.
pub const DEFAULT_BRANCH: &str = "main";
/// The git program; found on `PATH`.
pub const GIT_PROGRAM: &str = "git";
/// Author and committer of every repository's first commit: fixed, so that the commit (and its
/// id) does not depend on the user's git configuration or the clock.
const SIM_IDENTITY: &str = "sts-broker simulator <simulator@sts-broker.invalid>";
/// Date of every repository's first commit (2024-01-01T00:00:00Z), for the same reason.
const SIM_COMMIT_TIME: &str = "1704067200 +0000";
/// Longest owner or repository name accepted as a path segment on disk (GitHub's limit is 100).
const MAX_NAME_CHARS: usize = 100;

/// Where the bare repository of `owner/name` lives under `root` (`GIT_PROJECT_ROOT`).
pub(super) fn repository_path(root: &Path, owner: &str, name: &str) -> PathBuf {
    root.join(owner).join(format!("{name}.git"))
}

pub(super) async fn check_git_installed(home: &Path) -> std::io::Result<()> {
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
pub(super) fn isolated_git(home: &Path) -> Command {
    let mut command = Command::new(GIT_PROGRAM);
    command.env_clear();
    for (key, value) in isolated_env(home) {
        command.env(key, value);
    }
    command.kill_on_drop(true);
    command
}

fn isolated_env(home: &Path) -> Vec<(&'static str, OsString)> {
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

impl GitServer {
    /// The bare repository of `owner/name`, created with one commit if it is not there yet.
    pub(super) async fn ensure_repository(
        &self,
        owner: &str,
        name: &str,
    ) -> std::io::Result<PathBuf> {
        if !is_safe_owner(owner) || !is_safe_repo_name(name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{owner}/{name} cannot be a path on disk"),
            ));
        }
        let path = repository_path(&self.root, owner, name);
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

#[cfg(test)]
mod tests {
    use super::*;

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
