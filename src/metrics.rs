//! Prometheus metrics, one registry per `App` (no globals), rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::time::Duration;

// Every label value comes from a fixed set: a label value a caller could choose would make a new
// series per value, each kept for the life of the process (the review made `/metrics` 108 MB
// with 20 000 made-up HTTP methods). Hence `&'static str` (codes, operation names, route
// templates of the one route table), `u16` statuses, and methods folded by [`method_label`].

/// `outcome` (+ `reason`) labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success`, `denied`, `failure`.
    pub outcome: &'static str,
    /// Reason code, empty on success.
    pub reason: &'static str,
}

/// A single `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Reason code: a `code()` or `as_str()` of one of the broker's enums, never caller text
    /// (`&'static str`, so caller text cannot reach it).
    pub reason: &'static str,
}

/// GitHub call labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitHubLabels {
    /// Operation (`create_token`, …).
    pub operation: &'static str,
    /// HTTP status, `0` for a transport error.
    pub status: u16,
}

/// HTTP request labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method, folded by [`method_label`].
    pub method: &'static str,
    /// Matched route template (from the router's fixed table), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The label of an HTTP method: the methods of RFC 9110 §9 and PATCH (RFC 5789) by name, any
/// other token `other`. hyper accepts any token as a method, so it must not become a label as is.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Registers metrics in one registry: each metric is created, registered and kept in one step.
struct Registering<'r>(&'r mut Registry);

impl Registering<'_> {
    /// Register `metric` as `name` and hand it back: the registry keeps a clone, which shares
    /// the values with the one `Metrics` holds.
    fn metric<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// All broker metrics.
pub struct Metrics {
    registry: Registry,
    /// OIDC exchanges by outcome and reason.
    pub exchanges: Family<OutcomeLabels, Counter>,
    /// `/sts` calls by outcome and reason.
    pub mints: Family<OutcomeLabels, Counter>,
    /// Installation tokens handed out.
    pub tokens_minted: Counter,
    /// Tokens revoked at GitHub.
    pub tokens_revoked: Counter,
    /// Repositories excluded from mints, by reason.
    pub exclusions: Family<ReasonLabels, Counter>,
    /// Refused requests by reason (any endpoint).
    pub denials: Family<ReasonLabels, Counter>,
    /// GitHub call latency.
    pub github_latency: HistogramFamily<GitHubLabels>,
    /// HTTP request latency.
    pub http_latency: HistogramFamily<HttpLabels>,
    /// Audit export to the SIEM webhook.
    pub audit_export: AuditExportMetrics,
}

/// Audit export metrics: what an alert on a stuck or failing export needs.
#[derive(Debug, Clone, Default)]
pub struct AuditExportMetrics {
    /// Events delivered (answered 2xx).
    pub delivered: Counter,
    /// Delivery attempts that failed (transport error or non-2xx).
    pub failures: Counter,
    /// Events waiting in the outbox, as last seen by this replica.
    pub backlog: Gauge,
    /// Age in seconds of the oldest waiting event, as last seen (0 when none).
    pub oldest_age_seconds: Gauge,
}

debug_showing!(Metrics {});

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sts");
        let mut register = Registering(&mut registry);
        let exchanges = register.metric("exchanges", "OIDC token exchanges", Family::default());
        let mints = register.metric("mints", "STS mint requests", Family::default());
        let tokens_minted = register.metric(
            "tokens_minted",
            "Installation tokens handed out",
            Counter::default(),
        );
        let tokens_revoked = register.metric(
            "tokens_revoked",
            "Installation tokens revoked at GitHub",
            Counter::default(),
        );
        let exclusions = register.metric(
            "exclusions",
            "Repositories excluded from mints",
            Family::default(),
        );
        let denials = register.metric("denials", "Refused requests by reason", Family::default());
        let github_latency: HistogramFamily<GitHubLabels> = register.metric(
            "github_request_duration_seconds",
            "GitHub API call latency",
            Family::new_with_constructor(latency_histogram),
        );
        let http_latency: HistogramFamily<HttpLabels> = register.metric(
            "http_request_duration_seconds",
            "HTTP request latency",
            Family::new_with_constructor(latency_histogram),
        );
        let audit_export = AuditExportMetrics {
            delivered: register.metric(
                "audit_export_delivered",
                "Audit events delivered to the webhook",
                Counter::default(),
            ),
            failures: register.metric(
                "audit_export_failures",
                "Failed audit webhook deliveries (each is retried)",
                Counter::default(),
            ),
            backlog: register.metric(
                "audit_export_backlog",
                "Audit events waiting for export",
                Gauge::default(),
            ),
            oldest_age_seconds: register.metric(
                "audit_export_oldest_age_seconds",
                "Age of the oldest audit event waiting for export",
                Gauge::default(),
            ),
        };
        Self {
            registry,
            audit_export,
            exchanges,
            mints,
            tokens_minted,
            tokens_revoked,
            exclusions,
            denials,
            github_latency,
            http_latency,
        }
    }

    /// Count an outcome in `family`.
    pub fn outcome(
        family: &Family<OutcomeLabels, Counter>,
        outcome: &'static str,
        reason: &'static str,
    ) {
        family
            .get_or_create(&OutcomeLabels { outcome, reason })
            .inc();
    }

    /// Count one refusal.
    pub fn deny(&self, reason: &'static str) {
        self.denials.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Record one GitHub call.
    pub fn github_call(&self, operation: &'static str, status: u16, latency: Duration) {
        self.github_latency
            .get_or_create(&GitHubLabels { operation, status })
            .observe(latency.as_secs_f64());
    }

    /// Record one HTTP request: `method` as sent (folded here), `route` the matched template or
    /// `None`.
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, latency: Duration) {
        self.http_latency
            .get_or_create(&HttpLabels {
                method: method_label(method),
                route: route.unwrap_or(UNMATCHED_ROUTE).to_owned(),
                status,
            })
            .observe(latency.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_series() {
        let metrics = Metrics::new();
        for i in 0..1000 {
            metrics.http_request(&format!("M{i}"), None, 405, Duration::ZERO);
        }
        metrics.http_request("GET", Some("/healthz"), 200, Duration::ZERO);
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("sts_http_request_duration_seconds_count"))
            .count();
        assert_eq!(series, 2, "{text}");
        assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"405\""));
        assert!(!text.contains("M999"));
    }

    #[test]
    fn every_metric_is_registered_with_its_help() {
        let metrics = Metrics::new();
        // prometheus-client 0.26 leaves a labelled family out of the exposition until it
        // has a series, so give each one a series first.
        Metrics::outcome(&metrics.exchanges, "ok", "none");
        Metrics::outcome(&metrics.mints, "ok", "none");
        metrics
            .exclusions
            .get_or_create(&ReasonLabels { reason: "none" })
            .inc();
        metrics.deny("none");
        metrics.github_call("none", 200, Duration::ZERO);
        metrics.http_request("GET", None, 200, Duration::ZERO);
        let text = metrics.render();
        for (name, help) in [
            ("exchanges", "OIDC token exchanges"),
            ("mints", "STS mint requests"),
            ("tokens_minted", "Installation tokens handed out"),
            ("tokens_revoked", "Installation tokens revoked at GitHub"),
            ("exclusions", "Repositories excluded from mints"),
            ("denials", "Refused requests by reason"),
            ("github_request_duration_seconds", "GitHub API call latency"),
            ("http_request_duration_seconds", "HTTP request latency"),
        ] {
            assert!(
                text.contains(&format!("# HELP sts_{name} {help}")),
                "{text}"
            );
        }
    }

    #[test]
    fn debug_shows_no_series() {
        assert_eq!(format!("{:?}", Metrics::new()), "Metrics { .. }");
    }

    #[test]
    fn every_standard_method_keeps_its_name() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
        ] {
            assert_eq!(method_label(m), m);
        }
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label("PROPFIND"), "other");
    }
}
