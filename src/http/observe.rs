//! What each request leaves for the operator: latency metrics, an access log line, and an INFO
//! line for each admin change.

use super::{error, AppState};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// Per request: the latency metrics (by method folded to a fixed set, matched route and status;
/// mint and exchange latency by outcome), one access log line, and an INFO line for each admin
/// change that succeeded.
pub(super) async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = error::request_id_of(req.headers());
    let (mut parts, body) = req.into_parts();
    let params = admin_change(&method, route.as_ref(), &mut parts).await;
    let res = next.run(Request::from_parts(parts, body)).await;
    let latency = start.elapsed();
    let route = route.as_ref().map(MatchedPath::as_str);
    let status = res.status().as_u16();
    state
        .metrics
        .http_request(method.as_str(), route, status, latency);
    state.metrics.flow_request(route, status, latency);
    let method = crate::metrics::method_label(method.as_str());
    let route_label = route.unwrap_or(crate::metrics::UNMATCHED_ROUTE);
    let trace_id = crate::telemetry::current_trace_id().unwrap_or_default();
    // Refused and failed requests are the caller's to repeat: their lines share a budget.
    let suppressed = if res.status().is_client_error() || res.status().is_server_error() {
        state.refused_access_log.admit()
    } else {
        Some(0)
    };
    if let Some(suppressed) = suppressed {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method,
            route = route_label,
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            request_id = %request_id,
            trace_id = %trace_id,
            suppressed,
            "{method} {route_label} {status} {:.1}ms",
            latency.as_secs_f64() * 1000.0,
        );
    }
    if let Some(params) = params.filter(|_| res.status().is_success()) {
        tracing::info!(
            method,
            route = route_label,
            workspace = params.workspace.as_deref().unwrap_or_default(),
            owner = params.owner.as_deref().unwrap_or_default(),
            policy = params.policy.as_deref().unwrap_or_default(),
            "admin change: {method} {route_label}"
        );
    }
    res
}

/// Target of the access log lines, so `RUST_LOG` can turn them off (`sts_broker::access=off`).
pub const ACCESS_LOG_TARGET: &str = "sts_broker::access";

/// What an admin change names: the path parameters of its route. Never the body, which may
/// hold what an operator would rather not see in logs.
struct AdminChange {
    workspace: Option<String>,
    owner: Option<String>,
    policy: Option<String>,
}

/// The [`AdminChange`] of a request when it is a change (not a read) on an admin route.
async fn admin_change(
    method: &Method,
    route: Option<&MatchedPath>,
    parts: &mut axum::http::request::Parts,
) -> Option<AdminChange> {
    use axum::extract::FromRequestParts as _;
    let route = route?.as_str();
    if *method == Method::GET || !route.starts_with("/api/v1/admin/") {
        return None;
    }
    let params = axum::extract::RawPathParams::from_request_parts(parts, &())
        .await
        .ok();
    let param = |name: &str| {
        params
            .as_ref()?
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    };
    Some(AdminChange {
        workspace: param("ws"),
        owner: param("owner"),
        policy: param("name"),
    })
}
