//! Load benchmark: a DevWorld (GitHub and OIDC simulators) and a broker in this process, driven
//! over HTTP by N concurrent clients for a fixed time per operation.
//!
//! - `exchange`: `POST /api/v1/auth/github-oidc`, each with a fresh OIDC token. Tokens are signed
//!   before the clock starts, so RSA signing is not measured; if they run out the run ends early.
//! - `mint`: `POST /api/v1/sts` `{"sources":["acme/modules"],"policyName":"default"}`, on one
//!   session per client obtained before the clock starts.
//!
//! ```sh
//! cargo bench --bench load                                   # SQLite, 16 clients, 10 s each
//! cargo bench --bench load -- --concurrency 32 --duration 30
//! cargo bench --bench load -- --postgres postgres://postgres@127.0.0.1:5432/test
//! LOAD_CONCURRENCY=8 LOAD_DURATION=5 cargo bench --bench load
//! ```
//!
//! The simulators and the clients share the machine with the broker, so the figures are a floor
//! for the broker alone, and only comparable between runs on the same quiet machine.

use anyhow::Context as _;
use clap::Parser;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_broker::app::App;
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use sts_sim::oidc::{ActionsJob, OidcIssuerSimulator};

#[derive(Parser, Debug)]
#[command(name = "load", about = "sts-broker load benchmark")]
struct Args {
    /// Concurrent clients.
    #[arg(long, env = "LOAD_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Seconds each operation is driven for.
    #[arg(long, env = "LOAD_DURATION", default_value_t = 10)]
    duration: u64,
    /// OIDC tokens signed before the exchange run (each is single use); the run stops early when
    /// they are spent.
    #[arg(long, env = "LOAD_EXCHANGE_TOKENS", default_value_t = 20_000)]
    exchange_tokens: usize,
    /// Run on PostgreSQL at this URL, in a fresh schema dropped afterwards (default: SQLite in a
    /// temp dir).
    #[arg(long, env = "LOAD_POSTGRES_URL")]
    postgres: Option<String>,
    /// Database pool size of the broker.
    #[arg(long, env = "LOAD_DB_CONNECTIONS", default_value_t = 10)]
    db_connections: u32,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The job every client claims to be: the one the dev policy grants `acme/modules` to.
fn job() -> ActionsJob {
    ActionsJob {
        workflow_path: ".github/workflows/deploy.yml".into(),
        ..ActionsJob::default()
    }
}

/// What one operation's run measured.
struct Run {
    name: &'static str,
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    note: Option<String>,
}

impl Run {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        // Nearest rank: the smallest latency at or above which p% of samples lie.
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let world = DevWorld::start(listener.local_addr()?).await?;
    let mut config = world.config.clone();
    config.database.max_connections = args.db_connections;
    // The benchmark measures how fast the broker mints, not the quotas that protect GitHub's
    // rate limit in production: each client mints in a loop on one session.
    config.limits.session_mints_per_minute = u32::MAX;
    config.limits.workspace_mints_per_minute = u32::MAX;
    let schema = match &args.postgres {
        Some(url) => {
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
        None => None,
    };
    let backend = if schema.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let broker = sts_broker::server::spawn(App::build(config).await?, listener)?;
    world.seed(&broker.url).await?;
    let http = reqwest::Client::new();
    let duration = Duration::from_secs(args.duration);

    println!(
        "sts-broker load: {backend}, {} clients, {} s per operation, {} build, {} cpus",
        args.concurrency,
        args.duration,
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // Untimed: every client's session, one warm-up exchange and mint (JWKS fetch, caches), and
    // the pool of single-use OIDC tokens.
    let signing = Instant::now();
    let mut tokens =
        sign_tokens(&world.issuer, args.exchange_tokens + args.concurrency + 1).await?;
    println!(
        "signed {} OIDC tokens in {:.1} s (not measured)",
        tokens.len(),
        signing.elapsed().as_secs_f64()
    );
    let mut sessions = Vec::with_capacity(args.concurrency);
    for _ in 0..=args.concurrency {
        let oidc = tokens.pop().context("token pool")?;
        let (status, body) = exchange(&http, &broker.url, &oidc).await?;
        anyhow::ensure!(status == 200, "warm-up exchange: {status} {body}");
        let session = body["data"]["token"]
            .as_str()
            .context("session token")?
            .to_owned();
        sessions.push(session);
    }
    let (status, body) = mint(&http, &broker.url, &sessions[0]).await?;
    anyhow::ensure!(
        status == 200 && body["data"]["tokens"][0]["token"].is_string(),
        "warm-up mint: {status} {body}"
    );
    sessions.truncate(args.concurrency);

    let exchange_run = drive_exchanges(
        &http,
        &broker.url,
        Arc::new(tokens),
        args.concurrency,
        duration,
    )
    .await?;
    let mint_run = drive_mints(&http, &broker.url, &sessions, duration).await?;

    println!();
    println!(
        "{:<10} {:>8} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "operation", "ok", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for run in [&exchange_run, &mint_run] {
        println!(
            "{:<10} {:>8} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            run.name,
            run.latencies.len(),
            run.errors,
            run.latencies.len() as f64 / run.elapsed.as_secs_f64(),
            run.percentile_ms(50.0),
            run.percentile_ms(90.0),
            run.percentile_ms(99.0),
            run.percentile_ms(100.0),
        );
    }
    for run in [&exchange_run, &mint_run] {
        if let Some(note) = &run.note {
            println!("{}: {note}", run.name);
        }
    }

    broker.stop().await?;
    if let Some((admin, schema)) = schema {
        sqlx::query(sqlx::AssertSqlSafe(format!("drop schema {schema} cascade")))
            .execute(&admin)
            .await?;
    }
    Ok(())
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

/// Exchanges: clients take tokens from the shared pool until the time is up or it is empty.
async fn drive_exchanges(
    http: &reqwest::Client,
    base: &str,
    pool: Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let clients = (0..concurrency)
        .map(|_| {
            let (pool, next) = (Arc::clone(&pool), Arc::clone(&next));
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let Some(oidc) = pool.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let sent = Instant::now();
                    match exchange(&http, &base, oidc).await {
                        Ok((200, body)) if body["data"]["token"].is_string() => {
                            latencies.push(sent.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let run = collect("exchange", clients, start).await?;
    let note = (next.load(Ordering::Relaxed) >= pool.len()).then(|| {
        format!(
            "stopped after {:.1} s: all {} pre-signed tokens used (raise --exchange-tokens)",
            run.elapsed.as_secs_f64(),
            pool.len()
        )
    });
    Ok(Run { note, ..run })
}

/// Mints: each client mints on its own session until the time is up.
async fn drive_mints(
    http: &reqwest::Client,
    base: &str,
    sessions: &[String],
    duration: Duration,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let deadline = start + duration;
    let clients = sessions
        .iter()
        .map(|session| {
            let (http, base, session) = (http.clone(), base.to_owned(), session.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match mint(&http, &base, &session).await {
                        Ok((200, body)) if body["data"]["tokens"][0]["token"].is_string() => {
                            latencies.push(sent.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    collect("mint", clients, start).await
}

async fn collect(
    name: &'static str,
    clients: Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>>,
    start: Instant,
) -> anyhow::Result<Run> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for client in clients {
        let (l, e) = client.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Run {
        name,
        latencies,
        errors,
        elapsed,
        note: None,
    })
}
