//! Two broker processes on one PostgreSQL database must agree.

use crate::helpers::*;
use serde_json::json;
use sts_broker::dev::DEV_WORKSPACE;

#[tokio::test]
async fn two_replicas_on_postgres_share_replay_protection_sessions_and_revocation() {
    let schema = PgSchema::create("replicas").await;
    let (world, brokers) = start_replicas(Some(schema.url()), 2).await;
    let (a, b) = (&brokers[0], &brokers[1]);
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

    drop(brokers);
    schema.drop_schema().await;
}
