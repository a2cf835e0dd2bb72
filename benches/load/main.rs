//! Load benchmark: a DevWorld (GitHub and OIDC simulators) and a broker in this process, driven
//! over HTTP by N concurrent closed-loop clients for a fixed time per operation, on SQLite and
//! then on PostgreSQL, in one run.
//!
//! - `healthz`: `GET /healthz`, the bare request rate of the same server, client and machine:
//!   the yardstick the exchange rate is compared with (`exchange / healthz`).
//! - `exchange`: `POST /api/v1/auth/github-oidc`, each with a fresh OIDC token. Tokens are signed
//!   before the clock starts, so RSA signing is not measured; if they run out the run ends early.
//! - `mint`: `POST /api/v1/sts` `{"sources":["acme/modules"],"policyName":"default"}`, on one
//!   session per client obtained before the clock starts.
//! - `github sim`: the simulator's own `POST /app/installations/{id}/access_tokens`, the one
//!   GitHub call of a mint, at the same concurrency: `mint - github sim` is what the broker adds.
//! - `--scale N`: seed up to N workspaces with a policy each (1, 10, 100, … N) and show exchange
//!   and mint p50 at each size: the median of `--scale-rounds` runs of each, and their range.
//!
//! ```sh
//! cargo bench --bench load                                   # SQLite and PostgreSQL, 32 clients
//! cargo bench --bench load -- --backends sqlite --duration 5
//! cargo bench --bench load -- --scale 10000 --scale-duration 3
//! LOAD_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench load
//! ```
//!
//! The simulators and the clients share the machine with the broker, so the figures are a floor
//! for the broker alone; compare ratios within one run, not absolute rates between runs.

mod drive;
mod scale;

use anyhow::Context as _;
use clap::Parser;
use drive::{drive, rss_mb, Outcome, Run};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_broker::app::App;
use sts_broker::dev::{DevWorld, DEV_APP_ID, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_sim::oidc::{ActionsJob, OidcIssuerSimulator};

#[derive(Parser, Debug)]
#[command(name = "load", about = "sts-broker load benchmark")]
struct Args {
    /// Concurrent clients.
    #[arg(long, env = "LOAD_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Seconds each operation is driven for.
    #[arg(long, env = "LOAD_DURATION", default_value_t = 10)]
    duration: u64,
    /// OIDC tokens signed before the exchange run (each is single use); the run stops early when
    /// they are spent.
    #[arg(long, env = "LOAD_EXCHANGE_TOKENS", default_value_t = 100_000)]
    exchange_tokens: usize,
    /// Backends to run, in order.
    #[arg(
        long,
        env = "LOAD_BACKENDS",
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    backends: Vec<Backend>,
    /// PostgreSQL server; each run gets a fresh schema, dropped afterwards.
    #[arg(
        long,
        env = "LOAD_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Database pool size of the broker (default: the broker's own default).
    #[arg(long, env = "LOAD_DB_CONNECTIONS")]
    db_connections: Option<u32>,
    /// Seed up to this many workspaces, a policy each, and show p50 as they grow (0: off).
    #[arg(long, env = "LOAD_SCALE", default_value_t = 0)]
    scale: usize,
    /// Seconds each operation is driven for in each round at each scale point.
    #[arg(long, env = "LOAD_SCALE_DURATION", default_value_t = 3)]
    scale_duration: u64,
    /// Exchange and mint runs at each scale point; the point shows their medians, so that one
    /// slow spell of a shared machine does not make or break the curve.
    #[arg(long, env = "LOAD_SCALE_ROUNDS", default_value_t = 3)]
    scale_rounds: usize,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The job every client claims to be: the one the dev policy grants `acme/modules` to.
fn job() -> ActionsJob {
    ActionsJob {
        workflow_path: ".github/workflows/deploy.yml".into(),
        ..ActionsJob::default()
    }
}

/// The dev world's `acme` installation, whose `modules` repository every mint asks for.
const ACME_INSTALLATION: i64 = 100;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.scale_rounds > 0, "--scale-rounds must be at least 1");
    let runtime = tokio::runtime::Runtime::new()?;
    for backend in args.backends.clone() {
        runtime.block_on(run(&args, backend))?;
    }
    Ok(())
}

/// A broker on `backend` beside a fresh DevWorld, seeded, with its PostgreSQL schema if any.
struct Bench {
    world: DevWorld,
    broker: sts_broker::server::RunningBroker,
    schema: Option<(sqlx::PgPool, String)>,
    http: reqwest::Client,
}

impl Bench {
    async fn start(args: &Args, backend: Backend) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let world = DevWorld::start(listener.local_addr()?).await?;
        let mut config = world.config.clone();
        if let Some(n) = args.db_connections {
            config.database.max_connections = n;
        }
        // The benchmark measures how fast the broker mints, not the quotas that protect GitHub's
        // rate limit in production: each client mints in a loop on one session.
        config.limits.session_mints_per_minute = u32::MAX;
        config.limits.workspace_mints_per_minute = u32::MAX;
        let schema = match backend {
            Backend::Postgres => {
                let url = &args.postgres;
                let schema = format!("load_{}", uuid::Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(url)
                    .await
                    .context("connect to PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("create schema {schema}")))
                    .execute(&admin)
                    .await?;
                let separator = if url.contains('?') { '&' } else { '?' };
                config.database.url = SecretString::from(format!(
                    "{url}{separator}options=-c%20search_path%3D{schema}"
                ));
                Some((admin, schema))
            }
            Backend::Sqlite => None,
        };
        let broker = sts_broker::server::spawn(App::build(config).await?, listener)?;
        world.seed(&broker.url).await?;
        Ok(Self {
            world,
            broker,
            schema,
            http: reqwest::Client::new(),
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.broker.stop().await?;
        if let Some((admin, schema)) = self.schema {
            sqlx::query(sqlx::AssertSqlSafe(format!("drop schema {schema} cascade")))
                .execute(&admin)
                .await?;
        }
        Ok(())
    }
}

async fn run(args: &Args, backend: Backend) -> anyhow::Result<()> {
    let bench = Bench::start(args, backend).await?;
    let (http, base) = (&bench.http, bench.broker.url.as_str());
    let duration = Duration::from_secs(args.duration);
    println!(
        "\nsts-broker load: {backend:?}, {} clients, {} s per operation, {} build, {} cpus, \
         {} db connections",
        args.concurrency,
        args.duration,
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.db_connections
            .unwrap_or(bench.world.config.database.max_connections),
    );

    // Untimed: every client's session, one warm-up exchange and mint (JWKS fetch, caches), and
    // the single-use OIDC tokens of every exchange run.
    let scale_points = scale::points(args.scale);
    let per_scale_run =
        args.exchange_tokens * args.scale_duration as usize / args.duration as usize;
    let signing = Instant::now();
    let mut tokens = sign_tokens(
        &bench.world.issuer,
        args.exchange_tokens
            + args.concurrency
            + 1
            + per_scale_run * args.scale_rounds * scale_points.len(),
    )
    .await?;
    println!(
        "signed {} OIDC tokens in {:.1} s (not measured)",
        tokens.len(),
        signing.elapsed().as_secs_f64()
    );
    let mut sessions = Vec::with_capacity(args.concurrency + 1);
    for _ in 0..=args.concurrency {
        let oidc = tokens.pop().context("token pool")?;
        let (status, body) = exchange(http, base, &oidc).await?;
        anyhow::ensure!(status == 200, "warm-up exchange: {status} {body}");
        let session = body["data"]["token"].as_str().context("session token")?;
        sessions.push(session.to_owned());
    }
    let (status, body) = mint(http, base, &sessions[0]).await?;
    anyhow::ensure!(
        status == 200 && body["data"]["tokens"][0]["token"].is_string(),
        "warm-up mint: {status} {body}"
    );
    sessions.truncate(args.concurrency);
    let sessions = Arc::new(sessions);
    let app_jwt = app_jwt(&bench.world)?;

    let healthz = drive_healthz(http, base, args.concurrency, duration).await;
    let main_tokens = tokens.split_off(tokens.len() - args.exchange_tokens.min(tokens.len()));
    let exchanges = drive_exchanges(http, base, main_tokens, args.concurrency, duration).await;
    let mints = drive_mints(http, base, &sessions, duration).await;
    let github = drive_github(http, &bench.world, &app_jwt, args.concurrency, duration).await;
    let rss = rss_mb();
    // One client: the broker's own work in a mint, without the queueing that 32 clients add to
    // both sides of the comparison.
    let lone = Arc::new(sessions[..1].to_vec());
    let lone_mints = drive_mints(http, base, &lone, duration).await;
    let lone_github = drive_github(http, &bench.world, &app_jwt, 1, duration).await;

    println!("\n{}", Run::header());
    for run in [&healthz, &exchanges, &mints, &github] {
        println!("{}", run.row());
    }
    println!("at 1 client:");
    for run in [&lone_mints, &lone_github] {
        println!("{}", run.row());
    }
    println!(
        "\nexchange / healthz: {:.3}   (goal >= 0.10; exchange p99 {:.2} ms, goal <= 25)",
        exchanges.ok_per_second() / healthz.ok_per_second(),
        exchanges.percentile_ms(99.0),
    );
    for (clients, mints, github) in [
        (args.concurrency, &mints, &github),
        (1, &lone_mints, &lone_github),
    ] {
        println!(
            "mint added by the broker over the GitHub simulator at {clients} client(s): \
             p50 {:+.2} ms, p99 {:+.2} ms (goal p99 <= 2)",
            mints.percentile_ms(50.0) - github.percentile_ms(50.0),
            mints.percentile_ms(99.0) - github.percentile_ms(99.0),
        );
    }
    if exchanges.exhausted {
        println!("exchange: all pre-signed tokens were used before the time was up");
    }
    if let Some(rss) = rss {
        println!("RSS of the whole benchmark process (broker, simulators, clients): {rss:.0} MB");
    }

    if !scale_points.is_empty() {
        let scale = scale::Curve {
            store: &bench.broker.app.store,
            http,
            base,
            sessions: &sessions,
            concurrency: args.concurrency,
            duration: Duration::from_secs(args.scale_duration),
            rounds: args.scale_rounds.max(1),
        };
        scale.run(&scale_points, tokens, per_scale_run).await?;
    }
    bench.stop().await
}

/// `count` fresh OIDC tokens, signed on every core.
async fn sign_tokens(issuer: &OidcIssuerSimulator, count: usize) -> anyhow::Result<Vec<String>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_worker = count.div_ceil(workers);
    let mut handles = Vec::new();
    for w in 0..workers {
        let issuer = issuer.clone();
        let n = per_worker.min(count.saturating_sub(w * per_worker));
        handles.push(tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|_| issuer.token_for(&job(), DEV_AUDIENCE))
                .collect::<Vec<_>>()
        }));
    }
    let mut tokens = Vec::with_capacity(count);
    for handle in handles {
        tokens.extend(handle.await?);
    }
    Ok(tokens)
}

/// An App JWT (RFC 7519, RS256) for the GitHub simulator, as the broker signs one.
fn app_jwt(world: &DevWorld) -> anyhow::Result<String> {
    let pem = std::fs::read(world.dir.path().join("app.pem"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({ "iat": now - 60, "exp": now + 540, "iss": DEV_APP_ID });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

async fn exchange(http: &reqwest::Client, base: &str, oidc: &str) -> anyhow::Result<(u16, Value)> {
    let res = http
        .post(format!("{base}/api/v1/auth/github-oidc"))
        .json(&json!({ "token": oidc, "workspaceId": DEV_WORKSPACE }))
        .send()
        .await?;
    Ok((
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    ))
}

async fn mint(http: &reqwest::Client, base: &str, session: &str) -> anyhow::Result<(u16, Value)> {
    let res = http
        .post(format!("{base}/api/v1/sts"))
        .bearer_auth(session)
        .json(&json!({ "sources": ["acme/modules"], "policyName": "default" }))
        .send()
        .await?;
    Ok((
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    ))
}

pub(crate) async fn drive_healthz(
    http: &reqwest::Client,
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let url = Arc::new(format!("{base}/healthz"));
    let http = http.clone();
    drive("healthz", concurrency, duration, move |_| {
        let (http, url) = (http.clone(), Arc::clone(&url));
        async move { ok_with_body(http.get(url.as_str()).send().await).await }
    })
    .await
}

/// Exchanges: clients take tokens from the shared pool until the time is up or it is empty.
pub(crate) async fn drive_exchanges(
    http: &reqwest::Client,
    base: &str,
    tokens: Vec<String>,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let pool = Arc::new((tokens, AtomicUsize::new(0)));
    let (http, base) = (http.clone(), Arc::new(base.to_owned()));
    drive("exchange", concurrency, duration, move |_| {
        let (http, base, pool) = (http.clone(), Arc::clone(&base), Arc::clone(&pool));
        async move {
            let Some(oidc) = pool.0.get(pool.1.fetch_add(1, Ordering::Relaxed)) else {
                return Outcome::Exhausted;
            };
            match exchange(&http, &base, oidc).await {
                Ok((200, body)) if body["data"]["token"].is_string() => Outcome::Ok,
                _ => Outcome::Failed,
            }
        }
    })
    .await
}

/// Mints: each client mints on its own session until the time is up.
pub(crate) async fn drive_mints(
    http: &reqwest::Client,
    base: &str,
    sessions: &Arc<Vec<String>>,
    duration: Duration,
) -> Run {
    let (http, base, sessions) = (
        http.clone(),
        Arc::new(base.to_owned()),
        Arc::clone(sessions),
    );
    drive("mint", sessions.len(), duration, move |client| {
        let (http, base, sessions) = (http.clone(), Arc::clone(&base), Arc::clone(&sessions));
        async move {
            match mint(&http, &base, &sessions[client]).await {
                Ok((200, body)) if body["data"]["tokens"][0]["token"].is_string() => Outcome::Ok,
                _ => Outcome::Failed,
            }
        }
    })
    .await
}

/// The GitHub simulator's installation-token call, as a mint makes it, without the broker.
async fn drive_github(
    http: &reqwest::Client,
    world: &DevWorld,
    app_jwt: &str,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let url = Arc::new(format!(
        "{}/app/installations/{ACME_INSTALLATION}/access_tokens",
        world.config.github.api_url.trim_end_matches('/')
    ));
    let (http, jwt) = (http.clone(), Arc::new(app_jwt.to_owned()));
    drive("github sim", concurrency, duration, move |_| {
        let (http, url, jwt) = (http.clone(), Arc::clone(&url), Arc::clone(&jwt));
        async move {
            let sent = http
                .post(url.as_str())
                .bearer_auth(jwt.as_str())
                .header("accept", "application/vnd.github+json")
                .header("user-agent", "sts-broker-load")
                .json(&json!({ "repositories": ["modules"] }))
                .send()
                .await;
            ok_with_body(sent).await
        }
    })
    .await
}

/// `Ok` for a 2xx answer whose body arrived in full.
async fn ok_with_body(sent: reqwest::Result<reqwest::Response>) -> Outcome {
    match sent {
        Ok(res) if res.status().is_success() => match res.bytes().await {
            Ok(_) => Outcome::Ok,
            Err(_) => Outcome::Failed,
        },
        _ => Outcome::Failed,
    }
}
