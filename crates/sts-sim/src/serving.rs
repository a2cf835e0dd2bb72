//! How every simulator server runs: bound to loopback, served by axum in a task of its own, and
//! stopped when its handle goes. The GitHub API, the OIDC issuer and the TLS servers share this,
//! so that they start and stop alike.

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A new listener on `127.0.0.1`, on a port the system picks: the simulators never listen
/// beyond loopback.
pub(crate) async fn bind_loopback() -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0)).await
}

/// A router being served. Dropping it shuts the server down gracefully: the listener closes at
/// once, open connections finish what they are doing.
pub(crate) struct Serving {
    /// Dropping the sender is the shutdown signal.
    _shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Serve `router` on `listener` in a new task; `name` says which server a failure log is
    /// about.
    pub(crate) fn spawn<L>(listener: L, router: Router, name: &'static str) -> Self
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // Either a send or the sender being dropped means stop.
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(error = %error, "{name} stopped with an error");
            }
        });
        Self {
            _shutdown: shutdown,
            task,
        }
    }

    /// Stop now, without waiting for open keep-alive connections to finish.
    pub(crate) fn abort(&self) {
        self.task.abort();
    }
}
