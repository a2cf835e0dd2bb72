#[path = "../support/mod.rs"]
mod support;

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use sts_broker::app::App;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::{ActionsJob, Claims};
pub(crate) use support::{main_job, reply, BrokerApi, PgSchema, Reply};

/// One repository on each of the two installations the dev policy lets [`main_job`] reach: a mint
/// of two tokens.
pub(crate) const TWO_OWNERS: &[&str] = &["acme/modules", "acme-labs/shared-modules"];

pub(crate) struct TestApp {
    pub(crate) world: DevWorld,
    pub(crate) broker: RunningBroker,
    pub(crate) http: reqwest::Client,
}

/// A broker on SQLite with the dev world seeded (workspace `acme`, policy `default`).
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`], and a session for [`main_job`]: where most tests of the CI API start.
pub(crate) async fn spawn_app_in_session() -> (TestApp, String) {
    let app = spawn_app().await;
    let session = app.main_session().await;
    (app, session)
}

/// [`spawn_app`], with `prepare` run on the world (simulators, broker configuration) before the
/// broker starts and seeds.
pub(crate) async fn spawn_app_with(prepare: impl FnOnce(&mut DevWorld)) -> TestApp {
    let (world, broker) = support::spawn_dev_broker(prepare).await;
    TestApp {
        world,
        broker,
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.broker.url)
    }

    /// The broker's CI endpoints, called as Atmos and the client call them.
    pub(crate) fn api(&self) -> BrokerApi<'_> {
        BrokerApi {
            http: &self.http,
            base: &self.broker.url,
        }
    }

    /// `{method} {path}` at the broker with `body` sent as it is, labelled `content_type`, with
    /// `bearer` if there is one: for bodies the typed helpers would not send.
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        reply(request).await
    }

    /// `GET {path}` at the broker, without credentials.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) fn oidc_token(&self, job: &ActionsJob) -> String {
        self.world.issuer.token_for(job, DEV_AUDIENCE)
    }

    pub(crate) async fn post_exchange(&self, token: &str) -> Reply {
        self.post_exchange_to(token, DEV_WORKSPACE).await
    }

    pub(crate) async fn post_exchange_to(&self, token: &str, workspace: &str) -> Reply {
        self.api().exchange(token, workspace).await
    }

    /// A fresh session for `job`.
    pub(crate) async fn session(&self, job: &ActionsJob) -> String {
        self.api().session(&self.oidc_token(job)).await
    }

    /// A fresh session for [`main_job`], which the dev policy trusts.
    pub(crate) async fn main_session(&self) -> String {
        self.api().main_session(&self.world).await
    }

    pub(crate) async fn post_sts(&self, session: &str, body: Value) -> Reply {
        self.api().sts(session, body).await
    }

    /// A session for the main job run from another `git_ref` (`refs/heads/…`, `refs/tags/…`).
    pub(crate) async fn session_on(&self, git_ref: &str) -> String {
        let job = ActionsJob {
            git_ref: git_ref.into(),
            ..main_job()
        };
        self.session(&job).await
    }

    /// A mint without sources: whatever the rules of the `default` policy grant.
    pub(crate) async fn mint_default_policy(&self, session: &str) -> Reply {
        self.post_sts(session, json!({ "policyName": "default" }))
            .await
    }

    pub(crate) async fn post_revoke(&self, session: &str, body: Value) -> Reply {
        self.api().revoke(session, body).await
    }

    pub(crate) async fn delete_session(&self, session: &str) -> Reply {
        self.api().end_session(session).await
    }

    /// The admin API, with the operator's token.
    pub(crate) fn operator(&self) -> AdminApi<'_> {
        AdminApi {
            http: &self.http,
            base: &self.broker.url,
            token: &self.world.admin_token,
        }
    }

    pub(crate) async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.operator().call(method, path, body).await
    }

    pub(crate) async fn put_policy_yaml(&self, ws: &str, name: &str, yaml: &str) -> Reply {
        self.operator().put_policy_yaml(ws, name, yaml).await
    }

    /// Status of `GET {github}/repos/{repo}` with `token`, at the simulator.
    pub(crate) async fn github_get_repo(&self, token: &str, repo: &str) -> u16 {
        self.http
            .get(format!("{}/repos/{repo}", self.world.config.github.api_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub(crate) async fn audit_events(&self) -> Vec<Value> {
        self.operator().audit_events(DEV_WORKSPACE).await
    }

    /// The claims the issuer signs for `job`, for the broker's audience.
    pub(crate) fn claims(&self, job: &ActionsJob) -> Claims {
        self.world.issuer.claims_for(job, DEV_AUDIENCE)
    }

    /// `POST /sts` for `sources` with `session`.
    pub(crate) async fn mint(&self, session: &str, sources: &[&str]) -> Reply {
        self.api().mint(session, sources).await
    }

    /// `POST /sts` for `sources` under the policy named `policy`, with `session`.
    pub(crate) async fn mint_under(&self, session: &str, sources: &[&str], policy: &str) -> Reply {
        self.post_sts(session, json!({ "sources": sources, "policyName": policy }))
            .await
    }

    /// The broker's SQLite database, opened beside the running broker.
    pub(crate) async fn database(&self) -> sqlx::SqlitePool {
        let db = self.world.dir.path().join("sts-broker.db");
        sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap()
    }

    /// The text of `GET /metrics`.
    pub(crate) async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }
}

pub(crate) fn tokens(r: &Reply) -> Vec<Value> {
    r.data()["tokens"].as_array().cloned().unwrap_or_default()
}

/// The secret of the first token `r` minted.
pub(crate) fn first_token(r: &Reply) -> String {
    tokens(r)[0]["token"].as_str().unwrap().to_owned()
}

pub(crate) fn excluded(r: &Reply) -> Vec<(String, String)> {
    let excluded = r.data()["excluded"].as_array().cloned().unwrap_or_default();
    string_pairs(&excluded, "repo", "reason")
}

/// The string field `name` of each item of the JSON array `items`, which must all have it.
pub(crate) fn strings<'a>(items: &'a Value, name: &str) -> Vec<&'a str> {
    let items = items.as_array().unwrap();
    items
        .iter()
        .map(|item| item[name].as_str().unwrap())
        .collect()
}

/// The string fields `first` and `second` of each of `items`, which must all have both.
pub(crate) fn string_pairs(items: &[Value], first: &str, second: &str) -> Vec<(String, String)> {
    let field = |item: &Value, name: &str| item[name].as_str().unwrap().to_owned();
    items
        .iter()
        .map(|item| (field(item, first), field(item, second)))
        .collect()
}

/// [`spawn_app`], with `configure` applied to the broker's configuration before it is built
/// (quotas, limits).
pub(crate) async fn spawn_app_configured(
    configure: impl FnOnce(&mut sts_broker::config::Config),
) -> TestApp {
    spawn_app_with(|world| configure(&mut world.config)).await
}

/// `(repository, reason)` pairs as [`excluded`] reads them.
pub(crate) fn exclusions(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(repo, reason)| ((*repo).to_owned(), (*reason).to_owned()))
        .collect()
}

/// `r` is a mint that succeeded with no token, every source excluded as `want` says.
pub(crate) fn assert_all_excluded(r: &Reply, want: &[(&str, &str)]) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(tokens(r).is_empty(), "{}", r.body);
    assert_eq!(excluded(r), exclusions(want));
}

/// `claims` issued two hours ago and expired for an hour.
pub(crate) fn expired(claims: &Claims) -> Claims {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut expired = claims.clone();
    expired.insert("iat".into(), json!(now - 7200));
    expired.insert("nbf".into(), json!(now - 7200));
    expired.insert("exp".into(), json!(now - 3600));
    expired
}

/// `claims` for an audience the broker does not accept.
pub(crate) fn for_another_audience(claims: &Claims) -> Claims {
    let mut other = claims.clone();
    other.insert("aud".into(), json!("https://github.com/acme"));
    other
}

/// The broker's admin API at one base URL, called with the operator's token.
pub(crate) struct AdminApi<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) base: &'a str,
    pub(crate) token: &'a str,
}

impl AdminApi<'_> {
    /// `{method} /api/v1/admin{path}`, with `body` as JSON if there is one.
    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1/admin{path}", self.base))
            .bearer_auth(self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        reply(req).await
    }

    /// [`AdminApi::call`], which must answer `status`.
    pub(crate) async fn expect(
        &self,
        status: u16,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let request = format!("{method} {path}");
        let r = self.call(method, path, body).await;
        assert_eq!(r.status, status, "{request}: {}", r.body);
        r
    }

    /// `PUT /workspaces/{ws}/policies/{name}` with `yaml` as `application/yaml`.
    pub(crate) async fn put_policy_yaml(&self, ws: &str, name: &str, yaml: &str) -> Reply {
        reply(
            self.http
                .put(format!(
                    "{}/api/v1/admin/workspaces/{ws}/policies/{name}",
                    self.base
                ))
                .bearer_auth(self.token)
                .header("content-type", "application/yaml")
                .body(yaml.to_owned()),
        )
        .await
    }

    /// `POST /workspaces` for a workspace `id` named `name`, which must be created.
    pub(crate) async fn create_workspace(&self, id: &str, name: &str) {
        let body = json!({ "id": id, "name": name });
        self.expect(201, Method::POST, "/workspaces", Some(body))
            .await;
    }

    /// `PUT /workspaces/{ws}/installations/{owner}`: link the App's installation on `owner`.
    pub(crate) async fn link_installation(&self, ws: &str, owner: &str) -> Reply {
        let path = format!("/workspaces/{ws}/installations/{owner}");
        self.call(Method::PUT, &path, None).await
    }

    /// The audit events of `ws`, newest first (up to 500).
    pub(crate) async fn audit_events(&self, ws: &str) -> Vec<Value> {
        let path = format!("/workspaces/{ws}/audit?limit=500");
        let r = self.expect(200, Method::GET, &path, None).await;
        r.data()["events"].as_array().unwrap().clone()
    }
}

/// The simulators and `replicas` brokers sharing one database (`database_url`, or the world's
/// SQLite file). Nothing is seeded.
pub(crate) async fn start_replicas(
    database_url: Option<String>,
    replicas: usize,
) -> (DevWorld, Vec<RunningBroker>) {
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
