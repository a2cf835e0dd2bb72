//! Integrity of what a workspace grants, through the real server: a deleted workspace's policy
//! does not come back (on SQLite, on PostgreSQL, across two replicas), an admin revocation stays
//! inside the workspace it names, and a caller no rule is meant for learns nothing.

use crate::helpers::*;
use base64::Engine as _;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use sts_broker::app::App;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::ActionsJob;

/// Workspace of the policy-resurrection scenario (not seeded: the scenario builds it).
const WS: &str = "phoenix";

fn database_url() -> String {
    std::env::var("STS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A PostgreSQL schema of its own, dropped by [`PgSchema::drop_schema`].
struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
}

impl PgSchema {
    async fn create() -> Self {
        let admin = sqlx::PgPool::connect(&database_url())
            .await
            .expect("PostgreSQL must be reachable (set STS_TEST_DATABASE_URL)");
        let name = format!("integrity_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("create schema {name}"))
            .execute(&admin)
            .await
            .unwrap();
        Self { admin, name }
    }

    /// The database URL of a broker working in this schema.
    fn url(&self) -> String {
        format!(
            "{}?options=-c%20search_path%3D{}",
            database_url(),
            self.name
        )
    }

    async fn drop_schema(self) {
        sqlx::query(&format!("drop schema {} cascade", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

/// The simulators and `replicas` brokers sharing one database (`database_url`, or the world's
/// SQLite file). Nothing is seeded.
async fn start(database_url: Option<String>, replicas: usize) -> (DevWorld, Vec<RunningBroker>) {
    sts_broker::telemetry::init_for_test();
    let mut listeners = Vec::new();
    for _ in 0..replicas {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let world = DevWorld::start(listeners[0].local_addr().unwrap())
        .await
        .unwrap();
    let mut config = world.config.clone();
    if let Some(url) = database_url {
        config.database.url = SecretString::from(url);
    }
    let mut brokers = Vec::new();
    for listener in listeners {
        let app = App::build(config.clone()).await.unwrap();
        brokers.push(sts_broker::server::spawn(app, listener).unwrap());
    }
    (world, brokers)
}

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

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1/admin{path}", self.url))
            .bearer_auth(&self.world.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Store a policy version (YAML, `ISSUER` replaced by the world's issuer); its version.
    async fn put_policy(&self, ws: &str, yaml: &str) -> i64 {
        let yaml = yaml.replace("ISSUER", &self.world.issuer.issuer());
        let req = self
            .http
            .put(format!(
                "{}/api/v1/admin/workspaces/{ws}/policies/default",
                self.url
            ))
            .bearer_auth(&self.world.admin_token)
            .header("content-type", "application/yaml")
            .body(yaml);
        let r = self.send(req).await;
        assert!(matches!(r.status, 200 | 201), "{}", r.body);
        r.data()["version"].as_i64().unwrap()
    }

    /// A workspace with the App's installation on `owner` linked.
    async fn workspace_linking(&self, ws: &str, owner: &str) {
        let r = self
            .admin(
                Method::POST,
                "/workspaces",
                Some(json!({ "id": ws, "name": ws })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = self
            .admin(
                Method::PUT,
                &format!("/workspaces/{ws}/installations/{owner}"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// A fresh session of `job` in `ws`.
    async fn session(&self, job: &ActionsJob, ws: &str) -> String {
        let token = self.world.issuer.token_for(job, DEV_AUDIENCE);
        let req = self
            .http
            .post(format!("{}/api/v1/auth/github-oidc", self.url))
            .json(&json!({ "token": token, "workspaceId": ws }));
        let r = self.send(req).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.data()["token"].as_str().unwrap().to_owned()
    }

    async fn mint(&self, session: &str, sources: &[&str]) -> Reply {
        let req = self
            .http
            .post(format!("{}/api/v1/sts", self.url))
            .bearer_auth(session)
            .json(&json!({ "sources": sources }));
        let r = self.send(req).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r
    }

    /// The newest audit event of `ws` with `action`.
    async fn last_event(&self, ws: &str, action: &str) -> Value {
        let r = self
            .admin(
                Method::GET,
                &format!("/workspaces/{ws}/audit?limit=500"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.data()["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} event in {}", r.body))
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

    let r = first
        .admin(Method::DELETE, &format!("/workspaces/{WS}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
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
    assert_eq!(
        excluded(&r),
        vec![(shared.to_owned(), "no_trust_policy".to_owned())]
    );
    let event = second.last_event(WS, "mint").await;
    assert_eq!(event["policyVersion"], 1, "{event}");
    assert!(event.get("tokens").is_none(), "{event}");
}

#[tokio::test]
async fn a_deleted_workspaces_policy_does_not_come_back_on_sqlite() {
    let (world, brokers) = start(None, 1).await;
    let api = Api::new(&world, &brokers[0]);
    a_deleted_workspaces_policy_does_not_come_back(&api, &api).await;
}

#[tokio::test]
async fn a_deleted_workspaces_policy_does_not_come_back_on_postgres() {
    let schema = PgSchema::create().await;
    let (world, brokers) = start(Some(schema.url()), 1).await;
    let api = Api::new(&world, &brokers[0]);
    a_deleted_workspaces_policy_does_not_come_back(&api, &api).await;
    drop(brokers);
    schema.drop_schema().await;
}

#[tokio::test]
async fn a_deleted_workspaces_policy_does_not_come_back_at_another_replica() {
    let schema = PgSchema::create().await;
    let (world, brokers) = start(Some(schema.url()), 2).await;
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
    let app = spawn_app().await;
    let session = app.session(&main_job()).await;
    let minted = app
        .post_sts(&session, json!({ "sources": ["acme/modules"] }))
        .await;
    let token = tokens(&minted)[0]["token"].as_str().unwrap().to_owned();
    let r = app
        .admin(
            Method::POST,
            "/workspaces",
            Some(json!({ "id": "other", "name": "Other" })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

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
    let again = app
        .post_sts(&session, json!({ "sources": ["acme/modules"] }))
        .await;
    assert_eq!(
        again.status, 200,
        "the acme session was revoked: {}",
        again.body
    );
    assert_eq!(app.github_get_repo(&token, "acme/modules").await, 200);

    // Its own workspace may revoke it.
    let r = app
        .admin(
            Method::POST,
            &format!("/workspaces/{DEV_WORKSPACE}/revocations"),
            Some(json!({ "sessionId": session_id(&session) })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
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
    let r = app.post_sts(&session, json!({ "sources": asked })).await;

    assert_eq!(r.status, 200, "{}", r.body);
    assert!(tokens(&r).is_empty());
    let told: Vec<(String, String)> = asked
        .iter()
        .map(|repo| ((*repo).to_owned(), "no_trust_policy".to_owned()))
        .collect();
    assert_eq!(excluded(&r), told);

    // The owner the rules are meant for still learns why it was refused.
    let feature = ActionsJob {
        git_ref: "refs/heads/feature".into(),
        ..main_job()
    };
    let session = app.session(&feature).await;
    let r = app
        .post_sts(&session, json!({ "sources": ["acme/modules"] }))
        .await;
    assert_eq!(
        excluded(&r),
        vec![("acme/modules".to_owned(), "trust_policy_denied".to_owned())]
    );
}

#[tokio::test]
async fn the_audit_api_shows_each_event_linked_to_the_one_before() {
    let app = spawn_app().await;
    let session = app.session(&main_job()).await;
    app.post_sts(&session, json!({ "sources": ["acme/modules"] }))
        .await;

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
