//! Two broker processes on one PostgreSQL database must agree.

use crate::helpers::*;
use secrecy::SecretString;
use serde_json::json;
use sts_broker::app::App;
use sts_broker::dev::{DevWorld, DEV_WORKSPACE};

fn database_url() -> String {
    std::env::var("STS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[tokio::test]
async fn two_replicas_on_postgres_share_replay_protection_sessions_and_revocation() {
    sts_broker::telemetry::init_for_test();
    let schema = format!("replicas_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&database_url())
        .await
        .expect("PostgreSQL must be reachable (set STS_TEST_DATABASE_URL)");
    sqlx::query(&format!("create schema {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}?options=-c%20search_path%3D{schema}", database_url());

    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let world = DevWorld::start(l1.local_addr().unwrap()).await.unwrap();
    let mut config = world.config.clone();
    config.database.url = SecretString::from(url);
    let a = sts_broker::server::spawn(App::build(config.clone()).await.unwrap(), l1).unwrap();
    let b = sts_broker::server::spawn(App::build(config).await.unwrap(), l2).unwrap();
    world.seed(&a.url).await.unwrap();
    let http = reqwest::Client::new();

    let oidc = world
        .issuer
        .token_for(&main_job(), sts_broker::dev::DEV_AUDIENCE);
    let (at_a, at_b) = (
        BrokerApi {
            http: &http,
            base: &a.url,
        },
        BrokerApi {
            http: &http,
            base: &b.url,
        },
    );
    let first = at_a.exchange(&oidc, DEV_WORKSPACE).await;
    assert_eq!(first.status, 200);
    let session = first.data()["token"].as_str().unwrap().to_owned();
    let replay = at_b.exchange(&oidc, DEV_WORKSPACE).await;
    assert_eq!(
        replay.status, 401,
        "the replay at the second replica is refused"
    );
    assert_eq!(replay.body["errorTag"], "token_replayed");

    // A session made at A works at B (shared signing key) ...
    let mint = at_b
        .sts(&session, json!({ "sources": ["acme/modules"] }))
        .await;
    assert_eq!(mint.status, 200);
    let token = tokens(&mint)[0]["token"].as_str().unwrap().to_owned();
    assert!(world.github.token_is_live(&token));

    // ... and once revoked at B it is dead at A, and so is its token.
    let end = at_b.end_session(&session).await;
    assert_eq!(end.status, 200);
    assert!(!world.github.token_is_live(&token));
    let again = at_a.sts(&session, json!({})).await;
    assert_eq!(again.status, 401);

    drop((a, b));
    sqlx::query(&format!("drop schema {schema} cascade"))
        .execute(&admin)
        .await
        .unwrap();
}
