//! One decision, one audit event: each refusal and each success of the exchange, the mint, the
//! revocations and the admin changes, sent through the real server, adds exactly one event with
//! the expected kind, action, outcome and reason. Refusals before a signature verified (a bad
//! OIDC token, a forged session) name nobody and add none.
//!
//! Events are counted in the database itself, across every workspace, so an event filed under
//! an unexpected (or deleted) workspace still counts.

use crate::helpers::*;
use serde_json::{json, Value};
use sqlx::SqlitePool;
use sts_broker::dev::DEV_WORKSPACE;

/// The audit table of a running broker, read behind its back.
struct Ledger {
    pool: SqlitePool,
    seen: i64,
}

impl Ledger {
    async fn open(app: &TestApp) -> Self {
        let pool = app.database().await;
        let mut ledger = Self { pool, seen: 0 };
        ledger.seen = ledger.last_seq().await;
        ledger
    }

    async fn last_seq(&self) -> i64 {
        let (seq,): (Option<i64>,) = sqlx::query_as("select max(seq) from audit_events")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        seq.unwrap_or(0)
    }

    /// Events written since the last call, oldest first.
    async fn new_events(&mut self) -> Vec<Value> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("select seq, body from audit_events where seq > $1 order by seq")
                .bind(self.seen)
                .fetch_all(&self.pool)
                .await
                .unwrap();
        if let Some((seq, _)) = rows.last() {
            self.seen = *seq;
        }
        rows.into_iter()
            .map(|(_, body)| serde_json::from_str(&body).unwrap())
            .collect()
    }

    /// Exactly one new event, of `action` with `outcome` and `reason` (`None` = no reason).
    async fn one(
        &mut self,
        case: &str,
        action: &str,
        outcome: &str,
        reason: Option<&str>,
    ) -> Value {
        let events = self.new_events().await;
        assert_eq!(
            events.len(),
            1,
            "{case}: exactly one event, got {events:#?}"
        );
        let event = events.into_iter().next().unwrap();
        assert_eq!(event["action"], action, "{case}: {event}");
        assert_eq!(event["outcome"], outcome, "{case}: {event}");
        assert_eq!(event["reason"].as_str(), reason, "{case}: {event}");
        event
    }

    /// Exactly one new event: `action` refused (`denied`) for `reason`.
    async fn denied(&mut self, case: &str, action: &str, reason: &str) -> Value {
        self.one(case, action, "denied", Some(reason)).await
    }

    /// No new event.
    async fn none(&mut self, case: &str) {
        let events = self.new_events().await;
        assert!(
            events.is_empty(),
            "{case}: no event expected, got {events:#?}"
        );
    }
}

/// `POST {path}` with `body` sent as it is, labelled JSON, and `bearer`.
async fn post_raw(app: &TestApp, path: &str, bearer: &str, body: &str) -> Reply {
    let (post, json) = (reqwest::Method::POST, "application/json");
    app.send_raw(post, path, Some(bearer), json, body).await
}

fn not_actions_claims(app: &TestApp) -> String {
    let mut claims = app
        .world
        .issuer
        .claims_for(&main_job(), sts_broker::dev::DEV_AUDIENCE);
    claims.remove("repository");
    claims.remove("repository_owner");
    claims.remove("repository_owner_id");
    app.world.issuer.sign(&claims)
}

#[tokio::test]
async fn every_exchange_decision_writes_exactly_one_event_and_unverified_tokens_none() {
    let app = spawn_app().await;
    let mut ledger = Ledger::open(&app).await;

    let token = app.oidc_token(&main_job());
    assert_eq!(app.post_exchange(&token).await.status, 200);
    let event = ledger.one("exchange", "exchange", "success", None).await;
    assert_eq!(event["kind"], "exchange");
    assert_eq!(event["actor"]["claims"]["repository"], "acme/infra");

    let r = app.post_exchange(&token).await;
    assert_eq!(r.tag(), "token_replayed");
    let event = ledger.denied("replay", "exchange", "token_replayed").await;
    assert!(event["actor"].get("sessionId").is_none(), "{event}");

    let r = app
        .post_exchange_to(&app.oidc_token(&main_job()), "nope")
        .await;
    assert_eq!(r.tag(), "workspace_not_found");
    ledger
        .denied("unknown workspace", "exchange", "workspace_not_found")
        .await;

    // Signed by the issuer, but expired: past the signature, so audited with the finer reason.
    let mut expired = app
        .world
        .issuer
        .claims_for(&main_job(), sts_broker::dev::DEV_AUDIENCE);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    expired.insert("iat".into(), json!(now - 7200));
    expired.insert("nbf".into(), json!(now - 7200));
    expired.insert("exp".into(), json!(now - 3600));
    let r = app.post_exchange(&app.world.issuer.sign(&expired)).await;
    assert_eq!(r.tag(), "invalid_token");
    ledger.denied("expired", "exchange", "token_expired").await;

    let forged = format!("{}x", app.oidc_token(&main_job()));
    assert_eq!(app.post_exchange(&forged).await.tag(), "invalid_token");
    assert_eq!(app.post_exchange("not.a.jwt").await.tag(), "invalid_token");
    ledger.none("tokens that never verified").await;
}

#[tokio::test]
async fn every_mint_decision_writes_exactly_one_event_and_forged_sessions_none() {
    let (app, session) = spawn_app_in_session().await;
    let mut ledger = Ledger::open(&app).await;

    let r = app.mint(&session, &["acme/modules", "acme/payroll"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let event = ledger.one("mint", "mint", "success", None).await;
    assert_eq!(event["kind"], "mint");
    assert_eq!(event["exclusions"][0]["reason"], "no_trust_policy");

    let r = app.mint_under(&session, &["nope"], "Bad").await;
    assert_eq!(r.tag(), "invalid_request");
    let event = ledger
        .denied("invalid sources", "mint", "invalid_request")
        .await;
    assert_eq!(
        event["actor"]["claims"]["repository"], "acme/infra",
        "{event}"
    );

    let r = post_raw(&app, "/api/v1/sts", &session, "{not json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    ledger
        .denied("unparsable body", "mint", "invalid_request")
        .await;

    let r = app.post_exchange(&not_actions_claims(&app)).await;
    let oidc_session = r.data()["token"].as_str().unwrap().to_owned();
    ledger.new_events().await;
    let r = app.post_sts(&oidc_session, json!({})).await;
    assert_eq!(r.tag(), "not_github_actions_session");
    ledger
        .denied(
            "not a github actions session",
            "mint",
            "not_github_actions_session",
        )
        .await;

    let forged = format!("{session}x");
    assert_eq!(app.post_sts(&forged, json!({})).await.status, 401);
    assert_eq!(app.post_sts("garbage", json!({})).await.status, 401);
    ledger.none("session tokens that never verified").await;

    let ended = app.main_session().await;
    assert_eq!(app.delete_session(&ended).await.status, 200);
    ledger.new_events().await;
    let r = app.post_sts(&ended, json!({})).await;
    assert_eq!(r.tag(), "session_revoked");
    let event = ledger
        .denied("revoked session row", "mint", "session_revoked")
        .await;
    assert_eq!(event["workspaceId"], DEV_WORKSPACE);

    let r = app
        .admin(
            reqwest::Method::PATCH,
            "/workspaces/acme",
            Some(json!({ "stsEnabled": false })),
        )
        .await;
    assert_eq!(r.status, 200);
    ledger
        .one("entitlement off", "workspace.update", "success", None)
        .await;
    let r = app.post_sts(&session, json!({})).await;
    assert_eq!(r.tag(), "sts_not_entitled");
    ledger
        .denied("not entitled", "mint", "sts_not_entitled")
        .await;
}

#[tokio::test]
async fn a_github_failure_while_planning_is_audited() {
    let (app, session) = spawn_app_in_session().await;
    let mut ledger = Ledger::open(&app).await;
    // Every GitHub call fails from here on (more than all retries of the planning calls).
    app.world.github.fail_next(50, 502, None);

    let r = app.mint(&session, &["acme/modules"]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    ledger
        .one(
            "github down while planning",
            "mint",
            "failure",
            Some(r.tag()),
        )
        .await;
}

#[tokio::test]
async fn every_revocation_writes_exactly_one_event_also_when_the_store_fails_after_github() {
    let (app, session) = spawn_app_in_session().await;
    let r = app.mint(&session, TWO_OWNERS).await;
    let minted = tokens(&r);
    let mut ledger = Ledger::open(&app).await;

    let r = app
        .post_revoke(&session, json!({ "ids": [minted[0]["id"]] }))
        .await;
    assert_eq!(r.data()["revoked"], 1, "{}", r.body);
    let event = ledger.one("revoke by id", "revoke", "success", None).await;
    assert_eq!(event["tokens"][0]["id"], minted[0]["id"]);

    let r = post_raw(&app, "/api/v1/sts/revoke", &session, "[1, 2]").await;
    assert_eq!(r.status, 400, "{}", r.body);
    ledger
        .denied("unparsable revoke body", "revoke", "invalid_request")
        .await;

    // The store refuses to mark tokens revoked, after GitHub revoked them.
    sqlx::query(
        "create trigger no_revoke before update on issued_tokens \
         begin select raise(abort, 'read-only'); end",
    )
    .execute(&ledger.pool)
    .await
    .unwrap();
    let r = app.post_revoke(&session, json!({})).await;
    assert_eq!(r.status, 500, "{}", r.body);
    let event = ledger
        .one(
            "github revoked, the store failed",
            "revoke",
            "failure",
            Some("database_error"),
        )
        .await;
    assert_eq!(
        event["tokens"][0]["id"], minted[1]["id"],
        "the event names the token github revoked: {event}"
    );
    let token = minted[1]["token"].as_str().unwrap();
    assert_eq!(
        app.github_get_repo(token, "acme-labs/shared-modules").await,
        401
    );
    sqlx::query("drop trigger no_revoke")
        .execute(&ledger.pool)
        .await
        .unwrap();

    let r = app.delete_session(&session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    ledger
        .one("logout", "session.revoke", "success", None)
        .await;
    assert_eq!(app.delete_session("garbage").await.status, 401);
    ledger.none("logout with a forged session").await;
}

#[tokio::test]
async fn every_admin_change_writes_exactly_one_event_done_or_refused() {
    let app = spawn_app().await;
    let mut ledger = Ledger::open(&app).await;
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;

    let body = json!({ "id": "beta", "name": "Beta" });
    let r = app
        .admin(post.clone(), "/workspaces", Some(body.clone()))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    ledger
        .one("create", "workspace.create", "success", None)
        .await;
    let r = app.admin(post.clone(), "/workspaces", Some(body)).await;
    assert_eq!(r.tag(), "workspace_exists");
    ledger
        .denied("create again", "workspace.create", "workspace_exists")
        .await;

    let r = app.put_policy_yaml("beta", "default", "rules: [").await;
    assert_eq!(r.tag(), "policy_invalid", "{}", r.body);
    let event = ledger
        .denied("invalid policy", "policy.put", "policy_invalid")
        .await;
    assert!(event["details"]["validationErrors"].is_array(), "{event}");

    let missing = [
        (
            "unlink what is not linked",
            "/workspaces/beta/installations/acme",
            "installation.unlink",
            "installation_not_linked",
        ),
        (
            "delete a missing policy",
            "/workspaces/beta/policies/default",
            "policy.delete",
            "policy_not_found",
        ),
    ];
    for (case, path, action, reason) in missing {
        let r = app.admin(delete.clone(), path, None).await;
        assert_eq!(r.tag(), reason, "{case}");
        ledger.denied(case, action, reason).await;
    }

    let r = app
        .admin(
            post,
            "/workspaces/acme/revocations",
            Some(json!({ "all": true })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    ledger
        .one("admin revoke", "admin.revoke", "success", None)
        .await;

    let r = app.admin(delete, "/workspaces/beta", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    ledger
        .one("delete", "workspace.delete", "success", None)
        .await;
}

/// The mint's events name, per token, the policy version and the rules that granted it; the
/// failure event of a partial mint names each token GitHub minted, by id and fingerprint, and
/// whether it was revoked.
#[tokio::test]
async fn mint_events_name_each_tokens_policy_version_and_rules_and_a_partial_failure_each_token() {
    let app = spawn_app().await;
    let session = app.session_on("refs/tags/v1.0.0").await;
    let mut ledger = Ledger::open(&app).await;
    let sources = json!({ "sources": ["acme/website"] });
    let r = app.post_sts(&session, sources.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let event = ledger.one("mint", "mint", "success", None).await;
    assert_eq!(event["tokens"][0]["policyVersion"], 1, "{event}");
    assert_eq!(event["tokens"][0]["attempts"], 1, "{event}");
    assert_eq!(
        event["tokens"][0]["rules"],
        json!(["release-tags"]),
        "{event}"
    );

    // Two tokens: acme (caches warm now) and acme-labs; GitHub refuses one of the two POSTs
    // with a 401, which no retry can mend and no exclusion describes.
    let session = app.main_session().await;
    let both = json!({ "sources": TWO_OWNERS });
    let r = app.post_sts(&session, both.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    ledger.new_events().await;
    let (minted_before, _) = app.world.github.counts();
    app.world.github.fail_next(1, 401, None);
    let r = app.post_sts(&session, both).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let (minted_after, _) = app.world.github.counts();
    assert_eq!(
        minted_after - minted_before,
        1,
        "github minted one of the two"
    );
    let event = ledger
        .one("partial mint", "mint", "failure", Some(r.tag()))
        .await;
    let audited = event["tokens"].as_array().unwrap();
    assert_eq!(audited.len(), 1, "{event}");
    assert!(
        audited[0]["id"].as_str().unwrap().starts_with("tok_"),
        "{event}"
    );
    assert!(
        audited[0]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{event}"
    );
    assert_eq!(audited[0]["revoked"], true, "{event}");
    assert_eq!(audited[0]["policyVersion"], 1, "{event}");
    assert_eq!(audited[0]["rules"], json!(["infra-main"]), "{event}");

    // A transient 502 on the token POST is retried; the event says GitHub took two attempts.
    app.world.github.fail_next(1, 502, None);
    let r = app.mint(&session, &["acme/modules"]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let event = ledger.one("retried mint", "mint", "success", None).await;
    assert_eq!(event["tokens"][0]["attempts"], 2, "{event}");
}
