//! Atmos CLI's wire behaviour, as its source writes it (<https://github.com/cloudposse/atmos>:
//! the exchange in `pkg/pro/api_client.go`, the mint and the revoke at GitHub in
//! `pkg/auth/integrations/github/sts.go`), played byte for byte: the URLs it builds, the headers
//! it sends, the fields it decodes.

use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sts_broker::dev::DEV_WORKSPACE;

/// What `atmos` sends as its user agent on the exchange (`atmos/<version> (<GOOS>; <GOARCH>)`).
const ATMOS_USER_AGENT: &str = "atmos/v1.200.0 (linux; amd64)";
/// The mint sets no user agent, so Go's default goes out.
const GO_USER_AGENT: &str = "Go-http-client/1.1";

/// `pro.Envelope[T]`: Atmos decodes `success` and `data`, and ignores the rest.
#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    data: T,
}

#[derive(Deserialize)]
struct ExchangeData {
    token: String,
}

#[derive(Deserialize)]
struct StsData {
    tokens: Vec<StsToken>,
}

/// The fields of a token that Atmos reads (`pkg/auth/integrations/github/sts.go`).
#[derive(Deserialize)]
struct StsToken {
    host: String,
    owner: String,
    token: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
}

/// `fmt.Sprintf("%s/%s/auth/github-oidc", baseURL, endpoint)`: no trimming.
fn atmos_exchange_url(base_url: &str, endpoint: &str) -> String {
    format!("{base_url}/{endpoint}/auth/github-oidc")
}

/// `strings.TrimRight(baseURL, "/") + "/" + strings.Trim(endpoint, "/") + "/sts"`.
fn atmos_sts_url(base_url: &str, endpoint: &str) -> String {
    format!(
        "{}/{}/sts",
        base_url.trim_end_matches('/'),
        endpoint.trim_matches('/')
    )
}

async fn atmos_exchange(app: &TestApp, url: &str) -> String {
    let res = app
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", ATMOS_USER_AGENT)
        .body(
            json!({ "token": app.oidc_token(&main_job()), "workspaceId": DEV_WORKSPACE })
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Envelope<ExchangeData> = res.json().await.unwrap();
    assert!(body.success, "Atmos refuses a 200 without success: true");
    body.data.token
}

async fn atmos_mint(app: &TestApp, url: &str, session: &str, body: &str) -> Vec<StsToken> {
    let res = app
        .http
        .post(url)
        .header("authorization", format!("Bearer {session}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("user-agent", GO_USER_AGENT)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 200 | 201),
        "{}",
        res.status()
    );
    let body: Envelope<StsData> = res.json().await.unwrap();
    assert!(body.success);
    body.data.tokens
}

#[tokio::test]
async fn the_atmos_cli_sequence_works_end_to_end_with_a_trailing_slash_base_url() {
    let app = spawn_app().await;
    // A user who writes `ATMOS_PRO_BASE_URL=https://sts.example.com/`.
    let base_url = format!("{}/", app.broker.url);
    let exchange_url = atmos_exchange_url(&base_url, "api/v1");
    assert!(exchange_url.contains("//api/v1/auth/github-oidc"));
    let session = atmos_exchange(&app, &exchange_url).await;

    // The session's expiry is read from an unpadded base64url payload (re-auth 5 min before exp).
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(session.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(payload["exp"].as_i64().unwrap() > now + 300);

    let sts_url = atmos_sts_url(&base_url, "api/v1");
    // The default body: no `sources`, the policy name always sent.
    let all = atmos_mint(&app, &sts_url, &session, r#"{"policyName":"default"}"#).await;
    let owners: Vec<&str> = all.iter().map(|t| t.owner.as_str()).collect();
    assert!(owners.contains(&"acme"), "{owners:?}");
    assert!(owners.contains(&"acme-labs"), "{owners:?}");
    // With `repos: [acme/modules]` in the integration spec.
    let scoped = atmos_mint(
        &app,
        &sts_url,
        &session,
        r#"{"sources":["acme/modules"],"policyName":"default"}"#,
    )
    .await;
    assert_eq!(scoped.len(), 1);
    for token in all.iter().chain(&scoped) {
        assert_eq!(token.host, app.world.git_host().unwrap_or("github.com"));
        assert!(!token.token.is_empty());
        let expires = time::OffsetDateTime::parse(
            &token.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(expires.unix_timestamp() > now);
    }
    let token = &scoped[0];
    assert_eq!(token.owner, "acme", "the login exactly as in users' URLs");
    assert_eq!(app.github_get_repo(&token.token, "acme/modules").await, 200);

    // Atmos revokes at GitHub itself, with the token as its own credential.
    let res = app
        .http
        .delete(format!(
            "{}/installation/token",
            app.world.config.github.api_url
        ))
        .header("authorization", format!("Bearer {}", token.token))
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(!app.world.github.token_is_live(&token.token));
    assert_eq!(app.github_get_repo(&token.token, "acme/modules").await, 401);
    // The other tokens of the session are untouched.
    let labs = all.iter().find(|t| t.owner == "acme-labs").unwrap();
    assert!(app.world.github.token_is_live(&labs.token));
}

#[tokio::test]
async fn duplicate_slashes_anywhere_in_the_path_are_routed_as_one() {
    let app = spawn_app().await;
    let session = atmos_exchange(&app, &app.url("//api/v1/auth/github-oidc")).await;
    let r = app
        .http
        .post(app.url("/api//v1/sts"))
        .bearer_auth(&session)
        .json(&json!({ "sources": ["acme/modules"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["tokens"][0]["owner"], "acme");
    // Queries pass through untouched, and the admin surface gets the same treatment.
    let r = app
        .http
        .get(app.url("//api//v1/admin/workspaces/acme/audit?limit=1"))
        .bearer_auth(&app.world.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["events"].as_array().unwrap().len(), 1);
    // Normalising does not invent routes.
    let r = app
        .http
        .post(app.url("//api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
