//! Audit export (contract §11) against a real receiver: a small axum server that is down at
//! first, then up, and answers 500 once. Every audit event arrives, each workspace's in chain
//! order, each body a CloudEvent whose signature verifies and whose `data` is what the audit API
//! shows.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sts_broker::dev::DEV_WORKSPACE;
use support::{reply, start_dev_broker, BrokerApi};

/// The webhook signing key of the test.
const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
/// Bounds a hang of the waits below; it measures nothing.
const WAIT_CAP: Duration = Duration::from_secs(120);

/// What the receiver saw: every request, in arrival order, with the status it answered.
#[derive(Default)]
struct Received {
    requests: Vec<(u16, HeaderMap, Vec<u8>)>,
    /// How many more requests to refuse with 500.
    refuse: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn receive(
    State(seen): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut seen = seen.lock().unwrap();
    let status = if seen.refuse > 0 {
        seen.refuse -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    seen.requests
        .push((status.as_u16(), headers, body.to_vec()));
    status
}

/// Wait until `done` holds, checking every 50 ms, at most [`WAIT_CAP`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT_CAP, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_receiver_that_was_down_then_failed_once_in_order_and_signed() {
    // The receiver's address, free while it is "down": connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (world, broker) = start_dev_broker(|world| {
        world.config.audit.webhook_url = Some(format!("http://{port}/hooks/sts?source=test"));
        world.config.audit.webhook_secret = Some(SecretString::from(SECRET));
        world.config.audit.webhook_max_backoff_seconds = 1;
    })
    .await;
    world.seed(&broker.url).await.unwrap();
    let http = reqwest::Client::new();
    let api = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    let session = api.main_session(&world).await;
    assert_eq!(api.mint(&session, &["acme/modules"]).await.status, 200);
    for ws in ["globex", "initech"] {
        let created = reply(
            http.post(format!("{}/api/v1/admin/workspaces", broker.url))
                .bearer_auth(&world.admin_token)
                .json(&json!({ "id": ws, "name": ws })),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.body);
    }

    // Down: deliveries fail and are retried; nothing is lost meanwhile.
    let failures = &broker.app.metrics.audit_export.failures;
    until("a failed delivery", || failures.get() >= 2).await;
    let pending = broker.app.store.outbox_backlog().await.unwrap().pending;
    assert!(pending >= 8, "{pending} events waiting");

    // Up, refusing the first request once.
    let seen: Shared = Arc::new(Mutex::new(Received {
        refuse: 1,
        ..Received::default()
    }));
    let receiver = axum::Router::new()
        .route("/hooks/sts", axum::routing::post(receive))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind(port).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let store = Arc::clone(&broker.app.store);
    let mut drained = false;
    let start = std::time::Instant::now();
    while !drained {
        assert!(start.elapsed() < WAIT_CAP, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
        drained = store.outbox_backlog().await.unwrap().pending == 0;
    }

    // What the audit API shows, per workspace, oldest first.
    let mut stored: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for ws in [DEV_WORKSPACE, "globex", "initech"] {
        let page = reply(
            http.get(format!(
                "{}/api/v1/admin/workspaces/{ws}/audit?limit=500",
                broker.url
            ))
            .bearer_auth(&world.admin_token),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let mut events = page.data()["events"].as_array().unwrap().clone();
        events.reverse();
        stored.insert(ws.to_owned(), events);
    }
    assert!(stored[DEV_WORKSPACE].len() >= 7, "{stored:?}");

    let requests = std::mem::take(&mut seen.lock().unwrap().requests);
    let refused = requests.iter().filter(|r| r.0 == 500).count();
    assert_eq!(refused, 1);
    let mut delivered: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (status, headers, body) in &requests {
        assert_eq!(
            headers["x-sts-signature"].to_str().unwrap(),
            format!("sha256={}", hmac_hex(body)),
            "the signature covers the exact body"
        );
        assert_eq!(headers["content-type"], "application/cloudevents+json");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            event["source"],
            broker.app.config.server.public_url.as_str()
        );
        assert_eq!(event["id"], event["data"]["id"]);
        assert_eq!(event["time"], event["data"]["time"]);
        assert_eq!(event["subject"], event["data"]["workspaceId"]);
        assert_eq!(
            event["type"],
            format!(
                "dev.sts-broker.audit.{}",
                event["data"]["kind"].as_str().unwrap()
            )
        );
        if *status == 204 {
            let ws = event["subject"].as_str().unwrap().to_owned();
            delivered.entry(ws).or_default().push(event["data"].clone());
        }
    }
    // Nothing lost, nothing out of order: each workspace's acknowledged events are exactly the
    // stored ones, in chain order (the 500 was retried before anything after it was sent).
    assert_eq!(delivered, stored);
    broker.stop().await.unwrap();
}
