//! What the root package's integration tests (`api`, `audit_verify`, `git_sim`, `limits`,
//! `serve`, `durability`) share: the job the dev policy trusts, a dev broker in this process, the
//! broker binary's `serve` on the dev world, the broker's CI API as a caller speaks it, and a
//! PostgreSQL schema of its own for a test. Each test crate
//! includes this file with `mod support;`.

// Each test crate compiles its own copy of this file and calls only some of it; an allow here,
// rather than an `expect` in each crate, says so once.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::process::Stdio;
use sts_broker::app::App;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_broker::server::RunningBroker;
use sts_sim::oidc::ActionsJob;
use tokio::process::Command;

/// The CI job the dev policy's `infra-main` rule trusts, deploying with `deploy.yml`.
pub(crate) fn main_job() -> ActionsJob {
    ActionsJob {
        workflow_path: ".github/workflows/deploy.yml".into(),
        ..ActionsJob::default()
    }
}

/// The dev world's simulators and a broker on them, seeded (workspace `acme`, policy
/// `default`); `prepare` runs on the world (its simulators, its broker configuration) before the
/// broker starts and seeds.
pub(crate) async fn spawn_dev_broker(
    prepare: impl FnOnce(&mut DevWorld),
) -> (DevWorld, RunningBroker) {
    let (world, broker) = start_dev_broker(prepare).await;
    world.seed(&broker.url).await.unwrap();
    (world, broker)
}

/// [`spawn_dev_broker`] without the seeding: the broker runs, and nothing is in its store.
pub(crate) async fn start_dev_broker(
    prepare: impl FnOnce(&mut DevWorld),
) -> (DevWorld, RunningBroker) {
    sts_broker::telemetry::init_for_test();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut world = DevWorld::start(listener.local_addr().unwrap())
        .await
        .unwrap();
    prepare(&mut world);
    let app = App::build(world.config.clone()).await.unwrap();
    let broker = sts_broker::server::spawn(app, listener).unwrap();
    (world, broker)
}

/// How long `sts-broker serve` may take to log its bound address: generous for a busy machine, it
/// bounds a hang and does not measure speed.
pub(crate) const STARTUP_CAP: std::time::Duration = std::time::Duration::from_secs(120);

/// `sts-broker serve --config FILE` for the simulators of `world` (started with the placeholder
/// listen address `127.0.0.1:9`, which only ends up in `public_url`): the world's `broker.toml`
/// written to `file_name` with `listen = "127.0.0.1:0"`, JSON logs and `extra` appended. Stdout is
/// piped, `RUST_LOG` removed, and the process killed when its handle drops; stderr is the
/// caller's choice.
pub(crate) fn serve_command(world: &DevWorld, file_name: &str, extra: &str) -> Command {
    let dir = world.dir.path();
    let config = std::fs::read_to_string(dir.join("broker.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:9\"", "listen = \"127.0.0.1:0\"")
        + "\n[telemetry]\nlog_format = \"json\"\n"
        + extra;
    assert!(config.contains("listen = \"127.0.0.1:0\""), "{config}");
    let config_path = dir.join(file_name);
    std::fs::write(&config_path, config).unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_sts-broker"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// One answer of the broker: its status, and its body as JSON (or, if it is not JSON, the text
/// as a JSON string).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Reply {
    /// `errorTag`, or empty.
    pub(crate) fn tag(&self) -> &str {
        self.body["errorTag"].as_str().unwrap_or("")
    }

    /// The envelope's `data`.
    pub(crate) fn data(&self) -> &Value {
        &self.body["data"]
    }
}

/// Send `request` and read the answer.
pub(crate) async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let res = request.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

/// The broker's CI endpoints at one base URL, called as Atmos and the client call them.
pub(crate) struct BrokerApi<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) base: &'a str,
}

impl BrokerApi<'_> {
    /// `{base}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /auth/github-oidc`: an OIDC token for a session in `workspace`.
    pub(crate) async fn exchange(&self, oidc_token: &str, workspace: &str) -> Reply {
        let body = json!({ "token": oidc_token, "workspaceId": workspace });
        reply(
            self.http
                .post(self.url("/api/v1/auth/github-oidc"))
                .json(&body),
        )
        .await
    }

    /// A session in the dev workspace for `oidc_token`, which the broker must accept.
    pub(crate) async fn session(&self, oidc_token: &str) -> String {
        self.session_in(oidc_token, DEV_WORKSPACE).await
    }

    /// A session in the dev workspace for [`main_job`], with a token from `world`'s issuer.
    pub(crate) async fn main_session(&self, world: &DevWorld) -> String {
        let oidc_token = world.issuer.token_for(&main_job(), DEV_AUDIENCE);
        self.session(&oidc_token).await
    }

    /// A session in `workspace` for `oidc_token`, which the broker must accept.
    pub(crate) async fn session_in(&self, oidc_token: &str, workspace: &str) -> String {
        let r = self.exchange(oidc_token, workspace).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.data()["token"].as_str().unwrap().to_owned()
    }

    /// `POST /sts`: mint with `session`.
    pub(crate) async fn sts(&self, session: &str, body: Value) -> Reply {
        self.post(session, "/api/v1/sts", body).await
    }

    /// `POST /sts` for `sources`, with `session`.
    pub(crate) async fn mint(&self, session: &str, sources: &[&str]) -> Reply {
        self.sts(session, json!({ "sources": sources })).await
    }

    /// `POST /sts/revoke`: revoke with `session`.
    pub(crate) async fn revoke(&self, session: &str, body: Value) -> Reply {
        self.post(session, "/api/v1/sts/revoke", body).await
    }

    /// `DELETE /auth/session`: end `session` and revoke its tokens.
    pub(crate) async fn end_session(&self, session: &str) -> Reply {
        reply(
            self.http
                .delete(self.url("/api/v1/auth/session"))
                .bearer_auth(session),
        )
        .await
    }

    async fn post(&self, session: &str, path: &str, body: Value) -> Reply {
        reply(
            self.http
                .post(self.url(path))
                .bearer_auth(session)
                .json(&body),
        )
        .await
    }
}

/// Generous for a busy machine, like [`STARTUP_CAP`]: it bounds a hang, it does not measure speed.
pub(crate) const SHUTDOWN_CAP: std::time::Duration = std::time::Duration::from_secs(60);

/// A running `sts-broker serve` (from [`serve_command`]) whose stdout and stderr lines are
/// collected as they arrive.
pub(crate) struct ServeProcess {
    child: tokio::process::Child,
    /// Process id, for signals.
    pub(crate) pid: u32,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    arrivals: tokio::sync::mpsc::UnboundedReceiver<String>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl ServeProcess {
    /// Start `command` with stdout and stderr piped.
    pub(crate) fn start(mut command: Command) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let read = |stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let (sink, tx) = (std::sync::Arc::clone(&lines), tx.clone());
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = stream.next_line().await {
                    sink.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            })
        };
        let readers = vec![read(Box::new(stdout)), read(Box::new(stderr))];
        Self {
            child,
            pid,
            lines,
            arrivals,
            readers,
        }
    }

    /// The bound address `serve` logs once its socket is bound (a JSON line's `listen` field,
    /// or a text line's `listening on ADDR`).
    pub(crate) async fn listening_address(&mut self) -> String {
        let found = tokio::time::timeout(STARTUP_CAP, async {
            while let Some(line) = self.arrivals.recv().await {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if let Some(listen) = event["fields"]["listen"].as_str() {
                        return Some(listen.to_owned());
                    }
                }
                if let Some((_, rest)) = line.split_once("listening on ") {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("serve logged its bound address");
        found.unwrap_or_else(|| panic!("serve exited before listening: {:?}", self.lines()))
    }

    /// Every line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM, then wait (within [`SHUTDOWN_CAP`]) for a successful exit; every line it wrote.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        let kill = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(SHUTDOWN_CAP, self.child.wait())
            .await
            .expect("serve stopped after SIGTERM")
            .unwrap();
        assert!(status.success(), "exit status {status:?}");
        for reader in self.readers.drain(..) {
            reader.await.unwrap();
        }
        self.lines()
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// The string values of `field` on the spans of the mint's JSON log line (`minted …`), which
/// runs inside the request's span.
pub(crate) fn mint_line_span_fields(events: &[Value], field: &str) -> Vec<String> {
    let mint = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("minted "))
        })
        .unwrap_or_else(|| panic!("no mint log line in {events:#?}"));
    mint["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|span| Some(span.get(field)?.as_str()?.to_owned()))
        .collect()
}

fn database_url() -> String {
    std::env::var("STS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A PostgreSQL schema of its own, dropped by [`PgSchema::drop_schema`].
pub(crate) struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
}

impl PgSchema {
    /// A new schema named `{prefix}_{uuid}`.
    pub(crate) async fn create(prefix: &str) -> Self {
        let admin = sqlx::PgPool::connect(&database_url())
            .await
            .expect("PostgreSQL must be reachable (set STS_TEST_DATABASE_URL)");
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("create schema {name}")))
            .execute(&admin)
            .await
            .unwrap();
        Self { admin, name }
    }

    /// The database URL of a broker working in this schema.
    pub(crate) fn url(&self) -> String {
        format!(
            "{}?options=-c%20search_path%3D{}",
            database_url(),
            self.name
        )
    }

    pub(crate) async fn drop_schema(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop schema {} cascade",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}
