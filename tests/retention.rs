//! `[retention]` reaches the broker from the file and from `STS_BROKER__RETENTION__*`, as
//! `sts-broker check-config` reports it, and a value out of range is refused naming its key.
//! (A real process: environment overrides are read from the process environment, which tests
//! running in parallel must not share.)

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

use base64::Engine as _;
use secrecy::ExposeSecret as _;
use std::path::Path;

/// The valid configuration the unit tests load too, in `dir` with the files it names, and `extra`
/// appended.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let key = sts_sim::keys::RsaKeyPair::generate();
    std::fs::write(dir.join("app.pem"), key.private_pkcs1_pem().expose_secret()).unwrap();
    std::fs::write(dir.join("admin-token"), "a".repeat(40)).unwrap();
    let token_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    std::fs::write(dir.join("token-key"), token_key).unwrap();
    let body = format!("{}\n{extra}", include_str!("fixtures/config/broker.toml"));
    let path = dir.join("broker.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// `sts-broker check-config --config PATH` with `env`: exit code and stdout + stderr.
fn check_config(path: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sts-broker"));
    command
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("STS_BROKER__RETENTION__SESSIONS_DAYS")
        .env_remove("STS_BROKER__RETENTION__TOKENS_DAYS");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[test]
fn retention_comes_from_defaults_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("retention   sessions 30 days, tokens 90 days after expiry"),
        "{out}"
    );

    let path = config(dir.path(), "[retention]\nsessions_days = 7\n");
    let (code, out) = check_config(&path, &[("STS_BROKER__RETENTION__TOKENS_DAYS", "365")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("retention   sessions 7 days, tokens 365 days after expiry"),
        "{out}"
    );

    let (code, out) = check_config(&path, &[("STS_BROKER__RETENTION__SESSIONS_DAYS", "0")]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("retention.sessions_days: must be between 1 and 3650"),
        "{out}"
    );
}
