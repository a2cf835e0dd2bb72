//! Records the git commit the broker is built from, for `sts_build_info{commit}` and
//! `--version`: `STS_BUILD_COMMIT` when the builder sets it (a release pipeline, a container
//! build without `.git`), else `git rev-parse --short=12 HEAD`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STS_BUILD_COMMIT");
    let from_git = || {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        // Rebuild when HEAD moves (a commit, a checkout); in a worktree `.git` is a file, so ask
        // git where HEAD and the branch ref live. Only this checkout's branch: watching all of
        // `refs/heads` rebuilt every worktree whenever any branch moved.
        let branch = Command::new("git")
            .args(["symbolic-ref", "-q", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|b| b.trim().to_owned());
        for path in ["HEAD", "packed-refs"] {
            if let Some(file) = git_path(path).filter(|f| std::path::Path::new(f).exists()) {
                println!("cargo:rerun-if-changed={file}");
            }
        }
        // Watched even while only `packed-refs` holds it: the next commit writes this file.
        if let Some(file) = branch.as_deref().and_then(git_path) {
            println!("cargo:rerun-if-changed={file}");
        }
        let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (!commit.is_empty()).then_some(commit)
    };
    let commit = std::env::var("STS_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=STS_BUILD_COMMIT={commit}");
}

/// Where git keeps `path` (`git rev-parse --git-path`), whether or not it exists yet.
fn git_path(path: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--git-path", path])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let file = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!file.is_empty()).then_some(file)
}
