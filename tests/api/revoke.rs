use crate::helpers::*;
use serde_json::{json, Value};

/// An administrator's `POST /admin/workspaces/acme/revocations` with `body`.
async fn revoke_in_acme(app: &TestApp, body: Value) -> Reply {
    app.admin(
        reqwest::Method::POST,
        "/workspaces/acme/revocations",
        Some(body),
    )
    .await
}

#[tokio::test]
async fn revoking_by_id_kills_that_token_at_github_and_is_idempotent() {
    let (app, session) = spawn_app_in_session().await;
    let r = app.mint(&session, TWO_OWNERS).await;
    let toks = tokens(&r);
    let acme = toks.iter().find(|t| t["owner"] == "acme").unwrap();
    let labs = toks.iter().find(|t| t["owner"] == "acme-labs").unwrap();
    let r = app
        .post_revoke(&session, json!({ "ids": [acme["id"]] }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["revoked"], 1);
    assert_eq!(
        app.github_get_repo(acme["token"].as_str().unwrap(), "acme/modules")
            .await,
        401
    );
    assert_eq!(
        app.github_get_repo(labs["token"].as_str().unwrap(), "acme-labs/shared-modules")
            .await,
        200
    );
    let again = app
        .post_revoke(&session, json!({ "ids": [acme["id"]] }))
        .await;
    assert_eq!(again.data()["revoked"], 0);
}

#[tokio::test]
async fn ending_the_session_revokes_its_tokens_and_the_session() {
    let (app, session) = spawn_app_in_session().await;
    let token = first_token(&app.mint(&session, &["acme/modules"]).await);
    let r = app.delete_session(&session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["revoked"], 1);
    assert_eq!(app.github_get_repo(&token, "acme/modules").await, 401);
    let r = app.post_sts(&session, json!({})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.tag(), "session_revoked");
    let again = app.delete_session(&session).await;
    assert_eq!(again.status, 200, "logout is idempotent: {}", again.body);
    assert_eq!(again.data()["revoked"], 0);
}

#[tokio::test]
async fn an_administrator_revokes_by_repository_and_everything_at_once() {
    let app = spawn_app().await;
    let s1 = app.main_session().await;
    let s2 = app.main_session().await;
    let t1 = tokens(&app.mint(&s1, &["acme/modules"]).await);
    let t2 = tokens(&app.mint(&s2, &["acme-labs/shared-modules"]).await);
    let r = revoke_in_acme(&app, json!({ "repository": "acme/modules" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["revoked"], 1);
    assert_eq!(
        app.github_get_repo(t1[0]["token"].as_str().unwrap(), "acme/modules")
            .await,
        401
    );
    assert_eq!(
        app.github_get_repo(t2[0]["token"].as_str().unwrap(), "acme-labs/shared-modules")
            .await,
        200
    );
    let r = revoke_in_acme(&app, json!({ "all": true })).await;
    assert_eq!(r.data()["revoked"], 1);
    assert_eq!(
        app.github_get_repo(t2[0]["token"].as_str().unwrap(), "acme-labs/shared-modules")
            .await,
        401
    );
    let r = revoke_in_acme(&app, json!({})).await;
    assert_eq!(r.status, 400);
    let events = app.audit_events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["action"] == "admin.revoke")
            .count(),
        2
    );
}
