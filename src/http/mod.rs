//! The HTTP layer: router, layers, serve. Handlers are thin adapters over the flows: every wire
//! body, every status and every axum type lives under this module.
//!
//! May import: `flow` and what the flows use (`app`, the domain modules, `config`). Nothing below
//! it imports this module.

pub mod error;
pub mod extract;
mod observe;
mod routes;
pub mod types;

pub use observe::ACCESS_LOG_TARGET;

use crate::app::App;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::http::{HeaderName, Method};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Header carrying the request id (generated unless the caller sent an acceptable one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id kept from a caller. The id lands in every log line of the request, in its
/// audit event and in the answer; a caller-chosen id of any length would let one client grow the
/// logs and the audit table at will. 64 holds a UUID, a ULID or a trace id with room to spare.
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Largest request body: an OIDC token is ~2 KiB and a policy at most 64 KiB; anything bigger is
/// refused before it is read, so a caller cannot make the broker buffer large bodies.
pub const BODY_LIMIT_BYTES: usize = 128 * 1024;

/// Shared state of the HTTP layer: the broker.
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// The methods routes use; each converts to axum's filter and to the HTTP method without a
/// fallible step, so a route's method is written once.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
            Self::Patch => Method::PATCH,
            Self::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
            Self::Patch => MethodFilter::PATCH,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route: method, full path, handler.
type Route = (Verb, &'static str, MethodRouter<AppState>);

/// A table entry: `handler` serves `verb` on `path`.
fn route<H, T>(verb: Verb, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    (verb, path, axum::routing::on(verb.filter(), handler))
}

/// Every route, once: [`router`] serves this table and [`routes`] lists it for the OpenAPI test.
fn route_table() -> Vec<Route> {
    use Verb::{Delete, Get, Patch, Post, Put};
    vec![
        route(Get, "/healthz", routes::healthz),
        route(Get, "/readyz", routes::readyz),
        route(Get, "/metrics", routes::metrics),
        route(Get, "/.well-known/jwks.json", routes::jwks),
        route(Post, "/api/v1/auth/github-oidc", routes::exchange_token),
        route(Delete, "/api/v1/auth/session", routes::end_session),
        route(Post, "/api/v1/sts", routes::mint_tokens),
        route(Post, "/api/v1/sts/revoke", routes::revoke_tokens),
        route(Get, "/api/v1/admin/workspaces", routes::list_workspaces),
        route(Post, "/api/v1/admin/workspaces", routes::create_workspace),
        route(Get, "/api/v1/admin/workspaces/{ws}", routes::get_workspace),
        route(
            Patch,
            "/api/v1/admin/workspaces/{ws}",
            routes::patch_workspace,
        ),
        route(
            Delete,
            "/api/v1/admin/workspaces/{ws}",
            routes::delete_workspace,
        ),
        route(
            Get,
            "/api/v1/admin/workspaces/{ws}/installations",
            routes::list_installations,
        ),
        route(
            Put,
            "/api/v1/admin/workspaces/{ws}/installations/{owner}",
            routes::link_installation,
        ),
        route(
            Delete,
            "/api/v1/admin/workspaces/{ws}/installations/{owner}",
            routes::unlink_installation,
        ),
        route(
            Get,
            "/api/v1/admin/workspaces/{ws}/policies",
            routes::list_policies,
        ),
        route(
            Get,
            "/api/v1/admin/workspaces/{ws}/policies/{name}",
            routes::get_policy,
        ),
        route(
            Put,
            "/api/v1/admin/workspaces/{ws}/policies/{name}",
            routes::put_policy,
        ),
        route(
            Delete,
            "/api/v1/admin/workspaces/{ws}/policies/{name}",
            routes::delete_policy,
        ),
        route(
            Get,
            "/api/v1/admin/workspaces/{ws}/policies/{name}/versions",
            routes::policy_versions,
        ),
        route(
            Post,
            "/api/v1/admin/workspaces/{ws}/policies/{name}/rollback",
            routes::rollback_policy,
        ),
        route(
            Post,
            "/api/v1/admin/workspaces/{ws}/explain",
            routes::explain,
        ),
        route(
            Get,
            "/api/v1/admin/workspaces/{ws}/tokens",
            routes::list_tokens,
        ),
        route(
            Post,
            "/api/v1/admin/workspaces/{ws}/revocations",
            routes::admin_revoke,
        ),
        route(
            Get,
            "/api/v1/admin/workspaces/{ws}/audit",
            routes::audit_log,
        ),
    ]
}

/// Every (method, path) the router serves. The OpenAPI test compares it with `openapi.yaml`.
pub fn routes() -> Vec<(Method, &'static str)> {
    route_table()
        .into_iter()
        .map(|(verb, path, _)| (verb.method(), path))
        .collect()
}

/// Which endpoints a listener serves: with `[server] admin_listen` set, the operator's endpoints
/// (`/metrics`, `/api/v1/admin/*`) move to that listener and the one CI jobs reach answers 404
/// for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Every route (one listener).
    All,
    /// Every route but the operator's.
    Public,
    /// The operator's routes and the probes.
    Admin,
}

/// The operator's endpoints: metrics and the admin API.
fn is_operator_path(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/api/v1/admin/")
}

impl Surface {
    /// Does a listener of this surface serve `path` (a route template)?
    pub fn serves(self, path: &str) -> bool {
        match self {
            Self::All => true,
            Self::Public => !is_operator_path(path),
            Self::Admin => is_operator_path(path) || matches!(path, "/healthz" | "/readyz"),
        }
    }
}

/// The router with every layer, serving every route.
pub fn router(state: AppState) -> Router {
    router_for(state, Surface::All)
}

/// The router with every layer, serving the routes of `surface`.
pub fn router_for(state: AppState, surface: Surface) -> Router {
    let timeout = Duration::from_secs(state.config.server.request_timeout_seconds);
    let routes = route_table()
        .into_iter()
        .filter(|(_, path, _)| surface.serves(path))
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        });
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    routes
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            error::envelope,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str);
                    let id = error::request_id_of(req.headers());
                    // The method as a label too: a made-up one could be long, and lands in every line.
                    let method = crate::metrics::method_label(req.method().as_str());
                    crate::telemetry::server_span(method, route, &id, req.headers())
                })
                .on_response(|res: &Response, _: Duration, span: &tracing::Span| {
                    crate::telemetry::record_response(span, res.status().as_u16());
                })
                // Its default writes an ERROR line per 5xx, which a caller can repeat at will while a
                // failure lasts; the envelope logs each failure once, within `App::failure_log`.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        // Outside `SetRequestIdLayer`, which keeps any id it finds: an unacceptable one is
        // removed first, so a fresh one is made in its place.
        .layer(tower::util::MapRequestLayer::new(
            drop_unacceptable_request_id::<axum::body::Body>,
        ))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]))
        .with_state(state)
}

/// Is `id` a request id we keep from a caller: `[A-Za-z0-9._-]{1,MAX_REQUEST_ID_LEN}`? Only
/// characters that need no escaping in a log line, a JSON string or a header.
pub fn is_acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Remove the caller's request id unless it is one acceptable id (several ids are refused too:
/// which of them would the logs name?).
fn drop_unacceptable_request_id<B>(mut req: Request<B>) -> Request<B> {
    let mut ids = req.headers().get_all(REQUEST_ID_HEADER).iter();
    let acceptable = match (ids.next(), ids.next()) {
        (Some(id), None) => is_acceptable_request_id(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !acceptable {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    req
}

/// Pause after an accept error that is not about one connection (out of file descriptors, say):
/// retrying at once would spin; a second lets connections close and free descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Serve until `shutdown` resolves; then stop accepting, let the open connections finish for at
/// most `limits.shutdown_grace_seconds`, close what is still open, and return.
///
/// `axum::serve` can do none of what the `[limits]` section asks, so connections are served
/// here with hyper's HTTP/1 builder (HTTP/1 only, as before; see the hyper docs of
/// `server::conn::http1::Builder`):
/// - `header_read_timeout`: a connection whose request head is not complete that long after it
///   opened, or after its previous response, is closed. That also ends idle keep-alive
///   connections, so neither a slowloris client nor an idle one holds a slot for long.
/// - at most `limits.max_connections` open at once: a slot (a semaphore permit) is taken before
///   `accept` and given back when the connection ends. Beyond the cap the broker stops accepting;
///   new connections wait in the kernel's listen backlog until a slot frees.
/// - on `shutdown`, each connection is told to finish its in-flight request and close; whatever
///   is still open after the grace is dropped, so no client can keep the process alive.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    surface: Surface,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.limits.clone();
    // `Router::layer` wraps the routes *after* the path has been matched, so the path is rewritten
    // by a service around the whole router instead.
    let service = tower::ServiceBuilder::new()
        .map_request(collapse_slashes::<hyper::body::Incoming>)
        .service(router_for(state, surface));
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let (drain, draining) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Forget connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        // The semaphore is never closed; if it were, there would be nothing left to serve.
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The peer gave up between its handshake and our accept: nothing to do.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection failed; retrying shortly");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            },
        };
        let connection =
            http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let mut draining = draining.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = draining.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Per connection and caused by the client (a header timeout, a reset): debug only.
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // No new connections from here: the socket closes, so clients get a refusal, not a hang.
    drop(listener);
    let _ = drain.send(());
    let grace = limits.shutdown_grace();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown grace of {}s elapsed; closing the connections still open",
            grace.as_secs()
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// An accept error about one connection only (the peer reset or gave up before we accepted):
/// the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Collapse every run of slashes in the request path to one, keeping the query as sent.
///
/// Atmos CLI builds the exchange URL as `{base_url}/{endpoint}/auth/github-oidc` without trimming,
/// so a base URL that ends in `/` (or an endpoint written `/api/v1/`) reaches us as
/// `//api/v1/auth/github-oidc`. Empty path segments carry no meaning in any route here, so the
/// request is routed as if they were not there. tower-http's `NormalizePath` only trims the ends
/// of the path, not `/api//v1`, hence this.
pub fn collapse_slashes<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if !path.contains("//") {
        return req;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if let Some(query) = req.uri().query() {
        collapsed.push('?');
        collapsed.push_str(query);
    }
    let mut parts = req.uri().clone().into_parts();
    // The collapsed path is a substring-wise subset of a path that already parsed, so it parses;
    // if it somehow does not, the request is routed as sent (and most likely gets a 404).
    if let Ok(path_and_query) = collapsed.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::{collapse_slashes, drop_unacceptable_request_id, is_acceptable_request_id};

    #[test]
    fn request_ids_are_kept_only_when_short_and_plain() {
        let long = "a".repeat(65);
        let longest = "a".repeat(64);
        for (id, kept) in [
            (longest.as_bytes(), true),
            (b"abc-DEF_1.2".as_slice(), true),
            (b"0196b7e2-5c1f-7a3e-9d2b-4f6a8c0e1b3d".as_slice(), true),
            (long.as_bytes(), false),
            (b"".as_slice(), false),
            (b"a b".as_slice(), false),
            (b"a/b".as_slice(), false),
            (b"a\"b".as_slice(), false),
            ("\u{e9}".as_bytes(), false),
        ] {
            assert_eq!(is_acceptable_request_id(id), kept, "{id:?}");
        }
        let req = http::Request::builder()
            .header("x-request-id", "ok-1")
            .header("x-request-id", "ok-2")
            .body(())
            .unwrap();
        let req = drop_unacceptable_request_id(req);
        assert!(
            req.headers().get("x-request-id").is_none(),
            "two ids: neither kept"
        );
        let req = http::Request::builder()
            .header("x-request-id", "ok-1")
            .body(())
            .unwrap();
        let req = drop_unacceptable_request_id(req);
        assert_eq!(req.headers()["x-request-id"], "ok-1");
    }

    #[test]
    fn runs_of_slashes_collapse_and_the_query_survives() {
        let cases = [
            ("/api/v1/sts", "/api/v1/sts"),
            ("//api/v1/auth/github-oidc", "/api/v1/auth/github-oidc"),
            ("/api//v1/sts", "/api/v1/sts"),
            ("///api///v1//sts/revoke", "/api/v1/sts/revoke"),
            ("/", "/"),
            ("//", "/"),
            (
                "//api/v1/admin/workspaces/acme/audit?limit=2&cursor=a//b",
                "/api/v1/admin/workspaces/acme/audit?limit=2&cursor=a//b",
            ),
            ("/api/v1/sts/", "/api/v1/sts/"),
        ];
        for (sent, routed) in cases {
            let req = http::Request::builder().uri(sent).body(()).unwrap();
            assert_eq!(
                req.uri().path_and_query().map(|p| p.as_str()),
                Some(sent),
                "{sent}"
            );
            let req = collapse_slashes(req);
            assert_eq!(
                req.uri().path_and_query().map(|p| p.as_str()),
                Some(routed),
                "{sent}"
            );
        }
    }
}
