//! Messages for the person reading the log, on stderr (stdout belongs to `env` output and to the
//! child of `exec`). Nothing here ever prints a token.

use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silence notes (warnings and errors still print).
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Progress and summaries.
pub(crate) fn note(message: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        eprintln!("sts-client: {message}");
    }
}

/// Something the user should look at; in GitHub Actions also an annotation on the run.
pub(crate) fn warn(message: &str) {
    if in_github_actions() {
        eprintln!(
            "::warning title=sts-client::{}",
            escape_command_data(message)
        );
    } else {
        eprintln!("sts-client: warning: {message}");
    }
}

/// The failure that ends the run.
pub(crate) fn error(message: &str) {
    eprintln!("sts-client: error: {message}");
}

/// Running inside a GitHub Actions job (the runner sets this).
pub(crate) fn in_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Workflow command data escaping (`%`, CR, LF), as `@actions/core` does.
pub(crate) fn escape_command_data(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}
