//! Spans named and attributed as the OpenTelemetry HTTP semantic conventions say
//! (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>): a SERVER span per request
//! named `METHOD /route`, CLIENT spans for the calls the broker makes.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Reads W3C Trace Context headers (`traceparent`, `tracestate`) from a request.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The `http.request.method` of a method label: the conventions name any method they do not
/// know `_OTHER`.
fn semconv_method(method: &'static str) -> &'static str {
    if method == "other" {
        "_OTHER"
    } else {
        method
    }
}

/// The SERVER span of one request, a child of the caller's trace when its headers carry one.
/// `method` is already folded to a fixed set and `route` is the matched template (`None`: no
/// route matched, and the span is named by the method alone, as the conventions ask). Records
/// `trace_id`, so every log line inside the span names the trace.
pub fn server_span(
    method: &'static str,
    route: Option<&str>,
    request_id: &str,
    headers: &http::HeaderMap,
) -> tracing::Span {
    let method = semconv_method(method);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route.unwrap_or_default(),
        http.response.status_code = Empty,
        request_id = %request_id,
        trace_id = Empty,
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Fails only without the OpenTelemetry layer (the in-process tests): then there is no trace.
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Record the response status on a [`server_span`]; a 5xx marks the span as an error (a 4xx is
/// the caller's, not the server's, so it does not).
pub fn record_response(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// A CLIENT span for a call to `server_address`, named `METHOD template` with the URL template
/// (no ids, no query) so that spans of one kind of call group together.
pub fn client_span(method: &'static str, template: &str, server_address: &str) -> tracing::Span {
    tracing::info_span!(
        "client",
        otel.name = %format!("{method} {template}"),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method,
        url.template = %template,
        server.address = %server_address,
        error.type = Empty,
    )
}

/// Mark a [`client_span`] as failed, with a stable error code (never caller or secret text).
pub fn record_client_error(span: &tracing::Span, code: &'static str) {
    span.record("otel.status_code", "error");
    span.record("error.type", code);
}
