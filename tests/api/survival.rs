//! A mint survives its caller: a client that gives up, a request timeout shorter than GitHub, a
//! workspace deleted while GitHub mints, a crash. In each case every token GitHub minted ends
//! up handed out and audited, or revoked at GitHub and audited.

use crate::helpers::*;
use crate::leaks::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use sts_broker::store::{MintIntent, PlannedToken};

/// GitHub answers token POSTs this late in these tests.
const GITHUB_DELAY: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_client_that_disconnects_while_github_mints_leaves_no_live_token() {
    let app = deploy_app(30).await;
    let session = app.main_session().await;
    let (minted_before, _) = app.world.github.counts();
    app.world.github.set_mint_delay(GITHUB_DELAY);

    let gave_up = tokio::time::timeout(
        Duration::from_millis(1500),
        app.post_sts(&session, deploy_mint()),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the client gave up before github answered"
    );

    assert_no_token_unaccounted(&app, &BTreeSet::new()).await;
    let (minted_after, _) = app.world.github.counts();
    assert_eq!(minted_after - minted_before, 2, "github minted both tokens");
    let events = all_events(&app).await;
    let mint = events.iter().rev().find(|e| e["action"] == "mint").unwrap();
    assert_eq!(mint["reason"], "mint_abandoned", "{mint}");
    assert_eq!(mint["tokens"].as_array().unwrap().len(), 2, "{mint}");
}

#[tokio::test]
async fn a_request_timeout_shorter_than_github_answers_in_time_and_leaves_no_live_token() {
    let app = deploy_app(2).await;
    let session = app.main_session().await;
    app.world.github.set_mint_delay(GITHUB_DELAY);

    let started = Instant::now();
    let r = app.post_sts(&session, deploy_mint()).await;
    let waited = started.elapsed();

    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.tag(), "mint_abandoned");
    assert!(
        waited < Duration::from_secs(2),
        "answered before the server's timeout: {waited:?}"
    );
    assert_no_token_unaccounted(&app, &BTreeSet::new()).await;
}

#[tokio::test]
async fn deleting_a_workspace_while_a_mint_is_at_github_revokes_that_mints_tokens() {
    let app = deploy_app(30).await;
    // A live token the deletion must revoke first; GitHub revokes slowly, which opens the
    // window in which the held mint comes back and records.
    let first = app.main_session().await;
    let r = app.post_sts(&first, deploy_mint()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = app.main_session().await;
    app.world.github.set_mint_delay(Duration::from_secs(1));
    app.world.github.set_revoke_delay(Duration::from_secs(2));

    let held = {
        let http = app.http.clone();
        let url = app.url("/api/v1/sts");
        tokio::spawn(async move {
            reply(http.post(url).bearer_auth(session).json(&deploy_mint())).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = app
        .admin(reqwest::Method::DELETE, "/workspaces/acme", None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);

    let r = held.await.unwrap();
    let received: BTreeSet<String> = token_values(&r).into_iter().collect();
    assert!(
        received.is_empty(),
        "nothing is handed out of a deleted workspace: {}",
        r.body
    );
    assert_no_token_unaccounted(&app, &received).await;
}

#[tokio::test]
async fn a_mint_cut_off_by_a_crash_is_reported_as_outcome_unknown_once_at_start() {
    let app = spawn_app().await;
    let url = format!(
        "sqlite://{}",
        app.world.dir.path().join("sts-broker.db").display()
    );
    let store = sts_broker::store::connect(&url, 1).await.unwrap();
    let intent = MintIntent {
        id: "int_crashed".to_owned(),
        workspace_id: "acme".to_owned(),
        session_id: "ses_gone".to_owned(),
        request_id: Some("req-crashed".to_owned()),
        policy_name: "default".to_owned(),
        policy_version: Some(1),
        actor: sts_broker::audit::Actor::of(sts_broker::audit::ActorKind::Oidc),
        planned: vec![PlannedToken {
            installation_id: 100,
            owner: "acme".to_owned(),
            repositories: Some(vec!["acme/modules".to_owned()]),
            permissions: [("contents".to_owned(), "read".to_owned())].into(),
            rules: vec!["infra-main".to_owned()],
        }],
        created_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
    };
    store.record_mint_intent(&intent).await.unwrap();

    // The process that wrote it is gone; two brokers start on its database.
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app2 = sts_broker::app::App::build(app.world.config.clone())
            .await
            .unwrap();
        let restarted = sts_broker::server::spawn(app2, listener).unwrap();
        let started = Instant::now();
        while open_intents(&app).await > 0 && started.elapsed() < SETTLE_LIMIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        restarted.stop().await.unwrap();
    }

    let reported: Vec<_> = all_events(&app)
        .await
        .into_iter()
        .filter(|e| e["reason"] == "outcome_unknown")
        .collect();
    assert_eq!(reported.len(), 1, "{reported:#?}");
    let event = &reported[0];
    assert_eq!(event["action"], "mint");
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["workspaceId"], "acme");
    assert_eq!(event["requestId"], "req-crashed");
    assert_eq!(event["installationIds"], serde_json::json!([100]));
    assert_eq!(event["details"]["intentId"], "int_crashed");
    assert_eq!(
        event["details"]["planned"][0]["repositories"],
        serde_json::json!(["acme/modules"])
    );
}
