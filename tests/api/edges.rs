//! Attacks at the edges, each one a security review reproduced against the release binary: what
//! an unauthenticated caller can make the broker write, keep or count.

use crate::helpers::*;
use serde_json::json;
use sts_sim::keys::RsaKeyPair;

/// Exchange refusals the verifier makes before it has checked a signature: anyone can send
/// these, for any workspace, as fast as they like.
fn unverifiable_tokens(app: &TestApp) -> Vec<(&'static str, String)> {
    let claims = app.claims(&main_job());
    let stranger = RsaKeyPair::generate();
    // The issuer's published `kid`, another key's signature.
    let mut published_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    published_kid.kid = Some(app.world.issuer.current_kid());
    let bad_signature =
        jsonwebtoken::encode(&published_kid, &claims, &stranger.encoding_key()).unwrap();
    let mut unknown_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    unknown_kid.kid = Some(stranger.kid.clone());
    let unknown_key =
        jsonwebtoken::encode(&unknown_kid, &claims, &stranger.encoding_key()).unwrap();
    let mut foreign = claims.clone();
    foreign.insert("iss".into(), json!("https://issuer.invalid"));
    let mut no_issuer = claims.clone();
    no_issuer.remove("iss");
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret").unwrap(),
    )
    .unwrap();
    vec![
        ("malformed", "not.a.jwt".to_owned()),
        ("garbage", "x".repeat(300)),
        ("bad signature", bad_signature),
        ("unknown key", unknown_key),
        ("issuer not trusted", app.world.issuer.sign(&foreign)),
        ("no issuer", app.world.issuer.sign(&no_issuer)),
        ("hs256", hs256),
    ]
}

#[tokio::test]
async fn a_flood_of_unverifiable_tokens_writes_no_audit_event_but_is_counted() {
    let app = spawn_app().await;
    let tokens = unverifiable_tokens(&app);
    for round in 0..10 {
        for (name, token) in &tokens {
            let r = app.post_exchange(token).await;
            assert_eq!(r.status, 401, "{name} (round {round}): {}", r.body);
            assert_eq!(r.tag(), "invalid_token", "{name}");
        }
    }
    let exchanges: Vec<_> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == "exchange")
        .collect();
    assert!(
        exchanges.is_empty(),
        "nothing verified, nothing audited: {exchanges:?}"
    );

    let metrics = app.metrics().await;
    for reason in [
        "token_malformed",
        "bad_signature",
        "unknown_signing_key",
        "issuer_not_trusted",
        "missing_claim",
        "algorithm_not_allowed",
    ] {
        let series = format!("sts_exchanges_total{{outcome=\"denied\",reason=\"{reason}\"}}");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }

    // The workspace still works for a verified caller.
    let r = app.post_exchange(&app.oidc_token(&main_job())).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn refusals_after_the_signature_is_verified_are_audited_once_each() {
    let app = spawn_app().await;
    let base = app.claims(&main_job());
    let expired = expired(&base);
    let wrong_aud = for_another_audience(&base);
    let mut no_subject = base.clone();
    no_subject.remove("sub");
    for claims in [&expired, &wrong_aud, &no_subject] {
        let r = app.post_exchange(&app.world.issuer.sign(claims)).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let reasons: Vec<String> = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e["action"] == "exchange")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut reasons = reasons;
    reasons.sort();
    assert_eq!(
        reasons,
        ["audience_mismatch", "missing_claim", "token_expired"],
        "one event per verified refusal"
    );
}

#[tokio::test]
async fn a_caller_request_id_is_kept_only_when_short_and_plain() {
    let app = spawn_app().await;
    let replaced = [
        "a".repeat(65),
        "a".repeat(10_000),
        String::new(),
        "has space".to_owned(),
        "semi;colon".to_owned(),
        "slash/es".to_owned(),
        "{\"json\":1}".to_owned(),
    ];
    let kept = [
        "a".repeat(64),
        "abc-DEF_1.2".to_owned(),
        "0196b7e2-5c1f-7a3e-9d2b-4f6a8c0e1b3d".to_owned(),
    ];
    let send = |path: &'static str, id: reqwest::header::HeaderValue| {
        let req = app.http.get(app.url(path)).header("x-request-id", id);
        async move {
            let res = req.send().await.unwrap();
            let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (echoed, body)
        }
    };
    let mut sent: Vec<reqwest::header::HeaderValue> = replaced
        .iter()
        .map(|id| reqwest::header::HeaderValue::from_str(id).unwrap())
        .collect();
    // Bytes beyond ASCII are legal in a header value (RFC 9110 §5.5 obs-text).
    sent.push(reqwest::header::HeaderValue::from_bytes("ünïcödé".as_bytes()).unwrap());
    for id in sent {
        let (echoed, _) = send("/healthz", id.clone()).await;
        assert_ne!(echoed.as_bytes(), id.as_bytes(), "{id:?} was kept");
        assert!(
            (1..=64).contains(&echoed.len())
                && echoed
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{echoed}"
        );
        // The envelope names the same id as the header.
        let (echoed, body) = send("/api/v1/sts", id.clone()).await;
        assert_ne!(echoed.as_bytes(), id.as_bytes(), "{id:?} was kept");
        assert_eq!(body["request"], echoed.as_str(), "{body}");
    }
    for id in kept {
        let value = reqwest::header::HeaderValue::from_str(&id).unwrap();
        let (echoed, body) = send("/api/v1/sts", value).await;
        assert_eq!(echoed, id);
        assert_eq!(body["request"], id.as_str(), "{body}");
    }
}

/// Series of the HTTP latency histogram in a `/metrics` body.
fn http_series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("sts_http_request_duration_seconds_count"))
        .count()
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    // Warm up every label the flood below may legitimately add: a known method on a known route
    // and on an unknown one.
    for path in ["/healthz", "/no-such-route"] {
        app.http.get(app.url(path)).send().await.unwrap();
    }
    let before = app.metrics().await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("X{i:04}Q").as_bytes()).unwrap();
        for path in ["/healthz", "/no-such-route"] {
            app.http
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
        }
    }
    let after = app.metrics().await;
    // At most the `other` method on each route, with the statuses they answer.
    assert!(
        http_series(&after) <= http_series(&before) + 4,
        "{} series before, {} after:\n{after}",
        http_series(&before),
        http_series(&after)
    );
    assert!(
        after.len() < before.len() + 8 * 1024,
        "{} bytes before, {} after",
        before.len(),
        after.len()
    );
    assert!(
        !after.contains("X0001Q"),
        "a caller's method became a label"
    );
}

/// `POST /api/v1/sts` for `acme/modules`: status, `errorTag` and `Retry-After`.
async fn mint_once(app: &TestApp, session: &str) -> (u16, String, Option<u64>) {
    let res = app
        .http
        .post(app.url("/api/v1/sts"))
        .bearer_auth(session)
        .json(&json!({ "sources": ["acme/modules"], "policyName": "default" }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body: serde_json::Value = res.json().await.unwrap();
    let tag = body["errorTag"].as_str().unwrap_or_default().to_owned();
    (status, tag, retry_after)
}

#[tokio::test]
async fn a_session_beyond_its_quota_gets_429_with_retry_after_and_another_session_still_mints() {
    let app = spawn_app_configured(|c| c.limits.session_mints_per_minute = 2).await;
    let first = app.main_session().await;
    for _ in 0..2 {
        let (status, tag, _) = mint_once(&app, &first).await;
        assert_eq!(status, 200, "{tag}");
    }
    let (status, tag, retry_after) = mint_once(&app, &first).await;
    assert_eq!((status, tag.as_str()), (429, "rate_limited"));
    let retry_after = retry_after.expect("a 429 says when to come back");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );

    let second = app.main_session().await;
    let (status, tag, _) = mint_once(&app, &second).await;
    assert_eq!(status, 200, "{tag}");

    // Every authenticated attempt counts, the malformed ones too: a body that is not JSON and
    // one that names no repository each spend a mint.
    let third = app.main_session().await;
    let not_json = app
        .http
        .post(app.url("/api/v1/sts"))
        .bearer_auth(&third)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let bad = app.mint(&third, &["not a repo"]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(mint_once(&app, &third).await.0, 429);
}

#[tokio::test]
async fn a_workspace_beyond_its_quota_gets_429_whichever_session_asks() {
    let app = spawn_app_configured(|c| c.limits.workspace_mints_per_minute = 3).await;
    for _ in 0..3 {
        let session = app.main_session().await;
        let (status, tag, _) = mint_once(&app, &session).await;
        assert_eq!(status, 200, "{tag}");
    }
    let session = app.main_session().await;
    let (status, tag, retry_after) = mint_once(&app, &session).await;
    assert_eq!((status, tag.as_str()), (429, "rate_limited"));
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
}
