//! Logging and tracing: plain text by default, JSON on request, OTLP traces when configured.
//!
//! Every request gets an OpenTelemetry span whether or not traces are exported, so that its log
//! lines carry a `trace_id` that joins the caller's trace (W3C Trace Context,
//! <https://www.w3.org/TR/trace-context/>). Export is on when `[telemetry] otlp_endpoint` is set,
//! or when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>); the SDK reads the other
//! `OTEL_*` variables itself (headers, sampler, resource attributes).

mod github;
mod spans;

pub use github::{current_installation, TracedGitHub};
pub use spans::{client_span, record_client_error, record_response, server_span, HeaderExtractor};

use crate::config::LogFormat;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use std::io::IsTerminal as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Service name reported with every span unless `OTEL_SERVICE_NAME` (or a `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) names another.
pub const DEFAULT_SERVICE_NAME: &str = "sts-broker";

/// The OTLP/HTTP path of traces under a collector's base URL.
const TRACES_PATH: &str = "v1/traces";

/// Flushes and shuts down the OTel tracer provider when dropped.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Where spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Nowhere: spans only give log lines their trace id.
    Off,
    /// To this OTLP/HTTP traces URL (from `[telemetry] otlp_endpoint`).
    To(String),
    /// Where the `OTEL_EXPORTER_OTLP_*` variables say; the exporter reads them.
    FromEnv,
}

/// Decide the export from the configured endpoint (a collector base URL such as
/// `http://collector:4318`, or its full `/v1/traces` URL) and the environment `env`.
/// The configured key wins; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export
/// off, as the OpenTelemetry specification says they do.
pub fn export_target(
    configured: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Export, String> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(Export::Off);
    }
    if let Some(raw) = configured {
        let url = crate::config::check_otlp_endpoint(raw)?;
        return Ok(Export::To(traces_url(url)));
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        if let Some(raw) = set(name) {
            crate::config::check_otlp_endpoint(&raw).map_err(|e| format!("{name}: {e}"))?;
            return Ok(Export::FromEnv);
        }
    }
    Ok(Export::Off)
}

/// The traces URL under a collector base URL; a URL that already ends in `/v1/traces` is kept.
fn traces_url(mut url: url::Url) -> String {
    if !url.path().trim_end_matches('/').ends_with(TRACES_PATH) {
        let path = format!("{}/{TRACES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url.to_string()
}

/// Install the global subscriber writing lines in `log_format` (colours only when stdout is a
/// terminal and `NO_COLOR` is unset), the W3C Trace Context propagator, and an OpenTelemetry
/// tracer exporting per [`export_target`]. Filter from `RUST_LOG`, default `info`.
pub fn init(log_format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    let export = export_target(otlp_endpoint, |name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("telemetry: {e}"))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = match log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .boxed(),
    };
    let provider = tracer_provider(&export)?;
    let tracer = provider.tracer(DEFAULT_SERVICE_NAME);
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    if export != Export::Off {
        tracing::info!(export = ?export, "exporting traces over OTLP/HTTP");
    }
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

fn tracer_provider(export: &Export) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    let named_by_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let mut builder =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource.build());
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    builder = match export {
        Export::Off => builder,
        Export::To(url) => builder.with_batch_exporter(exporter.with_endpoint(url).build()?),
        Export::FromEnv => builder.with_batch_exporter(exporter.build()?),
    };
    Ok(builder.build())
}

/// For tests: logs only with `TEST_LOG=1`; safe to call many times.
pub fn init_for_test() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug"))
            .with_test_writer()
            .try_init();
    }
}

/// The OTel trace id of the current span, when a tracer is installed.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let id = span.span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::{export_target, Export};

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_configured_endpoint_is_a_base_url_or_the_traces_url() {
        for (configured, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otel.example/base",
                "https://otel.example/base/v1/traces",
            ),
            (
                "http://collector:4318/v1/traces",
                "http://collector:4318/v1/traces",
            ),
        ] {
            assert_eq!(
                export_target(Some(configured), env(&[])),
                Ok(Export::To(url.to_owned())),
                "{configured}"
            );
        }
    }

    #[test]
    fn the_standard_variables_turn_export_on_and_off() {
        assert_eq!(export_target(None, env(&[])), Ok(Export::Off));
        let endpoint = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert_eq!(export_target(None, env(&endpoint)), Ok(Export::FromEnv));
        let traces = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1/traces")];
        assert_eq!(export_target(None, env(&traces)), Ok(Export::FromEnv));
        let empty = [("OTEL_EXPORTER_OTLP_ENDPOINT", " ")];
        assert_eq!(export_target(None, env(&empty)), Ok(Export::Off));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let vars = [endpoint[0], off];
            assert_eq!(
                export_target(Some("http://c:4318"), env(&vars)),
                Ok(Export::Off)
            );
        }
    }

    #[test]
    fn an_endpoint_that_is_not_a_url_is_refused_naming_where_it_came_from() {
        assert!(export_target(Some("notaurl"), env(&[])).is_err());
        let bad = [("OTEL_EXPORTER_OTLP_ENDPOINT", "notaurl")];
        let err = export_target(None, env(&bad)).unwrap_err();
        assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "), "{err}");
    }
}
