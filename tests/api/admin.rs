use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// `POST /admin/workspaces` with `body`.
async fn create_workspace(app: &TestApp, body: Value) -> Reply {
    app.admin(Method::POST, "/workspaces", Some(body)).await
}

#[tokio::test]
async fn admin_endpoints_require_the_operator_token() {
    let app = spawn_app().await;
    let res = app.get("/api/v1/admin/workspaces").await;
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(app.url("/api/v1/admin/workspaces"))
        .bearer_auth("x".repeat(40))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let r = app.admin(Method::GET, "/workspaces", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["workspaces"][0]["id"], "acme");
}

#[tokio::test]
async fn workspaces_are_created_once_and_unknown_fields_are_rejected() {
    let app = spawn_app().await;
    let r = create_workspace(&app, json!({ "id": "beta", "name": "Beta" })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.data()["stsEnabled"], true);
    let r = create_workspace(&app, json!({ "id": "beta", "name": "Beta" })).await;
    assert_eq!(r.status, 409);
    let r = create_workspace(&app, json!({ "id": "gamma", "name": "G", "colour": 1 })).await;
    assert_eq!(r.status, 400);
    let r = create_workspace(&app, json!({ "id": "Bad Id", "name": "x" })).await;
    assert_eq!(r.status, 400);
    assert!(!r.data()["validationErrors"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_installation_links_to_one_workspace_only() {
    let app = spawn_app().await;
    create_workspace(&app, json!({ "id": "beta", "name": "Beta" })).await;
    let operator = app.operator();
    let r = operator.link_installation("beta", "acme").await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = operator
        .link_installation("beta", "nobody-installed-here")
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .admin(Method::GET, "/workspaces/acme/installations", None)
        .await;
    let owners: Vec<_> = r.data()["installations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["owner"].clone())
        .collect();
    assert_eq!(
        owners,
        vec![json!("acme"), json!("acme-labs"), json!("dormant-co")]
    );
    let r = app
        .admin(
            Method::DELETE,
            "/workspaces/acme/installations/acme-labs",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = operator.link_installation("beta", "ACME-LABS").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.data()["owner"],
        "acme-labs",
        "the login as GitHub spells it"
    );
}

#[tokio::test]
async fn invalid_policies_are_rejected_with_every_error_and_valid_ones_are_versioned() {
    let app = spawn_app().await;
    let bad = "rules:\n  - name: everyone\n    match:\n      ref: refs/heads/main\n    grant:\n      repositories: [\"acme/*\"]\n      permissions: {contents: writ}\n";
    let r = app.put_policy_yaml("acme", "bad", bad).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.data()["validationErrors"].as_array().unwrap().len() >= 2,
        "{}",
        r.body
    );
    let r = app
        .put_policy_yaml(
            "acme",
            "default",
            &sts_broker::dev::dev_policy(&app.world.issuer.issuer()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["version"], 2);
    let r = app
        .admin(Method::GET, "/workspaces/acme/policies/default", None)
        .await;
    assert_eq!(r.data()["version"], 2);
    let r = app
        .admin(Method::DELETE, "/workspaces/acme/policies/default", None)
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .admin(Method::GET, "/workspaces/acme/policies/default", None)
        .await;
    assert_eq!(r.status, 404);
    let path = "/api/v1/admin/workspaces/acme/policies/x";
    let token = Some(app.world.admin_token.as_str());
    let r = app
        .send_raw(Method::PUT, path, token, "text/plain", "rules: []")
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn audit_pages_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    let all = app.audit_events().await;
    assert!(
        all.len() >= 5,
        "seed writes workspace, 3 links and a policy"
    );
    let r = app
        .admin(Method::GET, "/workspaces/acme/audit?limit=2", None)
        .await;
    let first = r.data()["events"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["id"], all[0]["id"]);
    let cursor = r.data()["nextCursor"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            Method::GET,
            &format!("/workspaces/acme/audit?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(r.data()["events"][0]["id"], all[2]["id"]);
}

#[tokio::test]
async fn ops_endpoints_answer_without_an_envelope() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    app.main_session().await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("sts_exchanges_total"), "{metrics}");
    assert!(metrics.contains("outcome=\"success\""), "{metrics}");
    let r = app.get("/api/v1/nope").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn the_token_list_filters_by_state_before_it_applies_the_limit() {
    let app = spawn_app().await;
    let mint = |session: String| {
        let app = &app;
        async move {
            let r = app.mint(&session, &["acme/modules"]).await;
            assert_eq!(r.status, 200, "{}", r.body);
            tokens(&r)[0]["id"].as_str().unwrap().to_owned()
        }
    };
    let first_session = app.main_session().await;
    let oldest = mint(first_session.clone()).await;
    let r = app.post_revoke(&first_session, json!({})).await;
    assert_eq!(r.data()["revoked"], 1);
    let middle = mint(app.main_session().await).await;
    let newest = mint(app.main_session().await).await;

    let list = |query: &'static str| {
        let app = &app;
        async move {
            let path = format!("/workspaces/acme/tokens{query}");
            let r = app.operator().expect(200, Method::GET, &path, None).await;
            string_pairs(r.data()["tokens"].as_array().unwrap(), "id", "state")
        }
    };
    let revoked = (oldest, "revoked".to_owned());
    let active = [(newest, "active".to_owned()), (middle, "active".to_owned())];
    // The two newest rows are active; the revoked one is still found with a page of one.
    assert_eq!(list("?state=revoked&limit=1").await, vec![revoked.clone()]);
    let page = list("?state=active&limit=1").await;
    assert!(page.len() == 1 && active.contains(&page[0]), "{page:?}");
    let mut page = list("?state=active").await;
    page.sort();
    let mut both = active.to_vec();
    both.sort();
    assert_eq!(page, both);
    assert_eq!(list("?state=expired").await, vec![]);
    let mut page = list("?limit=2").await;
    page.sort();
    assert_eq!(page, both, "newest first: the revoked token is the oldest");
    assert_eq!(list("").await.last(), Some(&revoked));
    assert_eq!(list("").await.len(), 3);
    let r = app
        .admin(Method::GET, "/workspaces/acme/tokens?state=live", None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.tag(), "invalid_request");
}
