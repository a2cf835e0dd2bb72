//! Request bodies held to what `openapi.yaml` says, as an outside fuzzer (schemathesis) checks
//! them: objects only, no `null` for a field the spec does not mark nullable, and what the
//! schema allows is accepted.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// `body` is refused with `400 invalid_request`, and `why` appears in the problem.
#[track_caller]
fn assert_refused(r: &Reply, why: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.tag(), "invalid_request", "{}", r.body);
    assert!(r.body.to_string().contains(why), "{why}: {}", r.body);
}

/// `POST /admin/workspaces` with `body`.
async fn create_workspace(app: &TestApp, body: Value) -> Reply {
    app.admin(Method::POST, "/workspaces", Some(body)).await
}

#[tokio::test]
async fn a_json_array_where_the_spec_says_object_is_refused_and_mints_nothing() {
    let app = spawn_app().await;
    let session = app.session(&main_job()).await;
    let before = app.world.github.counts();
    for body in [
        json!([null, null]),
        json!([]),
        json!(["acme/modules"]),
        json!(null),
    ] {
        let r = app.post_sts(&session, body.clone()).await;
        assert_refused(&r, "expected a JSON object");
        let r = app.post_revoke(&session, body).await;
        assert_refused(&r, "expected a JSON object");
    }
    assert_eq!(
        app.world.github.counts(),
        before,
        "nothing minted or revoked"
    );
    let r = create_workspace(&app, json!(["x", "X"])).await;
    assert_refused(&r, "expected a JSON object");
    let r = app
        .admin(
            Method::POST,
            "/workspaces/acme/revocations",
            Some(json!([null])),
        )
        .await;
    assert_refused(&r, "expected a JSON object");
}

#[tokio::test]
async fn null_is_not_absent_for_optional_fields() {
    let app = spawn_app().await;
    let session = app.session(&main_job()).await;
    for body in [json!({"sources": null}), json!({"policyName": null})] {
        assert_refused(&app.post_sts(&session, body).await, "invalid type: null");
    }
    assert_refused(
        &app.post_revoke(&session, json!({"ids": null})).await,
        "invalid type: null",
    );
    let r = create_workspace(
        &app,
        json!({"id": "nulls", "name": "N", "stsEnabled": null}),
    )
    .await;
    assert_refused(&r, "invalid type: null");
    let cases: [Value; 4] = [
        json!({"all": null}),
        json!({"tokenIds": null}),
        json!({"sessionId": null}),
        json!({"repository": null, "all": true}),
    ];
    for body in cases {
        let r = app
            .admin(Method::POST, "/workspaces/acme/revocations", Some(body))
            .await;
        assert_refused(&r, "invalid type: null");
    }
    // Absent still means the default.
    let r = create_workspace(&app, json!({"id": "defaults", "name": "D"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.data()["stsEnabled"], true);
}

#[tokio::test]
async fn workspace_names_follow_the_schema_blank_refused_length_in_characters() {
    let app = spawn_app().await;
    // The schema's `pattern: '\S'` says why a blank name is refused.
    for blank in [" ", "\t \n"] {
        let r = create_workspace(&app, json!({"id": "blank", "name": blank})).await;
        assert_refused(&r, "not all blank");
    }
    // `maxLength: 200` counts characters: 200 two-byte characters fit.
    let long = "é".repeat(200);
    let r = create_workspace(&app, json!({"id": "accents", "name": long})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = create_workspace(&app, json!({"id": "toolong", "name": "é".repeat(201)})).await;
    assert_refused(&r, "1 to 200 characters");
}
