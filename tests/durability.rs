//! Durability under group commit: the broker binary serves a burst of exchanges, is killed with
//! SIGKILL right after the 200s (more exchanges still in flight), and restarts on the same
//! database: the SQLite file, or a PostgreSQL schema (where a batch's exchanges are written
//! together). Everything a 200 promised must have been committed before it was sent: every
//! accepted OIDC token is refused as a replay, every session mints, every accepted exchange's
//! audit event is there, and `sts-broker audit verify` finds the hash chain intact.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use support::{main_job, BrokerApi, PgSchema, STARTUP_CAP};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

/// Exchanges answered before the kill: enough to fill several group commits.
const BURST: usize = 48;
/// Exchanges still in flight when the kill lands.
const IN_FLIGHT: usize = 32;
const CONFIG_FILE: &str = "durability.toml";

/// `sts-broker serve` on the world's config, on its SQLite file or on `postgres` (a database
/// URL), and its base URL once it listens. Its stdout is read to the end in the background, so
/// that its logs never block it.
async fn serve(world: &DevWorld, postgres: Option<&str>) -> (Child, String) {
    let mut command = support::serve_command(world, CONFIG_FILE, "");
    if let Some(url) = postgres {
        use_database(&world.dir.path().join(CONFIG_FILE), url);
    }
    let mut child = command.stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(listen) = event["fields"]["listen"].as_str() {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(listen.to_owned());
                }
            }
        }
    });
    let addr = tokio::time::timeout(STARTUP_CAP, rx)
        .await
        .expect("serve logged its bound address")
        .expect("serve exited before listening");
    (child, format!("http://{addr}"))
}

/// Exchange each of `tokens` at once; the accepted ones with their session and request id. A
/// request the kill cut off (no answer, or half a body) promised nothing and is left out.
async fn exchange_all(api: &BrokerApi<'_>, tokens: &[String]) -> Vec<Accepted> {
    let sent = join_all(tokens.iter().map(|oidc| async move {
        let res = api
            .http
            .post(api.url("/api/v1/auth/github-oidc"))
            .json(&json!({ "token": oidc, "workspaceId": DEV_WORKSPACE }))
            .send()
            .await
            .ok()?;
        if res.status() != 200 {
            return None;
        }
        let body: Value = res.json().await.ok()?;
        Some(Accepted {
            oidc: oidc.clone(),
            session: body["data"]["token"].as_str()?.to_owned(),
            request: body["request"].as_str()?.to_owned(),
        })
    }))
    .await;
    sent.into_iter().flatten().collect()
}

/// Point the configuration file at `url` instead of the world's SQLite file.
fn use_database(config: &Path, url: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let sqlite = text
        .lines()
        .find(|line| line.starts_with("url = \"sqlite://"))
        .expect("the world's config names its SQLite file")
        .to_owned();
    std::fs::write(config, text.replace(&sqlite, &format!("url = {url:?}"))).unwrap();
}

/// An exchange the broker answered with 200.
struct Accepted {
    oidc: String,
    session: String,
    request: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_200_promised_survives_sigkill_and_the_audit_chain_verifies() {
    survives_sigkill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_what_a_200_promised_survives_sigkill_and_the_audit_chain_verifies() {
    let schema = PgSchema::create("durability").await;
    survives_sigkill(Some(&schema.url())).await;
    schema.drop_schema().await;
}

/// The test, on the world's SQLite file or on the PostgreSQL database `postgres`.
async fn survives_sigkill(postgres: Option<&str>) {
    let placeholder = "127.0.0.1:9".parse().unwrap();
    let world = DevWorld::start(placeholder).await.unwrap();
    let (mut broker, base) = serve(&world, postgres).await;
    world.seed(&base).await.unwrap();
    let http = reqwest::Client::new();
    let tokens: Vec<String> = (0..BURST + IN_FLIGHT)
        .map(|_| world.issuer.token_for(&main_job(), DEV_AUDIENCE))
        .collect();
    let (burst, late) = tokens.split_at(BURST);

    let mut accepted = {
        let api = BrokerApi {
            http: &http,
            base: &base,
        };
        exchange_all(&api, burst).await
    };
    assert_eq!(
        accepted.len(),
        BURST,
        "every exchange of the burst is accepted"
    );
    // More exchanges on their way while the kill lands: any of them answered 200 counts too.
    let in_flight = {
        let (http, base, late) = (http.clone(), base.clone(), late.to_vec());
        tokio::spawn(async move {
            let api = BrokerApi {
                http: &http,
                base: &base,
            };
            exchange_all(&api, &late).await
        })
    };
    broker.start_kill().unwrap();
    let status = broker.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    accepted.extend(in_flight.await.unwrap());

    let (mut restarted, base) = serve(&world, postgres).await;
    let api = BrokerApi {
        http: &http,
        base: &base,
    };
    for exchange in &accepted {
        let again = api.exchange(&exchange.oidc, DEV_WORKSPACE).await;
        assert_eq!(
            (again.status, again.tag()),
            (401, "token_replayed"),
            "an accepted token is refused after the restart: {}",
            again.body
        );
    }
    let mints = join_all(
        accepted
            .iter()
            .map(|exchange| api.mint(&exchange.session, &["acme/modules"])),
    )
    .await;
    for mint in mints {
        assert_eq!(mint.status, 200, "the session still mints: {}", mint.body);
    }
    restarted.start_kill().unwrap();
    restarted.wait().await.unwrap();

    let bodies = audit_bodies(world.dir.path(), postgres).await;
    let audited: HashSet<String> = bodies
        .iter()
        .map(|body| serde_json::from_str::<Value>(body).unwrap())
        .filter(|event| event["action"] == "exchange" && event["outcome"] == "success")
        .filter_map(|event| event["requestId"].as_str().map(str::to_owned))
        .collect();
    for exchange in &accepted {
        assert!(
            audited.contains(&exchange.request),
            "the audit event of request {} is there",
            exchange.request
        );
    }

    let verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-broker"))
        .args(["audit", "verify", "--config"])
        .arg(world.dir.path().join(CONFIG_FILE))
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Every stored audit event's body, read around the broker.
async fn audit_bodies(dir: &Path, postgres: Option<&str>) -> Vec<String> {
    const BODIES: &str = "select body from audit_events";
    match postgres {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let bodies = sqlx::query_scalar(BODIES).fetch_all(&pool).await.unwrap();
            pool.close().await;
            bodies
        }
        None => {
            let options = SqliteConnectOptions::new()
                .filename(dir.join("sts-broker.db"))
                .read_only(true);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            let bodies = sqlx::query_scalar(BODIES).fetch_all(&pool).await.unwrap();
            pool.close().await;
            bodies
        }
    }
}
