//! Policy versions, rollback, lint warnings on `PUT`, and downscoping on `/sts`, through the
//! real server.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sts_broker::dev::DEV_WORKSPACE;

const V1: &str = "rules:\n  - name: r\n    match: {repository_owner_id: '1001', ref: refs/heads/main}\n    grant: {repositories: [acme/modules]}\n";
const V2: &str = "rules:\n  - name: r\n    match: {repository_owner_id: '1001'}\n    grant:\n      repositories: [acme/*]\n      permissions: {contents: write}\n";

fn path(rest: &str) -> String {
    format!("/workspaces/{DEV_WORKSPACE}/policies/p{rest}")
}

#[tokio::test]
async fn versions_are_listed_newest_first_read_back_and_rolled_back_with_an_audit_event() {
    let app = spawn_app().await;
    let admin = app.operator();
    assert_eq!(
        app.put_policy_yaml(DEV_WORKSPACE, "p", V1).await.status,
        201
    );
    let put = app.put_policy_yaml(DEV_WORKSPACE, "p", V2).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let codes = strings(&put.data()["warnings"], "code");
    assert_eq!(
        codes,
        ["write_without_ref", "whole_installation_write"],
        "{}",
        put.body
    );
    assert_eq!(
        put.data()["warnings"][0]["path"],
        "rules[0].grant.permissions"
    );

    let listed = admin
        .expect(200, Method::GET, &path("/versions"), None)
        .await;
    let versions = listed.data()["versions"].as_array().unwrap().clone();
    let summary: Vec<(i64, bool, String)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["current"].as_bool().unwrap(),
                v["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    assert_eq!(summary, [(2, true, sha(V2)), (1, false, sha(V1))]);
    assert!(versions[0]["createdAt"].is_string());

    let one = admin
        .expect(200, Method::GET, &path("?version=1"), None)
        .await;
    assert_eq!(
        (
            one.data()["version"].as_i64(),
            one.data()["source"].as_str()
        ),
        (Some(1), Some(V1))
    );
    assert!(one.data().get("warnings").is_none(), "{}", one.body);
    admin
        .expect(404, Method::GET, &path("?version=7"), None)
        .await;
    admin
        .expect(400, Method::GET, &path("?version=x"), None)
        .await;

    let back = admin
        .expect(
            200,
            Method::POST,
            &path("/rollback"),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(
        (
            back.data()["version"].as_i64(),
            back.data()["source"].as_str()
        ),
        (Some(3), Some(V1))
    );
    assert_eq!(back.data()["warnings"], json!([]));
    let listed = admin
        .expect(200, Method::GET, &path("/versions"), None)
        .await;
    let v = &listed.data()["versions"][0];
    assert_eq!(
        (
            v["version"].as_i64(),
            v["current"].as_bool(),
            v["sha256"].as_str()
        ),
        (Some(3), Some(true), Some(sha(V1).as_str()))
    );

    let events = app.audit_events().await;
    let rollback = events
        .iter()
        .find(|e| e["details"]["fromVersion"] == 1)
        .expect("a rollback event");
    assert_eq!(rollback["policyVersion"], 3, "{rollback}");
    assert_eq!(rollback["outcome"], "success", "{rollback}");

    admin
        .expect(
            404,
            Method::POST,
            &path("/rollback"),
            Some(json!({"version": 9})),
        )
        .await;
    admin
        .expect(
            400,
            Method::POST,
            &path("/rollback"),
            Some(json!({"version": 1, "x": 1})),
        )
        .await;
    admin
        .expect(
            404,
            Method::GET,
            &format!("/workspaces/{DEV_WORKSPACE}/policies/never/versions"),
            None,
        )
        .await;
    // A deleted policy keeps its history; none of it is current.
    admin.expect(200, Method::DELETE, &path(""), None).await;
    let listed = admin
        .expect(200, Method::GET, &path("/versions"), None)
        .await;
    assert!(listed.data()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["current"] == false));
}

#[tokio::test]
async fn a_downscoped_mint_gets_the_intersection_and_sources_left_with_nothing_are_denied() {
    let app = spawn_app().await;
    let session = app.session(&main_job()).await;
    let r = app
        .post_sts(
            &session,
            json!({"sources": ["acme/modules"], "permissions": {"contents": "read"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // GitHub adds `metadata: read` to every token.
    assert_eq!(
        tokens(&r)[0]["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );
    // The default policy grants contents read only: asking for issues leaves nothing.
    let r = app
        .post_sts(
            &session,
            json!({"sources": ["acme/modules"], "permissions": {"issues": "read"}}),
        )
        .await;
    assert_all_excluded(&r, &[("acme/modules", "trust_policy_denied")]);
    // Asking for more than granted never gets more.
    let r = app
        .post_sts(&session, json!({"sources": ["acme/modules"], "permissions": {"contents": "write", "issues": "read"}}))
        .await;
    assert_eq!(
        tokens(&r)[0]["permissions"],
        json!({"contents": "read", "metadata": "read"}),
        "{}",
        r.body
    );
    // Without sources, a grant left with nothing is simply not minted.
    let r = app
        .post_sts(&session, json!({"permissions": {"issues": "read"}}))
        .await;
    assert_eq!((r.status, tokens(&r).len()), (200, 0), "{}", r.body);
    // An unknown permission is a bad request.
    let r = app
        .post_sts(&session, json!({"permissions": {"nope": "read"}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}
