//! `sts-broker audit verify --config FILE` as a real process, on the SQLite file a broker wrote:
//! exit 0 on the intact log, 1 naming the event someone edited in the database, 2 when it cannot
//! verify at all (and it never creates a database).

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::path::Path;
use std::process::Output;
use sts_broker::dev::{DevWorld, DEV_WORKSPACE};
use support::{spawn_dev_broker, BrokerApi};

/// Run `sts-broker audit verify --config CONFIG [ARGS…]` with `env` set.
async fn verify(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-broker"));
    command
        .args(["audit", "verify", "--config"])
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().await.unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// A broker that served one exchange and one mint on the world's SQLite file, then stopped.
async fn a_used_database() -> DevWorld {
    let (world, broker) = spawn_dev_broker(|_| {}).await;
    let http = reqwest::Client::new();
    let api = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    let session = api.main_session(&world).await;
    let minted = api.mint(&session, &["acme/modules"]).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    broker.stop().await.unwrap();
    world
}

/// The world's SQLite file, opened around the broker.
async fn database(world: &DevWorld) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(world.dir.path().join("sts-broker.db"));
    SqlitePool::connect_with(options).await.unwrap()
}

#[tokio::test]
async fn verify_exits_0_on_an_intact_log_and_1_naming_the_event_edited_in_the_database() {
    let world = a_used_database().await;
    let config = world.dir.path().join("broker.toml");

    let (code, stdout, stderr) = verify(&config, &[], &[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // workspace.create, 3 × installation.link, policy.put, exchange, mint: one chain.
    assert!(
        stdout.contains("audit log intact: 7 events in 1 chain verified"),
        "{stdout}"
    );

    // Someone with write access to the database turns the mint's outcome in its body.
    let db = database(&world).await;
    let (mint_id,): (String,) = sqlx::query_as("select id from audit_events where kind = 'mint'")
        .fetch_one(&db)
        .await
        .unwrap();
    let edited = sqlx::query(
        r#"update audit_events set body = replace(body, '"outcome":"success"', '"outcome":"denied"')
           where id = $1"#,
    )
    .bind(&mint_id)
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    db.close().await;

    let (code, stdout, stderr) = verify(&config, &[], &[]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(first.contains(&mint_id), "{stdout}");
    assert!(first.contains("workspace acme"), "{stdout}");
    assert!(first.contains("content"), "{stdout}");
    assert!(
        stdout.contains("audit log NOT intact: 1 of 1 chain broken; 6 events verified"),
        "{stdout}"
    );

    let (code, stdout, _) = verify(&config, &["--workspace", DEV_WORKSPACE], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    let (code, stdout, _) = verify(&config, &["--workspace", "other"], &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 events in 1 chain verified"), "{stdout}");
}

#[tokio::test]
async fn verify_exits_2_when_it_cannot_verify_and_never_creates_a_database() {
    let world = a_used_database().await;
    let dir = world.dir.path();

    let (code, _, stderr) = verify(&dir.join("missing.toml"), &[], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    let missing = dir.join("nowhere.db");
    let url = format!("sqlite://{}", missing.display());
    let (code, stdout, stderr) = verify(
        &dir.join("broker.toml"),
        &[],
        &[("STS_BROKER__DATABASE__URL", &url)],
    )
    .await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("cannot read the audit log"), "{stderr}");
    assert!(!missing.exists(), "verify created {}", missing.display());

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-broker"))
        .args(["audit", "verify"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "usage error");
}
