#[path = "../support/mod.rs"]
mod support;

use serde_json::Value;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::ActionsJob;
pub(crate) use support::{main_job, reply, BrokerApi, Reply};

pub(crate) struct TestApp {
    pub(crate) world: DevWorld,
    pub(crate) broker: RunningBroker,
    pub(crate) http: reqwest::Client,
}

/// A broker on SQLite with the dev world seeded (workspace `acme`, policy `default`).
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`], with `prepare` run on the simulators before the broker starts and seeds.
pub(crate) async fn spawn_app_with(prepare: impl FnOnce(&DevWorld)) -> TestApp {
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

    pub(crate) async fn post_sts(&self, session: &str, body: Value) -> Reply {
        self.api().sts(session, body).await
    }

    pub(crate) async fn post_revoke(&self, session: &str, body: Value) -> Reply {
        self.api().revoke(session, body).await
    }

    pub(crate) async fn delete_session(&self, session: &str) -> Reply {
        self.api().end_session(session).await
    }

    pub(crate) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, self.url(&format!("/api/v1/admin{path}")))
            .bearer_auth(&self.world.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        reply(req).await
    }

    pub(crate) async fn put_policy_yaml(&self, ws: &str, name: &str, yaml: &str) -> Reply {
        reply(
            self.http
                .put(self.url(&format!("/api/v1/admin/workspaces/{ws}/policies/{name}")))
                .bearer_auth(&self.world.admin_token)
                .header("content-type", "application/yaml")
                .body(yaml.to_owned()),
        )
        .await
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
        let r = self
            .admin(
                reqwest::Method::GET,
                &format!("/workspaces/{DEV_WORKSPACE}/audit?limit=500"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.data()["events"].as_array().unwrap().clone()
    }
}

pub(crate) fn tokens(r: &Reply) -> Vec<Value> {
    r.data()["tokens"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn excluded(r: &Reply) -> Vec<(String, String)> {
    r.data()["excluded"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["repo"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// [`spawn_app`], with `configure` applied to the broker's configuration before it is built
/// (quotas, limits).
pub(crate) async fn spawn_app_configured(
    configure: impl FnOnce(&mut sts_broker::config::Config),
) -> TestApp {
    sts_broker::telemetry::init_for_test();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut world = DevWorld::start(listener.local_addr().unwrap())
        .await
        .unwrap();
    configure(&mut world.config);
    let app = sts_broker::app::App::build(world.config.clone())
        .await
        .unwrap();
    let broker = sts_broker::server::spawn(app, listener).unwrap();
    world.seed(&broker.url).await.unwrap();
    TestApp {
        world,
        broker,
        http: reqwest::Client::new(),
    }
}
