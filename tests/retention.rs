//! `[retention]` reaches the broker from the file and from `STS_BROKER__RETENTION__*`, as
//! `sts-broker check-config` reports it, and a value out of range is refused naming its key;
//! so are a trace endpoint that is not a URL (from the file or `OTEL_*`) and a bad
//! `admin_listen`.
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
        .env_remove("STS_BROKER__RETENTION__TOKENS_DAYS")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

/// `check-config` accepts the configuration at `path` with `env` and prints `line`.
fn accepted(path: &Path, env: &[(&str, &str)], line: &str) {
    let (code, out) = check_config(path, env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(line), "{out}");
}

/// `check-config` refuses the configuration at `path` with `env`, saying `error`.
fn refused(path: &Path, env: &[(&str, &str)], error: &str) -> String {
    let (code, out) = check_config(path, env);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(error), "{out}");
    out
}

#[test]
fn retention_comes_from_defaults_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    accepted(
        &path,
        &[],
        "retention   sessions 30 days, tokens 90 days after expiry",
    );
    let path = config(dir.path(), "[retention]\nsessions_days = 7\n");
    accepted(
        &path,
        &[("STS_BROKER__RETENTION__TOKENS_DAYS", "365")],
        "retention   sessions 7 days, tokens 365 days after expiry",
    );
    refused(
        &path,
        &[("STS_BROKER__RETENTION__SESSIONS_DAYS", "0")],
        "retention.sessions_days: must be between 1 and 3650",
    );
}

#[test]
fn trace_endpoints_and_the_admin_listener_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    accepted(&path, &[], "traces      not exported");
    let endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT";
    accepted(
        &path,
        &[(endpoint, "http://c:4318")],
        "traces      OTLP/HTTP as OTEL_EXPORTER_OTLP_* say",
    );
    refused(
        &path,
        &[(endpoint, "notaurl")],
        "OTEL_EXPORTER_OTLP_ENDPOINT: `notaurl` is not a URL",
    );
    refused(
        &path,
        &[("STS_BROKER__SERVER__ADMIN_LISTEN", "not-an-address")],
        "server.admin_listen: `not-an-address` is not an ip:port address",
    );
    let path = config(
        dir.path(),
        "[telemetry]\notlp_endpoint = \"http://collector:4318\"\n",
    );
    accepted(
        &path,
        &[],
        "traces      OTLP/HTTP to http://collector:4318/v1/traces",
    );
    for (endpoint, error) in [
        ("notaurl", "telemetry.otlp_endpoint: `notaurl` is not a URL"),
        (
            "https://user:secret@collector",
            "telemetry.otlp_endpoint: must not carry credentials",
        ),
    ] {
        let extra = format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n");
        let out = refused(&config(dir.path(), &extra), &[], error);
        assert!(!out.contains("secret"), "{out}");
    }
}
