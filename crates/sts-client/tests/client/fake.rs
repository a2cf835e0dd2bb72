//! The client against a broker that answers what the test says, for the answers our own broker
//! never gives (another broker's 400 for a non-Actions session, a 200 without `success`, an HTML
//! error page, a token with missing fields).

use crate::helpers::Run;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

struct Fake {
    url: String,
    home: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

/// A broker whose exchange always succeeds and whose `/sts` answers `sts`.
async fn fake(sts: (u16, String)) -> Fake {
    let exchange = json!({"success": true, "status": 200, "data": {"token": "opaque-session"}});
    let app = Router::new()
        .route(
            "/api/v1/auth/github-oidc",
            post(move || async move { axum::Json(exchange) }),
        )
        .route(
            "/api/v1/sts",
            post(move || async move {
                let (status, body) = sts;
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Fake {
        url,
        home: tempfile::tempdir().unwrap(),
        _server: server,
    }
}

impl Fake {
    async fn run(&self, args: &[&str]) -> Run {
        let mut command = crate::helpers::client_command(self.home.path(), &self.url, "ws", args);
        command.env("STS_OIDC_TOKEN", "header.payload.signature");
        crate::helpers::output(command).await
    }
}

fn body(value: Value) -> String {
    value.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_the_broker_gives_map_to_errors_a_user_can_act_on() {
    let cases: Vec<((u16, String), &str)> = vec![
        (
            (400, body(json!({"success": false}))),
            "not a GitHub Actions session",
        ),
        ((403, String::new()), "not entitled to GitHub STS"),
        (
            (200, body(json!({"status": 200, "data": {"tokens": []}}))),
            "mint failed: HTTP 200",
        ),
        (
            (
                500,
                body(json!({"success": false, "errorMessage": "database down", "traceId": "t-1"})),
            ),
            "mint failed: database down (HTTP 500) (trace id t-1)",
        ),
        (
            (502, "<html>Bad Gateway</html>".to_owned()),
            "mint failed: HTTP 502",
        ),
    ];
    for (answer, expected) in cases {
        let fake = fake(answer.clone()).await;
        let run = fake.run(&["login"]).await;
        assert_eq!(run.code, 1, "{answer:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{answer:?}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_brokers_tokens_are_used_as_atmos_uses_them() {
    // No ids, no installationId, fractional-second expiry; one token lacks `owner` and is skipped.
    let answer = body(json!({"success": true, "status": 200, "data": {
        "tokens": [
            {"host": "github.com", "owner": "o", "token": "ghs_fromfake",
             "expiresAt": "2099-01-01T00:00:00.000Z", "repositories": ["o/r"],
             "permissions": {"contents": "read"}},
            {"host": "github.com", "token": "ghs_ownerless", "expiresAt": "2099-01-01T00:00:00Z"}
        ],
        "excluded": [{"repo": "o/x", "reason": "trust_policy_denied"}]
    }}));
    let fake = fake((201, answer)).await;
    let run = fake
        .run(&["env", "--format", "json", "--repo", "o/r"])
        .await;
    run.ok();
    let env = run.env_json();
    assert_eq!(env["GIT_CONFIG_COUNT"], "2");
    assert_eq!(
        env["GIT_CONFIG_KEY_0"],
        "url.https://x-access-token:ghs_fromfake@github.com/o/.insteadOf"
    );
    assert!(!run.stdout.contains("ghs_ownerless"));
    run.assert_stderr("o/x: trust_policy_denied");
}
