//! Integrity of what a workspace grants, through the real server: a deleted workspace's policy
//! does not come back (on SQLite, on PostgreSQL, across two replicas), an admin revocation stays
//! inside the workspace it names, and a caller no rule is meant for learns nothing.

use crate::helpers::*;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::ActionsJob;

/// Workspace of the policy-resurrection scenario (not seeded: the scenario builds it).
const WS: &str = "phoenix";

/// One broker's API, as the operator and as CI jobs of the world's issuer.
struct Api<'a> {
    world: &'a DevWorld,
    url: &'a str,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(world: &'a DevWorld, broker: &'a RunningBroker) -> Self {
        Self {
            world,
            url: &broker.url,
            http: reqwest::Client::new(),
        }
    }

    fn operator(&self) -> AdminApi<'_> {
        AdminApi {
            http: &self.http,
            base: self.url,
            token: &self.world.admin_token,
        }
    }

    fn ci(&self) -> BrokerApi<'_> {
        BrokerApi {
            http: &self.http,
            base: self.url,
        }
    }

    /// Store a policy version (YAML, `ISSUER` replaced by the world's issuer); its version.
    async fn put_policy(&self, ws: &str, yaml: &str) -> i64 {
        let yaml = yaml.replace("ISSUER", &self.world.issuer.issuer());
        let r = self.operator().put_policy_yaml(ws, "default", &yaml).await;
        assert!(matches!(r.status, 200 | 201), "{}", r.body);
        r.data()["version"].as_i64().unwrap()
    }

    /// A workspace with the App's installation on `owner` linked.
    async fn workspace_linking(&self, ws: &str, owner: &str) {
        let operator = self.operator();
        operator.create_workspace(ws, ws).await;
        let r = operator.link_installation(ws, owner).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// A fresh session of `job` in `ws`.
    async fn session(&self, job: &ActionsJob, ws: &str) -> String {
        let token = self.world.issuer.token_for(job, DEV_AUDIENCE);
        self.ci().session_in(&token, ws).await
    }

    async fn mint(&self, session: &str, sources: &[&str]) -> Reply {
        let r = self.ci().mint(session, sources).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r
    }

    /// The newest audit event of `ws` with `action`.
    async fn last_event(&self, ws: &str, action: &str) -> Value {
        let events = self.operator().audit_events(ws).await;
        events
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} event in {events:?}"))
    }
}

/// Version 1 before the deletion: owner 1001 (acme) may read all of acme-labs.
const GRANTS_ACME: &str = r#"
rules:
  - name: acme-reads-labs
    issuer: ISSUER
    match: {repository_owner_id: "1001"}
    grant:
      repositories: ["acme-labs/*"]
"#;

/// Version 1 after the workspace was re-created: only owner 3001 (acme-labs itself).
const GRANTS_ONLY_LABS: &str = r#"
rules:
  - name: labs-only
    issuer: ISSUER
    match: {repository_owner_id: "3001"}
    grant:
      repositories: ["acme-labs/*"]
"#;

/// The attack: fill the compiled-policy cache of `first` and `second` with the workspace's v1,
/// delete and re-create the workspace through `first` with a different v1, and mint at `second`
/// as the owner the old v1 admitted. The old grant must not come back.
async fn a_deleted_workspaces_policy_does_not_come_back(first: &Api<'_>, second: &Api<'_>) {
    let shared = "acme-labs/shared-modules";
    first.workspace_linking(WS, "acme-labs").await;
    assert_eq!(first.put_policy(WS, GRANTS_ACME).await, 1);
    for api in [first, second] {
        let session = api.session(&main_job(), WS).await;
        let r = api.mint(&session, &[shared]).await;
        assert_eq!(tokens(&r).len(), 1, "v1 grants acme: {}", r.body);
    }

    first
        .operator()
        .expect(200, Method::DELETE, &format!("/workspaces/{WS}"), None)
        .await;
    first.workspace_linking(WS, "acme-labs").await;
    assert_eq!(
        first.put_policy(WS, GRANTS_ONLY_LABS).await,
        1,
        "the re-created workspace's policy history starts again at 1"
    );

    let session = second.session(&main_job(), WS).await;
    let r = second.mint(&session, &[shared]).await;
    assert!(
        tokens(&r).is_empty(),
        "the deleted v1 came back: {}",
        r.body
    );
    assert_eq!(excluded(&r), exclusions(&[(shared, "no_trust_policy")]));
    let event = second.last_event(WS, "mint").await;
    assert_eq!(event["policyVersion"], 1, "{event}");
    assert!(event.get("tokens").is_none(), "{event}");
}

#[tokio::test]
async fn a_deleted_workspaces_policy_does_not_come_back_on_sqlite() {
    let (world, brokers) = start_replicas(None, 1).await;
    let api = Api::new(&world, &brokers[0]);
    a_deleted_workspaces_policy_does_not_come_back(&api, &api).await;
}

#[tokio::test]
async fn a_deleted_workspaces_policy_does_not_come_back_on_postgres() {
    let schema = PgSchema::create("integrity").await;
    let (world, brokers) = start_replicas(Some(schema.url()), 1).await;
    let api = Api::new(&world, &brokers[0]);
    a_deleted_workspaces_policy_does_not_come_back(&api, &api).await;
    drop(brokers);
    schema.drop_schema().await;
}

#[tokio::test]
async fn a_deleted_workspaces_policy_does_not_come_back_at_another_replica() {
    let schema = PgSchema::create("integrity").await;
    let (world, brokers) = start_replicas(Some(schema.url()), 2).await;
    let (a, b) = (Api::new(&world, &brokers[0]), Api::new(&world, &brokers[1]));
    a_deleted_workspaces_policy_does_not_come_back(&a, &b).await;
    drop(brokers);
    schema.drop_schema().await;
}

/// The session id (`sid`) inside a session JWT.
fn session_id(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_admin_revocation_by_session_id_does_not_reach_into_another_workspace() {
    let (app, session) = spawn_app_in_session().await;
    let token = first_token(&app.mint(&session, &["acme/modules"]).await);
    app.operator().create_workspace("other", "Other").await;

    // The operator of `other` names a session of `acme`.
    let r = app
        .admin(
            Method::POST,
            "/workspaces/other/revocations",
            Some(json!({ "sessionId": session_id(&session) })),
        )
        .await;

    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.tag(), "session_not_found");
    let again = app.mint(&session, &["acme/modules"]).await;
    assert_eq!(
        again.status, 200,
        "the acme session was revoked: {}",
        again.body
    );
    assert_eq!(app.github_get_repo(&token, "acme/modules").await, 200);

    // Its own workspace may revoke it.
    let r = app
        .operator()
        .expect(
            200,
            Method::POST,
            &format!("/workspaces/{DEV_WORKSPACE}/revocations"),
            Some(json!({ "sessionId": session_id(&session) })),
        )
        .await;
    assert_eq!(r.data()["revoked"], 2);
    assert_eq!(app.github_get_repo(&token, "acme/modules").await, 401);
}

#[tokio::test]
async fn a_caller_no_rule_is_meant_for_cannot_tell_granted_repositories_from_others() {
    let app = spawn_app().await;
    let stranger = ActionsJob {
        owner: "initech".into(),
        owner_id: "7777".into(),
        repo: "infra".into(),
        repo_id: "7001".into(),
        ..main_job()
    };
    let session = app.session(&stranger).await;
    // acme/modules and acme/website are granted to acme/infra by the seeded policy (on main and
    // on release tags); acme/payroll is named by no rule.
    let asked = ["acme/modules", "acme/website", "acme/payroll"];
    let r = app.mint(&session, &asked).await;

    let told = asked.map(|repo| (repo, "no_trust_policy"));
    assert_all_excluded(&r, &told);

    // The owner the rules are meant for still learns why it was refused.
    let session = app.session_on("refs/heads/feature").await;
    let r = app.mint(&session, &["acme/modules"]).await;
    assert_eq!(
        excluded(&r),
        exclusions(&[("acme/modules", "trust_policy_denied")])
    );
}

#[tokio::test]
async fn the_audit_api_shows_each_event_linked_to_the_one_before() {
    let (app, session) = spawn_app_in_session().await;
    app.mint(&session, &["acme/modules"]).await;

    let events = app.audit_events().await;

    // Newest first: each event's prevHash is the hash of the next one in the list.
    assert!(events.len() >= 3, "{events:?}");
    let oldest = events.last().unwrap();
    assert_eq!(oldest["sequence"], 1);
    assert_eq!(oldest["prevHash"], "0".repeat(64));
    for pair in events.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert_eq!(newer["prevHash"], older["hash"], "{newer} after {older}");
        assert_eq!(
            newer["sequence"].as_i64().unwrap(),
            older["sequence"].as_i64().unwrap() + 1
        );
        let hash = newer["hash"].as_str().unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hash}"
        );
    }
}
