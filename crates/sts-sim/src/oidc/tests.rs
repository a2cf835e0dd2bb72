//! The issuer simulator against what GitHub Actions documents for its OIDC tokens, discovery
//! document and JWKS.

use super::*;
use crate::testing::{stops_on_drop, strings_at};

/// Custom claims GitHub sends, every one a JSON string
/// (<https://docs.github.com/en/actions/reference/security/oidc#oidc-token-claims>).
const STRING_CLAIMS: [&str; 26] = [
    "actor",
    "actor_id",
    "base_ref",
    "head_ref",
    "ref",
    "ref_type",
    "ref_protected",
    "sha",
    "event_name",
    "run_id",
    "run_number",
    "run_attempt",
    "runner_environment",
    "job_workflow_ref",
    "job_workflow_sha",
    "workflow",
    "workflow_ref",
    "workflow_sha",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "sub",
    "jti",
    "aud",
];

#[tokio::test]
async fn claims_look_like_github_actions_claims() {
    let sim = OidcIssuerSimulator::new();
    let running = sim.start().await.unwrap();
    let job = ActionsJob {
        owner: "Acme".into(),
        repo: "deploy".into(),
        git_ref: "refs/tags/v1".into(),
        ..ActionsJob::default()
    };
    let claims = sim.claims_for(&job, "atmos-pro.com");

    for name in STRING_CLAIMS {
        assert!(claims[name].is_string(), "{name} is not a string");
    }
    assert_eq!(claims["iss"], json!(running.issuer));
    assert_eq!(claims["aud"], json!("atmos-pro.com"));
    assert_eq!(claims["sub"], json!("repo:Acme/deploy:ref:refs/tags/v1"));
    assert_eq!(claims["repository"], json!("Acme/deploy"));
    assert_eq!(claims["repository_owner_id"], json!("1001"));
    assert_eq!(claims["ref_type"], json!("tag"));
    assert_eq!(
        claims["workflow_ref"],
        json!("Acme/deploy/.github/workflows/ci.yml@refs/tags/v1")
    );
    assert_eq!(claims["job_workflow_ref"], claims["workflow_ref"]);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64(), Some(iat - 300));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 300));
    assert_ne!(
        claims["jti"],
        sim.claims_for(&job, "atmos-pro.com")["jti"],
        "jti must be fresh per token"
    );
}

#[tokio::test]
async fn the_actions_endpoint_needs_the_request_token() {
    let sim = OidcIssuerSimulator::new();
    let running = sim.start().await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}&audience=atmos-pro.com", sim.actions_token_url());
    assert!(url.starts_with(&running.issuer));

    let right = sim.actions_request_token();
    let cases = [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong".to_owned()), StatusCode::UNAUTHORIZED),
        (Some(format!("Basic {right}")), StatusCode::UNAUTHORIZED),
        (Some(right.clone()), StatusCode::UNAUTHORIZED),
        (Some(format!("Bearer {right}")), StatusCode::OK),
        (Some(format!("bearer {right}")), StatusCode::OK),
        (Some(format!("BEARER {right}")), StatusCode::OK),
    ];
    for (authorization, expected) in cases {
        let mut request = client.get(&url);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let status = request.send().await.unwrap().status();
        assert_eq!(status.as_u16(), expected.as_u16(), "{authorization:?}");
    }
}

#[tokio::test]
async fn discovery_and_jwks_publish_the_current_and_previous_keys() {
    let sim = OidcIssuerSimulator::new();
    let running = sim.start().await.unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("{}{path}", running.issuer)).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    };

    let discovery = get("/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], json!(running.issuer));
    assert_eq!(
        discovery["jwks_uri"],
        json!(format!("{}/.well-known/jwks", running.issuer))
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );

    let first = sim.current_kid();
    sim.rotate_key();
    let second = sim.current_kid();
    sim.rotate_key();
    let third = sim.current_kid();
    let jwks = get("/.well-known/jwks").await;
    let kids = strings_at(&jwks["keys"], "kid");
    assert_eq!(kids, [third.as_str(), second.as_str()]);
    assert!(!kids.contains(&first.as_str()));
    assert_eq!(sim.jwks_fetch_count(), 1);
    assert_eq!(sim.discovery_fetch_count(), 1);
}

#[tokio::test]
async fn dropping_the_running_issuer_stops_the_server() {
    let sim = OidcIssuerSimulator::new();
    let running = sim.start().await.unwrap();
    let addr = running.addr;
    // The abort lands when the runtime next polls the server task; give it a few turns.
    assert!(
        stops_on_drop(running, addr, std::time::Duration::from_secs(1)).await,
        "server still accepting connections after drop"
    );
}

#[tokio::test]
async fn a_held_jwks_request_is_answered_after_the_release_with_the_keys_published_then() {
    let sim = OidcIssuerSimulator::new();
    let running = sim.start().await.unwrap();
    let url = format!("{}/.well-known/jwks", running.issuer);
    let hold = sim.hold_jwks();
    let fetch = tokio::spawn(async move {
        let response = reqwest::get(url).await.unwrap();
        response.json::<Value>().await.unwrap()
    });
    hold.arrived().await;
    assert_eq!(sim.jwks_fetch_count(), 1);
    assert!(!fetch.is_finished());
    sim.rotate_key();
    hold.release();
    let jwks = fetch.await.unwrap();
    assert_eq!(jwks, sim.jwks());
    assert_eq!(jwks["keys"][0]["kid"], json!(sim.current_kid()));

    // Released means released: later requests pass straight through.
    let again: Value = reqwest::get(format!("{}/.well-known/jwks", running.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, sim.jwks());
}
