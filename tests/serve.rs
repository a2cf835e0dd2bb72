//! `sts-broker serve --config FILE` as a real process: it starts, logs its bound address, serves
//! an exchange and a mint, logs one JSON object per line with the request id and no secret, and
//! exits 0 on SIGTERM.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

#[expect(
    dead_code,
    reason = "shared with the api and git_sim tests, which run the broker in this process"
)]
mod support;

use serde_json::{json, Value};
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use support::{main_job, BrokerApi, ServeProcess};

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
