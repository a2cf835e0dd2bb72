//! Tests of configuration loading and validation.

use super::urls::check_raw_fetch_url;
use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use secrecy::ExposeSecret as _;
use std::path::Path;
use url::Url;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn valid_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = sts_sim::keys::RsaKeyPair::generate();
    write(
        dir.path(),
        "app.pem",
        key.private_pkcs1_pem().expose_secret(),
    );
    write(dir.path(), "admin-token", &"a".repeat(40));
    write(dir.path(), "token-key", &STANDARD.encode([7u8; 32]));
    dir
}

/// A valid file, shared with the `check-config` tests; it names the files [`valid_dir`] writes.
const VALID: &str = include_str!("../../tests/fixtures/config/broker.toml");

#[test]
fn a_valid_file_loads_and_resolves_files_next_to_it() {
    let dir = valid_dir();
    let path = write(dir.path(), "broker.toml", VALID);
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.github.api_url, "https://api.github.com");
    assert_eq!(config.session.ttl_seconds, 3600);
    assert_eq!(config.admin_token().unwrap().expose_secret().len(), 40);
    assert_eq!(config.token_key().unwrap().expose_secret(), &[7u8; 32]);
}

#[test]
fn debug_output_hides_the_database_password_and_inline_secrets() {
    let dir = valid_dir();
    let body = format!("{VALID}\n").replace(
        "token_file = \"admin-token\"",
        &format!("token = \"{}\"", "s3cr3t-admin-token-value-xxxxxxxxxxxxx"),
    );
    let path = write(dir.path(), "broker.toml", &body);
    let config = Config::load(Some(&path)).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("s3cr3t-admin-token"), "{debug}");
    assert!(debug.contains("REDACTED"));
    let secrets = config.secrets().unwrap();
    assert_eq!(format!("{secrets:?}"), "Secrets { .. }");
}

#[test]
fn errors_name_every_bad_key_at_once() {
    let dir = valid_dir();
    let body = VALID
        .replace("127.0.0.1:0", "not-an-address")
        .replace(
            "encryption_key_file = \"token-key\"",
            "encryption_key = \"c2hvcnQ=\"",
        )
        .replace(
            "https://token.actions.githubusercontent.com",
            "http://issuer.example.com",
        );
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("tokens.encryption_key"), "{err}");
    assert!(err.contains("oidc.issuers[0].issuer"), "{err}");
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let dir = valid_dir();
    let body = VALID
        .replace("[session]", "")
        .replace("[admin]", "[admin]\ntokn = \"x\"");
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(err.contains("tokn"), "{err}");
}

#[test]
fn loopback_means_127_0_0_0_slash_8_ipv6_loopback_or_exactly_localhost() {
    let cases = [
        ("http://127.0.0.1:8080", true),
        ("http://127.1.2.3", true),
        ("https://127.0.0.1", true),
        ("http://[::1]:8080", true),
        ("http://localhost:9999", true),
        ("http://LocalHost", true),
        ("http://localhost.example.com", false),
        ("http://127.0.0.1.evil.com", false),
        ("http://10.0.0.1", false),
        ("http://0.0.0.0", false),
        ("http://[::]:80", false),
        ("http://[::ffff:127.0.0.1]", false),
        ("http://example.com", false),
        ("file:///etc/passwd", false),
    ];
    for (raw, loopback) in cases {
        let url = Url::parse(raw).unwrap();
        assert_eq!(is_loopback_url(&url), loopback, "{raw}");
    }
}

#[test]
fn url_rules_accept_https_and_loopback_http_only() {
    let cases = [
        ("https://token.actions.githubusercontent.com", false, true),
        ("https://example.com/x", true, true),
        ("http://127.0.0.1:8080", true, true),
        ("http://127.1.2.3:8080", true, true),
        ("http://[::1]:8080", true, true),
        ("http://localhost:8080", true, true),
        ("http://LOCALHOST:8080", true, true),
        ("http://127.0.0.1:8080", false, false),
        ("http://example.com", true, false),
        ("http://localhost.example.com", true, false),
        ("http://127.0.0.1.evil.com", true, false),
        ("http://10.0.0.1", true, false),
        ("ftp://127.0.0.1", true, false),
        ("https://user:pass@example.com", false, false),
    ];
    // The rule on a parsed URL and on a configured string (which `validate` applies) agree.
    for (url, allow_http, ok) in cases {
        let parsed = Url::parse(url).unwrap();
        assert_eq!(
            check_fetch_url(&parsed, allow_http).is_ok(),
            ok,
            "{url} allow_http={allow_http}"
        );
        assert_eq!(
            check_raw_fetch_url(url, allow_http).is_ok(),
            ok,
            "raw {url} allow_http={allow_http}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_key() {
    let dir = valid_dir();
    let body = format!("{VALID}\n[telemetry]\nlog_format = \"xml\"\n");
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(err.contains("log_format"), "{err}");
    let body = format!("{VALID}\n[telemetry]\nlog_format = \"json\"\n");
    let path = write(dir.path(), "broker.toml", &body);
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
}

#[test]
fn redact_url_keeps_everything_but_the_password() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/db"),
        "postgres://u:REDACTED@h:5432/db"
    );
    assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
}

#[test]
fn limits_default_to_the_documented_values() {
    let dir = valid_dir();
    let path = write(dir.path(), "broker.toml", VALID);
    let limits = Config::load(Some(&path)).unwrap().limits;
    assert_eq!(limits.session_mints_per_minute, 60);
    assert_eq!(limits.workspace_mints_per_minute, 1200);
    assert_eq!(limits.max_connections, 10_000);
    assert_eq!(limits.header_read_timeout_seconds, 10);
    assert_eq!(limits.shutdown_grace_seconds, 20);
}

#[test]
fn limits_are_read_from_the_file_and_bad_ones_are_named() {
    let dir = valid_dir();
    let body = format!(
        "{VALID}\n[limits]\nsession_mints_per_minute = 2\nworkspace_mints_per_minute = 5\n\
         max_connections = 3\nheader_read_timeout_seconds = 1\nshutdown_grace_seconds = 2\n"
    );
    let path = write(dir.path(), "broker.toml", &body);
    let limits = Config::load(Some(&path)).unwrap().limits;
    assert_eq!(limits.session_mints_per_minute, 2);
    assert_eq!(limits.workspace_mints_per_minute, 5);
    assert_eq!(limits.max_connections, 3);
    assert_eq!(
        limits.header_read_timeout(),
        std::time::Duration::from_secs(1)
    );
    assert_eq!(limits.shutdown_grace(), std::time::Duration::from_secs(2));

    let body = format!(
        "{VALID}\n[limits]\nsession_mints_per_minute = 0\nworkspace_mints_per_minute = 0\n\
         max_connections = 0\nheader_read_timeout_seconds = 0\nshutdown_grace_seconds = 86400\n"
    );
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    for key in [
        "limits.session_mints_per_minute",
        "limits.workspace_mints_per_minute",
        "limits.max_connections",
        "limits.header_read_timeout_seconds",
        "limits.shutdown_grace_seconds",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }

    let body = format!("{VALID}\n[limits]\nmax_conections = 3\n");
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(err.contains("max_conections"), "{err}");
}

#[test]
fn a_limit_is_overridden_by_its_environment_variable() {
    // The process environment is shared by every test of this binary: this key is one no other
    // test reads, and any value set is a valid one.
    let dir = valid_dir();
    let body = format!("{VALID}\n[limits]\nshutdown_grace_seconds = 5\n");
    let path = write(dir.path(), "broker.toml", &body);
    std::env::set_var("STS_BROKER__LIMITS__SHUTDOWN_GRACE_SECONDS", "7");
    let loaded = Config::load(Some(&path));
    std::env::remove_var("STS_BROKER__LIMITS__SHUTDOWN_GRACE_SECONDS");
    assert_eq!(loaded.unwrap().limits.shutdown_grace_seconds, 7);
}

#[test]
fn retention_defaults_to_30_and_90_days_and_refuses_values_out_of_range() {
    let dir = valid_dir();
    let path = write(dir.path(), "broker.toml", VALID);
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(
        config.retention.sessions_days,
        DEFAULT_SESSION_RETENTION_DAYS
    );
    assert_eq!(config.retention.tokens_days, DEFAULT_TOKEN_RETENTION_DAYS);

    let body = format!("{VALID}\n[retention]\nsessions_days = 7\ntokens_days = 3650\n");
    let path = write(dir.path(), "broker.toml", &body);
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(
        (config.retention.sessions_days, config.retention.tokens_days),
        (7, 3650)
    );

    let body = format!("{VALID}\n[retention]\nsessions_days = 0\ntokens_days = 3651\n");
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(
        err.contains("retention.sessions_days: must be between 1 and 3650"),
        "{err}"
    );
    assert!(
        err.contains("retention.tokens_days: must be between 1 and 3650"),
        "{err}"
    );

    let body = format!("{VALID}\n[retention]\nsession_days = 7\n");
    let path = write(dir.path(), "broker.toml", &body);
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(err.contains("session_days"), "{err}");
}

/// `VALID` with `[database]` reading its URL from the file `db-url` instead.
fn with_url_file() -> String {
    VALID.replace(
        "url = \"postgres://sts:hunter2@db:5432/sts\"",
        "url_file = \"db-url\"",
    )
}

#[test]
fn the_database_url_is_read_from_url_file_without_its_trailing_newline() {
    let dir = valid_dir();
    write(
        dir.path(),
        "db-url",
        "postgres://sts:from-file-pw@db:5432/sts\n",
    );
    let path = write(dir.path(), "broker.toml", &with_url_file());
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(
        config.database.url.expose_secret(),
        "postgres://sts:from-file-pw@db:5432/sts"
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("from-file-pw"), "{debug}");
    assert!(debug.contains("db-url"), "{debug}");
}

#[test]
fn url_and_url_file_together_or_an_empty_or_missing_file_are_named_errors() {
    let dir = valid_dir();
    write(
        dir.path(),
        "db-url",
        "postgres://sts:from-file-pw@db:5432/sts",
    );
    write(dir.path(), "empty-url", "\n");
    let both = with_url_file().replace(
        "url_file = \"db-url\"",
        "url_file = \"db-url\"\nurl = \"postgres://sts:inline-pw@db/sts\"",
    );
    let empty = with_url_file().replace("\"db-url\"", "\"empty-url\"");
    let missing = with_url_file().replace("\"db-url\"", "\"no-such-file\"");
    for (body, expected) in [
        (both, "not both"),
        (empty, "empty-url is empty"),
        (missing, "cannot read"),
    ] {
        let path = write(dir.path(), "broker.toml", &body);
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("database.url_file"), "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("pw"), "a database password in {err}");
    }
}

#[test]
fn a_bad_url_from_url_file_is_refused_without_showing_it() {
    let dir = valid_dir();
    write(dir.path(), "db-url", "mysql://sts:from-file-pw@db/sts\n");
    let path = write(dir.path(), "broker.toml", &with_url_file());
    let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
    assert!(err.contains("database.url: must start with"), "{err}");
    assert!(!err.contains("from-file-pw"), "{err}");
}

#[test]
fn the_audit_webhook_needs_https_and_a_long_enough_key_and_previous_sealing_keys_are_checked() {
    let dir = valid_dir();
    write(dir.path(), "webhook-secret", &"w".repeat(32));
    write(dir.path(), "old-key", &STANDARD.encode([8u8; 32]));
    let good = format!(
        "{VALID}previous_encryption_key_files = [\"old-key\"]\n[audit]\n\
         webhook_url = \"https://siem.example.com/hooks/sts?token=x\"\n\
         webhook_secret_file = \"webhook-secret\"\n"
    );
    let config = Config::load(Some(&write(dir.path(), "good.toml", &good))).unwrap();
    assert_eq!(config.webhook_secret().unwrap().expose_secret().len(), 32);
    assert_eq!(config.audit.webhook_max_backoff_seconds, 300);
    assert_eq!(config.secrets().unwrap().previous_token_keys.len(), 1);

    write(dir.path(), "short-secret", "too-short");
    let bad = format!(
        "{VALID}previous_encryption_key_files = [\"missing-key\"]\n[audit]\n\
         webhook_url = \"http://siem.example.com/hooks\"\n\
         webhook_secret_file = \"short-secret\"\nwebhook_max_backoff_seconds = 0\n"
    );
    let err = Config::load(Some(&write(dir.path(), "bad.toml", &bad)))
        .unwrap_err()
        .to_string();
    for key in [
        "tokens.previous_encryption_key_files[0]: cannot read",
        "audit.webhook_url: http is allowed only on a loopback host",
        "audit.webhook_secret_file / audit.webhook_secret: must be at least 32 characters",
        "audit.webhook_max_backoff_seconds: must be between 1 and 3600",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
    assert!(!err.contains("too-short"), "{err}");

    let orphan = format!("{VALID}[audit]\nwebhook_secret_file = \"webhook-secret\"\n");
    let err = Config::load(Some(&write(dir.path(), "orphan.toml", &orphan)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.webhook_secret_file: set without audit.webhook_url"),
        "{err}"
    );
}
