//! The simulator over HTTP, against what GitHub documents for each endpoint.

use super::*;
use crate::keys::RsaKeyPair;
use crate::testing::{acme_installation, app_jwt_claims, shared_app_key as app_key};
use crate::testing::{revoke_installation_token, stops_on_drop, strings_at};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use time::OffsetDateTime;

const APP_ID: &str = "4242";

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn app_jwt(iat: i64, exp: i64, iss: &str) -> String {
    let claims = json!({ "iat": iat, "exp": exp, "iss": iss });
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &app_key().encoding_key(),
    )
    .unwrap()
}

fn valid_jwt() -> String {
    crate::testing::app_jwt(app_key(), APP_ID)
}

/// `GET {path}` as the App, with `jwt`.
async fn get_as_app(running: &RunningSimulator, path: &str, jwt: String) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", running.url))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
}

fn simulator() -> GitHubSimulator {
    let sim = GitHubSimulator::new(APP_ID, app_key().public_key());
    sim.add_installation(acme_installation());
    let mut user = SimInstallation::organization(2, "OctoUser", 1002);
    user.account_type = "User".into();
    sim.add_installation(user.with_repo(3001, "dotfiles", false));
    sim
}

/// [`simulator`], serving.
async fn started() -> (GitHubSimulator, RunningSimulator) {
    let sim = simulator();
    let running = sim.start().await.unwrap();
    (sim, running)
}

async fn message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["documentation_url"], DOCUMENTATION_URL);
    body["message"].as_str().unwrap().to_owned()
}

async fn mint(running: &RunningSimulator, installation: i64, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{installation}/access_tokens",
            running.url
        ))
        .bearer_auth(valid_jwt())
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn minted_token(running: &RunningSimulator, body: Value) -> String {
    let response = mint(running, 1, body).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refuses_app_jwts_that_github_would_refuse() {
    let (_sim, running) = started().await;
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &app_jwt_claims(APP_ID),
        // The classic confusion attack: the public key used as an HMAC secret.
        &EncodingKey::from_secret(app_key().public_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let other_key = crate::testing::app_jwt(&RsaKeyPair::generate(), APP_ID);
    let cases = [
        (
            "expired",
            app_jwt(now() - 700, now() - 100, APP_ID),
            "'Expiration time' claim ('exp') must be",
        ),
        (
            "one hour long",
            app_jwt(now() - 60, now() + 3540, APP_ID),
            "too far in the future",
        ),
        (
            "issued in the future",
            app_jwt(now() + 300, now() + 540, APP_ID),
            "'Issued at' claim",
        ),
        (
            "another app",
            app_jwt(now() - 60, now() + 540, "999"),
            "'Issuer' claim",
        ),
        ("signed with hs256", hs256, MSG_JWT_NOT_DECODED),
        ("signed with another key", other_key, MSG_JWT_NOT_DECODED),
        ("not a jwt", "garbage".to_owned(), MSG_JWT_NOT_DECODED),
    ];
    for (case, jwt, expected) in cases {
        let response = get_as_app(&running, "/app", jwt).await;
        assert_eq!(response.status(), 401, "{case}");
        let message = message(response).await;
        assert!(message.contains(expected), "{case}: {message}");
    }
    let accepted = get_as_app(&running, "/app", valid_jwt()).await;
    assert_eq!(accepted.status(), 200);
}

#[tokio::test]
async fn every_key_the_app_holds_verifies_until_it_is_deleted() {
    let (sim, running) = started().await;
    let (first, second) = (app_key(), &RsaKeyPair::generate());
    // (the App's keys on GitHub, the status of a JWT signed by the first key, by the second)
    let stages = [
        (vec![first], 200, 401),
        // A second key generated: both verify, as during a rotation.
        (vec![first, second], 200, 200),
        // The first key deleted: only the second verifies.
        (vec![second], 401, 200),
    ];
    for (keys, by_first, by_second) in stages {
        let public: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
        sim.set_app_keys(&public);
        for (key, expected) in [(first, by_first), (second, by_second)] {
            let jwt = crate::testing::app_jwt(key, APP_ID);
            let status = get_as_app(&running, "/app", jwt).await.status();
            assert_eq!(status, expected, "{} keys", keys.len());
        }
    }
}

#[tokio::test]
async fn finds_installations_case_insensitively_and_answers_with_githubs_spelling() {
    let (_sim, running) = started().await;
    let cases = [
        ("/users/acme/installation", 200, Some("Acme")),
        ("/orgs/ACME/installation", 200, Some("Acme")),
        ("/repos/acme/INFRA/installation", 200, Some("Acme")),
        ("/users/octouser/installation", 200, Some("OctoUser")),
        ("/orgs/octouser/installation", 404, None),
        ("/repos/acme/missing/installation", 404, None),
        ("/users/ghost/installation", 404, None),
        ("/app/installations/1", 200, Some("Acme")),
        ("/app/installations/77", 404, None),
    ];
    for (path, status, login) in cases {
        let response = get_as_app(&running, path, valid_jwt()).await;
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        if let Some(login) = login {
            assert_eq!(body["account"]["login"], login, "{path}");
            assert_eq!(body["suspended_at"], Value::Null, "{path}");
        }
    }
}

#[tokio::test]
async fn reports_suspension_in_the_installation_and_refuses_to_mint() {
    let (sim, running) = started().await;
    sim.set_suspended(1, true);
    let body: Value = get_as_app(&running, "/app/installations/1", valid_jwt())
        .await
        .json()
        .await
        .unwrap();
    assert!(body["suspended_at"].is_string());
    let response = mint(&running, 1, json!({})).await;
    assert_eq!(response.status(), 403);
    assert_eq!(message(response).await, MSG_SUSPENDED);
    assert_eq!(sim.counts(), (0, 0));
}

#[tokio::test]
async fn validates_token_requests_against_the_installation() {
    let (sim, running) = started().await;
    let too_many: Vec<i64> = (0..501).collect();
    let cases = [
        (
            json!({"permissions": {"contents": "admin"}}),
            MSG_PERMISSIONS_NOT_GRANTED,
        ),
        (
            json!({"permissions": {"contents": "writ"}}),
            MSG_PERMISSIONS_NOT_GRANTED,
        ),
        (
            json!({"permissions": {"actions": "read"}}),
            MSG_PERMISSIONS_NOT_GRANTED,
        ),
        (
            json!({"repositories": ["infra", "elsewhere"]}),
            MSG_REPOSITORY_NOT_ACCESSIBLE,
        ),
        (
            json!({"repository_ids": [9999]}),
            MSG_REPOSITORY_NOT_ACCESSIBLE,
        ),
        (json!({"repository_ids": too_many}), "Too many repositories"),
    ];
    for (body, expected) in cases {
        let response = mint(&running, 1, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        assert!(message(response).await.contains(expected), "{body}");
    }
    assert_eq!(mint(&running, 99, json!({})).await.status(), 404);
    assert_eq!(sim.counts(), (0, 0));
}

#[tokio::test]
async fn mints_tokens_scoped_to_the_request() {
    let (sim, running) = started().await;
    let response = mint(
        &running,
        1,
        json!({"repositories": ["INFRA"], "repository_ids": [2002], "permissions": {"contents": "read"}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("ghs_"));
    assert_eq!(token.len(), 4 + TOKEN_RANDOM_CHARS);
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );
    assert_eq!(body["repository_selection"], "selected");
    let names = strings_at(&body["repositories"], "full_name");
    assert_eq!(names, ["Acme/infra", "Acme/modules"]);
    let info = sim.token_info(token).unwrap();
    assert_eq!(info.installation_id, 1);
    assert_eq!(info.repositories, ["Acme/infra", "Acme/modules"]);
    assert!(!info.revoked);

    let everything = minted_token(&running, json!({})).await;
    let info = sim.token_info(&everything).unwrap();
    assert_eq!(info.repositories.len(), 3);
    assert_eq!(info.permissions["issues"], "read");
    assert_eq!(info.permissions["contents"], "write");
    assert_eq!(sim.counts(), (2, 0));
}

#[tokio::test]
async fn installation_tokens_work_until_revoked_or_expired() {
    let (sim, running) = started().await;
    let client = reqwest::Client::new();
    let token = minted_token(&running, json!({"repositories": ["infra"]})).await;
    let list = |scheme: &'static str, token: String| {
        client
            .get(format!("{}/installation/repositories", running.url))
            .header("authorization", format!("{scheme} {token}"))
            .send()
    };
    for scheme in ["token", "Bearer", "TOKEN", "bearer"] {
        let response = list(scheme, token.clone()).await.unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["total_count"], 1);
        assert_eq!(body["repositories"][0]["full_name"], "Acme/infra");
    }
    let revoke = || revoke_installation_token(&client, &running.url, &token);
    assert_eq!(revoke().await.status(), 204);
    assert!(!sim.token_is_live(&token));
    assert!(sim.token_info(&token).unwrap().revoked);
    let after = list("token", token.clone()).await.unwrap();
    assert_eq!(after.status(), 401);
    assert_eq!(message(after).await, MSG_BAD_CREDENTIALS);
    assert_eq!(revoke().await.status(), 401, "revoked already");
    assert_eq!(sim.counts(), (1, 1));

    let expiring = minted_token(&running, json!({})).await;
    assert!(sim.token_is_live(&expiring));
    assert!(sim.expire_token(&expiring));
    assert!(!sim.token_is_live(&expiring));
    assert_eq!(list("token", expiring).await.unwrap().status(), 401);
}

#[tokio::test]
async fn repositories_are_visible_only_to_tokens_that_reach_them() {
    let (_sim, running) = started().await;
    let client = reqwest::Client::new();
    let token = minted_token(&running, json!({"repositories": ["infra"]})).await;
    let token = Some(token.as_str());
    let cases = [
        ("/repos/acme/infra", token, 200),
        ("/repos/Acme/modules", token, 404),
        ("/repos/acme/website", None, 200),
        ("/repos/acme/infra", None, 404),
        ("/repos/acme/nothing", token, 404),
        // A token GitHub never issued is refused even where no token is needed.
        ("/repos/acme/website", Some("ghs_unknown"), 401),
    ];
    for (path, token, status) in cases {
        let mut request = client.get(format!("{}{path}", running.url));
        if let Some(token) = token {
            request = request.header("authorization", format!("token {token}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{path} with {}", token.is_some());
    }
}

#[tokio::test]
async fn pages_with_link_headers() {
    let sim = simulator();
    let mut big = SimInstallation::organization(3, "big", 1003);
    for id in 0..250 {
        big = big.with_repo(10_000 + id, &format!("repo-{id}"), true);
    }
    sim.add_installation(big);
    let running = sim.start().await.unwrap();
    let client = reqwest::Client::new();
    let response = mint(&running, 3, json!({})).await;
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = |n: usize| {
        client
            .get(format!(
                "{}/installation/repositories?per_page=100&page={n}",
                running.url
            ))
            .bearer_auth(&token)
            .send()
    };
    let first = page(1).await.unwrap();
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");
    assert!(link.contains("page=3>; rel=\"last\""), "{link}");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["total_count"], 250);
    assert_eq!(body["repositories"].as_array().unwrap().len(), 100);
    let last = page(3).await.unwrap();
    let link = last.headers()["link"].to_str().unwrap().to_owned();
    assert!(!link.contains("rel=\"next\""), "{link}");
    let body: Value = last.json().await.unwrap();
    assert_eq!(body["repositories"].as_array().unwrap().len(), 50);

    let installations = get_as_app(&running, "/app/installations?per_page=2", valid_jwt()).await;
    assert!(installations.headers()["link"]
        .to_str()
        .unwrap()
        .contains("rel=\"next\""));
    let body: Value = installations.json().await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn injects_failures_and_counts_requests() {
    let (sim, running) = started().await;
    sim.fail_next(1, 502, None);
    sim.fail_next(1, 429, Some(7));
    sim.fail_next(1, 403, None);
    let get = || get_as_app(&running, "/app/installations/1", valid_jwt());
    assert_eq!(get().await.status(), 502);
    let limited = get().await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    let primary = get().await;
    assert_eq!(primary.status(), 403);
    assert_eq!(primary.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(get().await.status(), 200);
    assert_eq!(sim.request_count("/app/installations/1"), 4);
    assert_eq!(sim.request_count("/users/"), 0);
    let first = &sim.requests()[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("GET", "/app/installations/1")
    );
}

#[tokio::test]
async fn dropping_the_running_simulator_stops_the_server() {
    let (_sim, running) = started().await;
    let addr = running.addr;
    assert!(
        stops_on_drop(running, addr, std::time::Duration::from_secs(2)).await,
        "the simulator still accepts connections"
    );
}
