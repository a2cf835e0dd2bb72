//! Limits of the server: a request head must arrive within `limits.header_read_timeout_seconds`,
//! at most `limits.max_connections` connections are served at once, SIGTERM drains for at most
//! `limits.shutdown_grace_seconds` before the process exits, and a flood of refusals or failures
//! writes a bounded number of log lines. The first two run the server in this process (the same
//! `http::serve` the binary runs); the others run `sts-broker serve --config` as a process.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use serde_json::Value;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sts_broker::config::Config;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::JwksBody;
use support::STARTUP_CAP;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// How long a connection the server should close may take to be closed, well above the 1 s
/// timeout or grace the tests configure and well below the 30 s request timeout that would
/// otherwise end them.
const CLOSE_CAP: Duration = Duration::from_secs(10);

/// A whole request for `/healthz` that keeps the connection open.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n";

/// The broker in this process, with `configure` applied to its limits. Nothing is seeded.
async fn broker(configure: impl FnOnce(&mut Config)) -> (DevWorld, RunningBroker) {
    support::start_dev_broker(|world| configure(&mut world.config)).await
}

/// Read until the server closes the connection (end of stream or reset); `None` if it is still
/// open after `cap`.
async fn closed_within(conn: &mut TcpStream, cap: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(cap, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Send `/healthz` on `conn` and read the status line, if one comes within `cap`.
async fn healthz(conn: &mut TcpStream, cap: Duration) -> Option<String> {
    conn.write_all(HEALTHZ).await.ok()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let read = tokio::time::timeout(cap, reader.read_line(&mut line)).await;
    // Drain the rest of the answer (headers and the small JSON body) so the next request on this
    // connection starts clean.
    if matches!(read, Ok(Ok(n)) if n > 0) {
        let mut rest = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), reader.read(&mut rest)).await;
        Some(line)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_request_head_is_closed() {
    let (_world, broker) = broker(|c| c.limits.header_read_timeout_seconds = 1).await;

    // One sends half a request line, one sends nothing at all.
    let opened = Instant::now();
    let mut slow = TcpStream::connect(broker.addr).await.unwrap();
    slow.write_all(b"GET /heal").await.unwrap();
    let mut silent = TcpStream::connect(broker.addr).await.unwrap();
    for conn in [&mut slow, &mut silent] {
        let closed = closed_within(conn, CLOSE_CAP).await;
        closed.expect("a connection with no whole request head must not be held");
        let after = opened.elapsed();
        assert!(
            after >= Duration::from_millis(800),
            "closed after {after:?}"
        );
    }

    // A client that sends its head at once is served as before.
    let mut prompt = TcpStream::connect(broker.addr).await.unwrap();
    let status = healthz(&mut prompt, CLOSE_CAP).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_waits_until_one_closes() {
    let (_world, broker) = broker(|c| {
        c.limits.max_connections = 2;
        c.limits.header_read_timeout_seconds = 60;
    })
    .await;

    // Two connections, each served once and then held open (keep-alive).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(broker.addr).await.unwrap();
        let status = healthz(&mut conn, CLOSE_CAP).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK\r\n"));
        held.push(conn);
    }

    // The kernel completes the third handshake, but the broker does not take it on.
    let mut third = TcpStream::connect(broker.addr).await.unwrap();
    let waiting = healthz(&mut third, Duration::from_millis(1500)).await;
    assert_eq!(
        waiting, None,
        "a third connection was served while two were held"
    );

    // Once one of the two closes, the third is served.
    drop(held.remove(0));
    let mut reader = BufReader::new(&mut third);
    let mut line = String::new();
    tokio::time::timeout(CLOSE_CAP, reader.read_line(&mut line))
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    assert_eq!(line, "HTTP/1.1 200 OK\r\n");
}

/// `sts-broker serve --config` as a process, on the simulators of `world`, logging JSON, with
/// `limits` as its `[limits]` section. Its stdout lines are collected in the returned vector as
/// they arrive.
async fn serve_process(
    world: &DevWorld,
    limits: &str,
) -> (tokio::process::Child, String, Arc<Mutex<Vec<String>>>) {
    let mut child = support::serve_command(world, "limits.toml", &format!("[limits]\n{limits}"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(STARTUP_CAP, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                if let Some(listen) = event["fields"]["listen"].as_str() {
                    return listen.to_owned();
                }
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve logged its bound address");
    // Keep reading the log, so the child never blocks on a full pipe.
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    (child, addr, log)
}

/// SIGTERM `child`, wait at most [`CLOSE_CAP`] for it to exit successfully, and say how long it
/// took.
async fn terminate(child: &mut tokio::process::Child) -> Duration {
    let pid = child.id().unwrap();
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let start = Instant::now();
    let status = tokio::time::timeout(CLOSE_CAP, child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running {:?} after SIGTERM", start.elapsed()))
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_grace_while_connections_are_held() {
    // The broker runs as a process; its `public_url` placeholder is never dialled.
    let world = DevWorld::start("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    let (mut child, addr, _log) = serve_process(
        &world,
        "shutdown_grace_seconds = 1\nheader_read_timeout_seconds = 60\n",
    )
    .await;

    // One connection idle in the middle of its request line, one in the middle of a request body
    // (a handler waiting for bytes that never come), one idle between requests.
    let mut half_line = TcpStream::connect(&addr).await.unwrap();
    half_line.write_all(b"POST /api/v1/au").await.unwrap();
    let mut half_body = TcpStream::connect(&addr).await.unwrap();
    half_body
        .write_all(
            b"POST /api/v1/auth/github-oidc HTTP/1.1\r\nHost: broker\r\n\
              Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"token\":",
        )
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    assert!(healthz(&mut idle, CLOSE_CAP).await.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `terminate` fails the test if the process outlives CLOSE_CAP, far below the 30 s request
    // timeout that would otherwise end the half-sent body.
    terminate(&mut child).await;
    // The held connections are closed, not left dangling.
    for conn in [&mut half_line, &mut half_body, &mut idle] {
        assert!(closed_within(conn, CLOSE_CAP).await.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_and_failures_writes_a_bounded_number_of_log_lines() {
    const FLOOD: usize = 300;
    let world = DevWorld::start("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    // The issuer's keys are unreadable: genuine tokens get 503 issuer_unavailable.
    world
        .issuer
        .set_jwks_override(Some(JwksBody::Raw("not a key set".to_owned())));
    let (mut child, addr, log) = serve_process(&world, "").await;
    let http = reqwest::Client::new();
    let exchange = |token: String| {
        http.post(format!("http://{addr}/api/v1/auth/github-oidc"))
            .json(&serde_json::json!({ "token": token, "workspaceId": "anyone" }))
            .send()
    };
    let start = Instant::now();
    for _ in 0..FLOOD {
        let refused = exchange("not.a.jwt".to_owned()).await.unwrap();
        assert_eq!(refused.status(), 401);
        let token = world.issuer.token_for(&Default::default(), DEV_AUDIENCE);
        let unavailable = exchange(token).await.unwrap();
        assert_eq!(unavailable.status(), 503);
    }
    let windows = u32::try_from(start.elapsed().as_secs() / 10).unwrap() + 1;
    terminate(&mut child).await;

    let lines = log.lock().unwrap().clone();
    let messages: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            e["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let count = |needle: &str| messages.iter().filter(|m| m.contains(needle)).count();
    let refusals = count("refused");
    let failures = count("request failed");
    let budget = |lines: u32| usize::try_from(lines * windows).unwrap();
    assert!(
        refusals <= budget(sts_broker::limits::REFUSAL_LOG_LINES),
        "{refusals} refusal lines for {FLOOD} refusals in {windows} windows"
    );
    assert!(
        failures <= budget(sts_broker::limits::FAILURE_LOG_LINES),
        "{failures} failure lines for {FLOOD} failures in {windows} windows"
    );
    assert!(
        lines.len() < FLOOD,
        "{} log lines for {} requests: {lines:#?}",
        lines.len(),
        2 * FLOOD
    );
}
