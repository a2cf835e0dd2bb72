use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use sts_sim::keys::RsaKeyPair;

#[tokio::test]
async fn exchange_returns_an_enveloped_session_with_an_expiry() {
    let app = spawn_app().await;
    let r = app.post_exchange(&app.oidc_token(&main_job())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["status"], 200);
    assert!(!r.body["request"].as_str().unwrap().is_empty());
    let token = r.data()["token"].as_str().unwrap();
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        payload["exp"].as_i64().unwrap() > time::OffsetDateTime::now_utc().unix_timestamp() + 600
    );
    assert!(r.data()["expiresAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn exchange_rejects_a_replayed_token() {
    let app = spawn_app().await;
    let token = app.oidc_token(&main_job());
    assert_eq!(app.post_exchange(&token).await.status, 200);
    let again = app.post_exchange(&token).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.tag(), "token_replayed");
    assert_eq!(again.body["success"], false);
}

#[tokio::test]
async fn exchange_refuses_expired_wrong_audience_foreign_issuer_and_forged_tokens() {
    let app = spawn_app().await;
    let base = app.claims(&main_job());

    let expired = expired(&base);
    let mut wrong_aud = for_another_audience(&base);
    wrong_aud.insert("jti".into(), json!("other-1"));
    let mut foreign = base.clone();
    foreign.insert(
        "iss".into(),
        json!("https://token.actions.githubusercontent.com"),
    );
    foreign.insert("jti".into(), json!("other-2"));

    // Signed by a key the issuer never published.
    let stranger = RsaKeyPair::generate();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(stranger.kid.clone());
    let mut forged_claims = base.clone();
    forged_claims.insert("jti".into(), json!("other-3"));
    let forged = jsonwebtoken::encode(&header, &forged_claims, &stranger.encoding_key()).unwrap();
    // HS256 with a guessable secret: the algorithm is pinned to RS256.
    let mut hs_claims = base.clone();
    hs_claims.insert("jti".into(), json!("other-4"));
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &hs_claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret").unwrap(),
    )
    .unwrap();

    let cases = [
        ("expired", app.world.issuer.sign(&expired)),
        ("wrong audience", app.world.issuer.sign(&wrong_aud)),
        ("issuer not configured", app.world.issuer.sign(&foreign)),
        ("forged signature", forged),
        ("hs256", hs256),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        let r = app.post_exchange(&token).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(r.tag(), "invalid_token", "{name}");
    }
    let denied = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e["action"] == "exchange" && e["outcome"] == "denied")
        .count();
    // Only the expired and the wrong-audience tokens got past their signature check; the
    // others prove nothing about who sent them and are counted, not audited (see edges.rs).
    assert_eq!(
        denied, 2,
        "every refusal after the signature check is audited"
    );
}

#[tokio::test]
async fn exchange_for_an_unknown_workspace_is_404_and_a_bad_body_is_400() {
    let app = spawn_app().await;
    let r = app
        .post_exchange_to(&app.oidc_token(&main_job()), "nope")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.tag(), "workspace_not_found");
    let (path, body) = ("/api/v1/auth/github-oidc", "{\"token\": 1}");
    let r = app
        .send_raw(Method::POST, path, None, "application/json", body)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.tag(), "invalid_request");
    assert!(!r.data()["validationErrors"].as_array().unwrap().is_empty());
}
