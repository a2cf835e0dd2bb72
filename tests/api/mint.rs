use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn mint_groups_by_installation_and_explains_every_exclusion() {
    let (app, session) = spawn_app_in_session().await;
    let r = app
        .post_sts(
            &session,
            json!({
                "sources": ["acme/modules", "acme/terraform-aws-vpc", "acme-labs/shared-modules",
                            "acme/website", "acme/payroll", "dormant-co/legacy", "acme/terraform-missing",
                            "stranger/repo"],
                "policyName": "default",
                "futureField": true
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let toks = tokens(&r);
    assert_eq!(toks.len(), 2, "{}", r.body);
    let acme = toks.iter().find(|t| t["owner"] == "acme").unwrap();
    assert_eq!(
        acme["repositories"],
        json!(["acme/modules", "acme/terraform-aws-vpc"])
    );
    assert_eq!(acme["permissions"]["contents"], "read");
    let git_host = app
        .world
        .git_host()
        .expect("the dev world's git server (is git installed?)");
    assert_eq!(acme["host"], git_host);
    assert_eq!(acme["installationId"], 100);
    let mut ex = excluded(&r);
    ex.sort();
    assert_eq!(
        ex,
        exclusions(&[
            ("acme/payroll", "no_trust_policy"),
            ("acme/terraform-missing", "not_installed_in_workspace"),
            ("acme/website", "trust_policy_denied"),
            ("dormant-co/legacy", "installation_suspended"),
            ("stranger/repo", "no_trust_policy"),
        ])
    );
    let token = acme["token"].as_str().unwrap();
    assert_eq!(app.github_get_repo(token, "acme/modules").await, 200);
    assert_eq!(app.github_get_repo(token, "acme/payroll").await, 404);
}

#[tokio::test]
async fn mint_without_sources_returns_what_the_rules_grant_and_lists_no_exclusions() {
    let (app, session) = spawn_app_in_session().await;
    let r = app.mint_default_policy(&session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let toks = tokens(&r);
    let acme = toks.iter().find(|t| t["owner"] == "acme").unwrap();
    assert_eq!(
        acme["repositories"],
        json!([
            "acme/modules",
            "acme/terraform-aws-eks",
            "acme/terraform-aws-vpc"
        ])
    );
    assert!(toks.iter().any(|t| t["owner"] == "acme-labs"));
    assert!(excluded(&r).is_empty());
}

#[tokio::test]
async fn mint_with_an_absent_policy_excludes_every_source_as_no_trust_policy() {
    let (app, session) = spawn_app_in_session().await;
    let r = app.mint_under(&session, &["acme/modules"], "nope").await;
    assert_all_excluded(&r, &[("acme/modules", "no_trust_policy")]);
}

#[tokio::test]
async fn a_job_from_another_branch_is_denied_by_the_policy() {
    let app = spawn_app().await;
    let session = app.session_on("refs/heads/feature").await;
    let r = app.mint(&session, &["acme/modules"]).await;
    assert_all_excluded(&r, &[("acme/modules", "trust_policy_denied")]);
}

#[tokio::test]
async fn mint_is_403_when_the_workspace_is_not_entitled_and_401_without_a_valid_session() {
    let (app, session) = spawn_app_in_session().await;
    app.operator()
        .expect(
            200,
            reqwest::Method::PATCH,
            "/workspaces/acme",
            Some(json!({ "stsEnabled": false })),
        )
        .await;
    let r = app.mint_default_policy(&session).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.tag(), "sts_not_entitled");
    let r = app.post_sts("not-a-session", json!({})).await;
    assert_eq!(r.status, 401);
    let res = app
        .http
        .post(app.url("/api/v1/sts"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn a_session_that_is_not_from_github_actions_gets_400() {
    let app = spawn_app().await;
    let mut claims = app.claims(&main_job());
    claims.remove("repository");
    claims.remove("repository_owner");
    claims.remove("repository_owner_id");
    let r = app.post_exchange(&app.world.issuer.sign(&claims)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.data()["token"].as_str().unwrap().to_owned();
    let r = app.post_sts(&session, json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.tag(), "not_github_actions_session");
}

#[tokio::test]
async fn every_issuance_is_audited_with_fingerprints_and_never_the_token() {
    let (app, session) = spawn_app_in_session().await;
    let r = app.mint(&session, &["acme/modules", "acme/payroll"]).await;
    let token = first_token(&r);
    let events = app.audit_events().await;
    let mint = events.iter().find(|e| e["action"] == "mint").unwrap();
    assert_eq!(mint["outcome"], "success");
    assert_eq!(mint["policyName"], "default");
    assert_eq!(mint["policyVersion"], 1);
    assert!(mint["tokens"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(mint["exclusions"][0]["reason"], "no_trust_policy");
    assert_eq!(mint["actor"]["claims"]["repository"], "acme/infra");
    assert!(!serde_json::to_string(&events).unwrap().contains(&token));
    let r = app
        .admin(
            reqwest::Method::GET,
            "/workspaces/acme/tokens?state=active",
            None,
        )
        .await;
    let listed = r.data()["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("token").is_none());
    assert!(!r.body.to_string().contains(&token));
}

#[tokio::test]
async fn if_the_audit_write_fails_the_minted_tokens_are_revoked_and_the_caller_gets_an_error() {
    let (app, session) = spawn_app_in_session().await;
    // Break the audit table under the running broker: a real write failure, not a mock.
    let pool = app.database().await;
    sqlx::query("alter table audit_events rename to audit_events_gone")
        .execute(&pool)
        .await
        .unwrap();
    let (minted_before, revoked_before) = app.world.github.counts();
    let r = app.mint(&session, &["acme/modules"]).await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.tag(), "audit_write_failed");
    assert!(!r.body.to_string().contains("ghs_"));
    let (minted_after, revoked_after) = app.world.github.counts();
    assert!(minted_after > minted_before, "github minted");
    assert_eq!(
        revoked_after - revoked_before,
        minted_after - minted_before,
        "every token minted during the failed request was revoked at github"
    );
}

/// dormant-co (installation 300) is linked while active, so the broker caches it as active; then
/// GitHub suspends it. The first to learn is the repository listing the planner asks for.
async fn app_whose_cached_installation_was_suspended_since() -> TestApp {
    const DORMANT: i64 = 300;
    let app = spawn_app_with(|world| world.github.set_suspended(DORMANT, false)).await;
    app.world.github.set_suspended(DORMANT, true);
    app
}

#[tokio::test]
async fn a_suspension_seen_only_by_the_repository_listing_excludes_the_source() {
    let app = app_whose_cached_installation_was_suspended_since().await;
    let session = app.main_session().await;
    let r = app
        .mint_under(&session, &["acme/modules", "dormant-co/legacy"], "default")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        tokens(&r)
            .iter()
            .map(|t| t["owner"].clone())
            .collect::<Vec<_>>(),
        vec![json!("acme")]
    );
    assert_eq!(
        excluded(&r),
        exclusions(&[("dormant-co/legacy", "installation_suspended")])
    );
}

#[tokio::test]
async fn a_suspension_seen_only_by_the_repository_listing_skips_the_owner_without_sources() {
    let app = app_whose_cached_installation_was_suspended_since().await;
    let session = app.main_session().await;
    let r = app.mint_default_policy(&session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut owners: Vec<String> = tokens(&r)
        .iter()
        .map(|t| t["owner"].as_str().unwrap().to_owned())
        .collect();
    owners.sort();
    assert_eq!(owners, ["acme", "acme-labs"]);
    assert!(excluded(&r).is_empty(), "without sources nothing is listed");
    let events = app.audit_events().await;
    let mint = events.iter().find(|e| e["action"] == "mint").unwrap();
    assert_eq!(mint["outcome"], "success");
    assert_eq!(
        mint["details"]["skipped"],
        json!([{ "repo": "dormant-co/*", "reason": "installation_suspended" }]),
        "{mint}"
    );
}
