//! Running the broker: bind, serve, housekeeping, shutdown. Used by `serve`, `demo`, the tests and
//! the benchmarks, so they all run the same server.

use crate::app::App;
use crate::http::{AppState, Surface};
use crate::store::Retention;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often expired sealed tokens, replay keys and rows past their retention are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// A broker serving on a bound address. Dropping it stops the server.
pub struct RunningBroker {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    /// Bound address of the admin listener (`[server] admin_listen`), when there is one.
    pub admin_addr: Option<SocketAddr>,
    /// The broker's state.
    pub app: Arc<App>,
    /// One per listener.
    shutdown: Vec<oneshot::Sender<()>>,
    handles: Vec<JoinHandle<std::io::Result<()>>>,
    housekeeping: JoinHandle<()>,
    audit_export: JoinHandle<()>,
}

impl RunningBroker {
    /// Stop accepting, let in-flight requests finish for at most `limits.shutdown_grace_seconds`,
    /// and wait for the server to end.
    pub async fn stop(mut self) -> std::io::Result<()> {
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
        let mut ended = Ok(());
        for handle in self.handles.drain(..) {
            let result = handle.await.unwrap_or(Ok(()));
            ended = ended.and(result);
        }
        ended
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
        self.housekeeping.abort();
        self.audit_export.abort();
    }
}

/// Bind the broker's listen address; the error names the address and why (in use, not an
/// address of this machine, a privileged port).
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| {
            let why = match error.kind() {
                std::io::ErrorKind::AddrInUse => "the address is in use by another process",
                std::io::ErrorKind::AddrNotAvailable => "the address is not one of this machine's",
                std::io::ErrorKind::PermissionDenied => "permission denied (a privileged port?)",
                _ => "cannot bind",
            };
            anyhow::anyhow!("cannot listen on {listen}: {why} ({error})")
        })
}

/// Serve `app` on `listener` in the background, until [`RunningBroker::stop`] or drop.
pub fn spawn(app: App, listener: tokio::net::TcpListener) -> std::io::Result<RunningBroker> {
    spawn_with_admin(app, listener, None)
}

/// Serve `app` on `listener` and, when given, its operator endpoints on `admin` only (see
/// [`Surface`]), in the background, until [`RunningBroker::stop`] or drop.
pub fn spawn_with_admin(
    app: App,
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
) -> std::io::Result<RunningBroker> {
    let addr = listener.local_addr()?;
    let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
    let app = Arc::new(app);
    let public = if admin.is_some() {
        Surface::Public
    } else {
        Surface::All
    };
    let listeners = std::iter::once((listener, public)).chain(admin.map(|l| (l, Surface::Admin)));
    // Before the first request: on SQLite every intent older than this moment is a dead
    // process's (see `report_orphaned_intents`).
    let started = OffsetDateTime::now_utc();
    let mut shutdown = Vec::new();
    let mut handles = Vec::new();
    for (listener, surface) in listeners {
        let (tx, rx) = oneshot::channel::<()>();
        let stopped = async move {
            // A dropped sender stops the server too.
            let _ = rx.await;
        };
        let state = AppState(Arc::clone(&app));
        handles.push(tokio::spawn(crate::http::serve(
            listener, state, surface, stopped,
        )));
        shutdown.push(tx);
    }
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&app), started));
    let audit_export = tokio::spawn(crate::audit::export::run(
        Arc::clone(&app.store),
        Arc::clone(&app.metrics),
        app.audit_export.clone(),
    ));
    Ok(RunningBroker {
        addr,
        url: format!("http://{addr}"),
        admin_addr,
        app,
        shutdown,
        handles,
        housekeeping,
        audit_export,
    })
}

/// Purge sealed tokens that can no longer be revoked (expired), stale replay keys, session and
/// token rows past their retention (`[retention]`) and retired session signing keys; and report
/// mints that a crash left without a result: at start, then every [`PURGE_INTERVAL`].
async fn housekeeping(app: Arc<App>, started: OffsetDateTime) {
    report_orphaned_intents(&app, orphan_cutoff(&app, started)).await;
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tick.tick().await;
        report_orphaned_intents(&app, orphan_cutoff(&app, started)).await;
        let kept = &app.config.retention;
        let retention = Retention::days(kept.sessions_days, kept.tokens_days);
        match app
            .store
            .purge_expired(OffsetDateTime::now_utc(), retention)
            .await
        {
            Ok(stats) => tracing::debug!(
                sealed = stats.sealed_tokens_cleared,
                replay_keys = stats.replay_keys_deleted,
                tokens = stats.tokens_deleted,
                sessions = stats.sessions_deleted,
                "purged expired sealed tokens and replay keys, and rows past their retention"
            ),
            Err(e) => tracing::warn!(error = %e, "purge of expired rows failed"),
        }
        retire_signing_keys(&app).await;
    }
}

/// Delete the session signing keys deactivated longer ago than
/// [`SIGNING_KEY_RETENTION`](crate::session::keys::SIGNING_KEY_RETENTION): nothing they signed
/// is accepted any more, so dropping them ends no session (`session-key retire` does the same
/// on demand).
async fn retire_signing_keys(app: &App) {
    use crate::session::keys::{retire, SIGNING_KEY_RETENTION};
    match retire(
        &*app.store,
        OffsetDateTime::now_utc(),
        SIGNING_KEY_RETENTION,
    )
    .await
    {
        Ok(kids) if kids.is_empty() => {}
        Ok(kids) => tracing::info!(?kids, "retired session signing keys"),
        Err(e) => tracing::warn!(error = %e, "retiring session signing keys failed"),
    }
}

/// Wait for SIGINT/SIGTERM, then stop `broker` gracefully, within its shutdown grace.
pub async fn run_until_stopped(broker: RunningBroker) -> std::io::Result<()> {
    crate::http::shutdown_signal().await;
    broker.stop().await
}

/// Intents written before this instant are no live mint's: those older than
/// [`ORPHANED_INTENT_AGE`](crate::flow::mint::ORPHANED_INTENT_AGE) (another replica may be minting
/// right now), and on SQLite, where one process owns the database file, also every intent
/// written before this process `started`.
fn orphan_cutoff(app: &App, started: OffsetDateTime) -> OffsetDateTime {
    let aged = OffsetDateTime::now_utc() - crate::flow::mint::ORPHANED_INTENT_AGE;
    if app.store.backend() == "sqlite" {
        aged.max(started)
    } else {
        aged
    }
}

/// Report mints left without a result (see
/// [`report_orphaned_intents`](crate::flow::mint::report_orphaned_intents)).
async fn report_orphaned_intents(app: &App, before: OffsetDateTime) {
    match crate::flow::mint::report_orphaned_intents(app, before).await {
        Ok(0) => {}
        Ok(n) => tracing::error!(
            mints = n,
            "reported {n} mints without a result as outcome_unknown"
        ),
        Err(e) => tracing::warn!(error = %e, "could not report mints without a result"),
    }
}
