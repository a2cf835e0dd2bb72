//! `sts-broker serve --config FILE` as a real process: it starts, logs its bound address, serves
//! an exchange and a mint, logs one JSON object per line with the request id and no secret, and
//! exits 0 on SIGTERM; a start that fails names what it could not reach, and why. And
//! `sts-broker healthcheck`, the container probe, run as a process against a broker that is
//! healthy, one that is live but not ready, and none.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use serde_json::{json, Value};
use std::process::Stdio;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use support::{main_job, start_dev_broker, BrokerApi, ServeProcess, STARTUP_CAP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_as_a_process_logs_json_without_secrets_and_stops_on_sigterm() {
    // The simulators run in this test; the broker picks its own port (`listen = ...:0`). The
    // placeholder only ends up in `public_url`, which names the session JWT issuer and is never
    // dialled.
    let placeholder = "127.0.0.1:9".parse().unwrap();
    let world = DevWorld::start(placeholder).await.unwrap();
    let mut serve = ServeProcess::start(support::serve_command(&world, "serve.toml", ""));
    let addr = serve.listening_address().await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    world.seed(&base).await.unwrap();

    let api = BrokerApi {
        http: &http,
        base: &base,
    };
    let oidc = world.issuer.token_for(&main_job(), DEV_AUDIENCE);
    let exchange = api.exchange(&oidc, DEV_WORKSPACE).await;
    assert_eq!(exchange.body["success"], true, "{}", exchange.body);
    let session = exchange.data()["token"].as_str().unwrap().to_owned();
    let mint = api
        .sts(
            &session,
            json!({ "sources": ["acme/modules"], "policyName": "default" }),
        )
        .await;
    assert_eq!(mint.body["success"], true, "{}", mint.body);
    let minted = mint.data()["tokens"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(world.github.token_is_live(&minted));
    let mint_request_id = mint.body["request"].as_str().unwrap().to_owned();

    let lines = serve.stop().await;
    let events: Vec<Value> = lines
        .iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(event.is_object(), "{line}");
            event
        })
        .collect();
    // The mint's log line sits inside the request span, which carries the request id.
    let request_ids = support::mint_line_span_fields(&events, "request_id");
    assert_eq!(request_ids, [mint_request_id]);
    assert!(
        events.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutdown signal received"))),
        "{lines:#?}"
    );

    let all = lines.join("\n");
    let token_key = std::fs::read_to_string(world.dir.path().join("token-key")).unwrap();
    for (name, secret) in [
        ("minted token", minted.as_str()),
        ("admin token", world.admin_token.as_str()),
        ("OIDC token", oidc.as_str()),
        ("session token", session.as_str()),
        ("token sealing key", token_key.trim()),
    ] {
        assert!(!secret.is_empty(), "{name}");
        assert!(!all.contains(secret), "the {name} is in the logs");
    }
    // Parts of a JWT (its signature) must not leak either.
    for jwt in [&oidc, &session] {
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!all.contains(signature), "a JWT signature is in the logs");
    }
}

/// `sts-broker healthcheck --config CONFIG`: its exit code, stdout and stderr.
async fn healthcheck(config: &std::path::Path) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-broker"))
        .arg("healthcheck")
        .arg("--config")
        .arg(config)
        .env_remove("STS_BROKER__SERVER__LISTEN")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_when_live_and_ready_and_1_when_not_ready_or_not_running() {
    let (world, broker) = start_dev_broker(|_| {}).await;
    // The dev world's broker.toml names the address the broker is listening on.
    let config = world.dir.path().join("broker.toml");
    let body = std::fs::read_to_string(&config).unwrap();
    let listen = format!("listen = \"{}\"", broker.addr);
    assert!(body.contains(&listen), "{body}");

    let (code, stdout, stderr) = healthcheck(&config).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("/healthz: 200") && stdout.contains("/readyz: 200"),
        "{stdout}"
    );

    // Live but not ready: what /readyz answers while the database is unreachable.
    let not_ready = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"database unreachable"}"#,
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let not_ready_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, not_ready).await });
    let not_ready_config = world.dir.path().join("not-ready.toml");
    std::fs::write(
        &not_ready_config,
        body.replace(&listen, &format!("listen = \"{not_ready_addr}\"")),
    )
    .unwrap();
    let (code, stdout, stderr) = healthcheck(&not_ready_config).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("/readyz: 503"), "{stderr}");
    assert!(stderr.contains("database unreachable"), "{stderr}");

    // Nothing listening any more.
    broker.stop().await.unwrap();
    let (code, stdout, stderr) = healthcheck(&config).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

// Starts that fail: the error names what could not be reached (the database's host and port, the
// SQLite file, the listen address) and why, and never the database password.

/// A password that must never be printed.
const PASSWORD: &str = "hunter2-never-printed";

/// Run `serve` with the dev world's config and `env` overrides; it must fail. Its stderr.
async fn failed_start(env: &[(&str, &str)]) -> String {
    let world = DevWorld::start("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    let out = support::serve_command(&world, "serve.toml", "")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .output();
    let out = tokio::time::timeout(STARTUP_CAP, out)
        .await
        .expect("serve gave up in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    stderr
}

#[track_caller]
fn assert_says(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_database_names_its_host_and_port() {
    // Port 1 on loopback: nothing listens there.
    let url = format!("postgres://broker:{PASSWORD}@127.0.0.1:1/sts");
    let stderr = failed_start(&[("STS_BROKER__DATABASE__URL", &url)]).await;
    assert_says(
        &stderr,
        &["PostgreSQL at 127.0.0.1:1", "connection refused"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_the_login_says_authentication() {
    let base = std::env::var("STS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut url = url::Url::parse(&base).unwrap();
    url.set_username("no_such_broker_role").unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    let stderr = failed_start(&[("STS_BROKER__DATABASE__URL", url.as_str())]).await;
    assert_says(&stderr, &["authentication failed", "no_such_broker_role"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_times_out_and_says_so() {
    // Accepts connections and never speaks: the login cannot complete.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let url = format!("postgres://broker:{PASSWORD}@{addr}/sts");
    let stderr = failed_start(&[("STS_BROKER__DATABASE__URL", &url)]).await;
    held.abort();
    assert_says(&stderr, &[&format!("PostgreSQL at {addr}"), "timed out"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("broker.db");
    let url = format!("sqlite://{}", path.display());
    let stderr = failed_start(&[("STS_BROKER__DATABASE__URL", &url)]).await;
    assert_says(&stderr, &[&format!("SQLite database {}", path.display())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_listen_address_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let stderr = failed_start(&[("STS_BROKER__SERVER__LISTEN", &addr)]).await;
    assert_says(&stderr, &[&format!("cannot listen on {addr}"), "in use"]);
}
