//! The HTTP layer: router, layers, serve. Handlers are thin adapters over the domain flows.

pub mod error;
pub mod extract;
mod routes;
pub mod types;

pub use crate::app::AppState;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Header carrying the request id (generated unless the caller sent one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Largest request body: an OIDC token is ~2 KiB and a policy at most 64 KiB; anything bigger is
/// refused before it is read, so a caller cannot make the broker buffer large bodies.
pub const BODY_LIMIT_BYTES: usize = 128 * 1024;

/// Every route. The OpenAPI test walks this list; keep `openapi.yaml` in step.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/api/v1/auth/github-oidc"),
    ("DELETE", "/api/v1/auth/session"),
    ("POST", "/api/v1/sts"),
    ("POST", "/api/v1/sts/revoke"),
    ("GET", "/api/v1/admin/workspaces"),
    ("POST", "/api/v1/admin/workspaces"),
    ("GET", "/api/v1/admin/workspaces/{ws}"),
    ("PATCH", "/api/v1/admin/workspaces/{ws}"),
    ("DELETE", "/api/v1/admin/workspaces/{ws}"),
    ("GET", "/api/v1/admin/workspaces/{ws}/installations"),
    ("PUT", "/api/v1/admin/workspaces/{ws}/installations/{owner}"),
    (
        "DELETE",
        "/api/v1/admin/workspaces/{ws}/installations/{owner}",
    ),
    ("GET", "/api/v1/admin/workspaces/{ws}/policies"),
    ("GET", "/api/v1/admin/workspaces/{ws}/policies/{name}"),
    ("PUT", "/api/v1/admin/workspaces/{ws}/policies/{name}"),
    ("DELETE", "/api/v1/admin/workspaces/{ws}/policies/{name}"),
    ("GET", "/api/v1/admin/workspaces/{ws}/tokens"),
    ("POST", "/api/v1/admin/workspaces/{ws}/revocations"),
    ("GET", "/api/v1/admin/workspaces/{ws}/audit"),
];

/// The router with every layer.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.server.request_timeout_seconds);
    let api = Router::new()
        .route("/auth/github-oidc", post(routes::exchange_token))
        .route("/auth/session", axum::routing::delete(routes::end_session))
        .route("/sts", post(routes::mint_tokens))
        .route("/sts/revoke", post(routes::revoke_tokens))
        .route(
            "/admin/workspaces",
            get(routes::list_workspaces).post(routes::create_workspace),
        )
        .route(
            "/admin/workspaces/{ws}",
            get(routes::get_workspace)
                .patch(routes::patch_workspace)
                .delete(routes::delete_workspace),
        )
        .route(
            "/admin/workspaces/{ws}/installations",
            get(routes::list_installations),
        )
        .route(
            "/admin/workspaces/{ws}/installations/{owner}",
            put(routes::link_installation).delete(routes::unlink_installation),
        )
        .route(
            "/admin/workspaces/{ws}/policies",
            get(routes::list_policies),
        )
        .route(
            "/admin/workspaces/{ws}/policies/{name}",
            get(routes::get_policy)
                .put(routes::put_policy)
                .delete(routes::delete_policy),
        )
        .route("/admin/workspaces/{ws}/tokens", get(routes::list_tokens))
        .route(
            "/admin/workspaces/{ws}/revocations",
            post(routes::admin_revoke),
        )
        .route("/admin/workspaces/{ws}/audit", get(routes::audit_log));
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/.well-known/jwks.json", get(routes::jwks))
        .nest("/api/v1", api)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(error::envelope))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
            let id = error::request_id_of(req.headers());
            tracing::info_span!("request", http.method = %req.method(), http.route = route, request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::AUTHORIZATION]))
        .with_state(state)
}

/// Request latency metric, by matched route.
async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let res = next.run(req).await;
    state
        .metrics
        .http_latency
        .get_or_create(&crate::metrics::HttpLabels {
            method,
            route,
            status: res.status().as_u16().to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    res
}

/// Serve until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // `Router::layer` wraps the routes *after* the path has been matched, so the path is rewritten
    // by a service around the whole router instead.
    let service = tower::ServiceBuilder::new()
        .map_request(collapse_slashes::<axum::body::Body>)
        .service(router(state));
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(service),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
    use super::collapse_slashes;

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
