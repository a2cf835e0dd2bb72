//! Prometheus metrics, one registry per `App` (no globals), rendered at `/metrics`.
//!
//! Every name the broker exports is in [`METRIC_NAMES`]; the dashboards and alert rules under
//! `deploy/` are checked against it by a test.

mod process;

pub use process::{ProcessCollector, ProcessStats};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::collections::HashSet;
use std::sync::Mutex;
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

/// `outcome` label of the mint and exchange latency histograms: `success` (2xx), `denied`
/// (4xx), `failure` (5xx).
pub type OutcomeLabel = [(&'static str, &'static str); 1];

/// `installation` label of the GitHub rate-limit gauge: the installation id; `app` for calls
/// made for no one installation (owner lookups, revokes); [`OTHER_INSTALLATIONS`] past
/// [`MAX_RATE_LIMIT_INSTALLATIONS`].
pub type InstallationLabel = [(&'static str, String); 1];

/// At most this many installations get their own rate-limit series; the rest share
/// [`OTHER_INSTALLATIONS`]. Installations are the App's customers, so they are not caller-chosen,
/// but a broker serving thousands of them must not grow `/metrics` without bound.
pub const MAX_RATE_LIMIT_INSTALLATIONS: usize = 100;
/// The `installation` label past the cap.
pub const OTHER_INSTALLATIONS: &str = "other";

/// The commit of this build, from `build.rs`.
pub const BUILD_COMMIT: &str = env!("STS_BUILD_COMMIT");

/// Every metric family the broker exports, as scraped (counters with `_total`). The deploy/
/// dashboards and alerts may use only these (a test checks them, and that each is exported).
pub const METRIC_NAMES: &[&str] = &[
    "sts_exchanges_total",
    "sts_mints_total",
    "sts_tokens_minted_total",
    "sts_tokens_revoked_total",
    "sts_exclusions_total",
    "sts_denials_total",
    "sts_github_request_duration_seconds",
    "sts_http_request_duration_seconds",
    "sts_mint_duration_seconds",
    "sts_exchange_duration_seconds",
    "sts_github_rate_limit_remaining",
    "sts_build_info",
    "sts_audit_export_delivered_total",
    "sts_audit_export_failures_total",
    "sts_audit_export_backlog",
    "sts_audit_export_oldest_age_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// Route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The route whose latency is [`Metrics::mint_latency`].
pub const MINT_ROUTE: &str = "/api/v1/sts";
/// The route whose latency is [`Metrics::exchange_latency`].
pub const EXCHANGE_ROUTE: &str = "/api/v1/auth/github-oidc";

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

/// Buckets of the mint and exchange histograms: round bounds an SLO names ("99% of mints under
/// 1 s"), from what a cached exchange takes to what a mint retried against a slow GitHub takes
/// (its retries end within 20 s).
pub const SLO_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
];

fn slo_histogram() -> Histogram {
    Histogram::new(SLO_BUCKETS)
}

/// The `outcome` of a response status.
pub fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=399 => "success",
        500.. => "failure",
        _ => "denied",
    }
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

    /// Register a histogram family whose histograms `buckets` makes.
    fn histograms<L>(
        &mut self,
        name: &str,
        help: &str,
        buckets: fn() -> Histogram,
    ) -> HistogramFamily<L>
    where
        L: prometheus_client::encoding::EncodeLabelSet
            + Clone
            + Eq
            + std::hash::Hash
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        self.metric(name, help, Family::new_with_constructor(buckets))
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
    /// Latency of `/api/v1/sts` by outcome.
    pub mint_latency: HistogramFamily<OutcomeLabel>,
    /// Latency of the OIDC exchange by outcome.
    pub exchange_latency: HistogramFamily<OutcomeLabel>,
    /// `x-ratelimit-remaining` of GitHub's last answer, by installation.
    pub github_rate_limit: Family<InstallationLabel, Gauge>,
    /// Installations with their own rate-limit series (at most
    /// [`MAX_RATE_LIMIT_INSTALLATIONS`]).
    rate_limited_installations: Mutex<HashSet<i64>>,
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
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut register = Registering(registry.sub_registry_with_prefix("sts"));
        let exchanges = register.metric("exchanges", "OIDC token exchanges", Family::default());
        let mints = register.metric("mints", "STS mint requests", Family::default());
        // The plain counters and gauges, as tables of name and help.
        let [tokens_minted, tokens_revoked, export_delivered, export_failures] = [
            ("tokens_minted", "Installation tokens handed out"),
            ("tokens_revoked", "Installation tokens revoked at GitHub"),
            (
                "audit_export_delivered",
                "Audit events delivered to the webhook",
            ),
            (
                "audit_export_failures",
                "Failed audit webhook deliveries (each is retried)",
            ),
        ]
        .map(|(name, help)| register.metric(name, help, Counter::default()));
        let [export_backlog, export_oldest_age] = [
            ("audit_export_backlog", "Audit events waiting for export"),
            (
                "audit_export_oldest_age_seconds",
                "Age of the oldest audit event waiting for export",
            ),
        ]
        .map(|(name, help)| register.metric(name, help, Gauge::default()));
        let exclusions = register.metric(
            "exclusions",
            "Repositories excluded from mints",
            Family::default(),
        );
        let denials = register.metric("denials", "Refused requests by reason", Family::default());
        let github_latency: HistogramFamily<GitHubLabels> = register.histograms(
            "github_request_duration_seconds",
            "GitHub API call latency",
            latency_histogram,
        );
        let http_latency: HistogramFamily<HttpLabels> = register.histograms(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency_histogram,
        );
        let audit_export = AuditExportMetrics {
            delivered: export_delivered,
            failures: export_failures,
            backlog: export_backlog,
            oldest_age_seconds: export_oldest_age,
        };
        let [mint_latency, exchange_latency]: [HistogramFamily<OutcomeLabel>; 2] = [
            (
                "mint_duration_seconds",
                "Latency of STS mint requests, by outcome",
            ),
            (
                "exchange_duration_seconds",
                "Latency of OIDC token exchanges, by outcome",
            ),
        ]
        .map(|(name, help)| register.histograms(name, help, slo_histogram));
        let github_rate_limit = register.metric(
            "github_rate_limit_remaining",
            "Requests left in the GitHub rate-limit window of the last call, by installation",
            Family::default(),
        );
        let build_info: Family<[(&str, &str); 2], Gauge> = register.metric(
            "build_info",
            "The broker's version and commit; always 1",
            Family::default(),
        );
        build_info
            .get_or_create(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", BUILD_COMMIT),
            ])
            .set(1);
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
            mint_latency,
            exchange_latency,
            github_rate_limit,
            rate_limited_installations: Mutex::new(HashSet::new()),
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

    /// Record the latency of a mint or an exchange, when `route` is one of theirs.
    pub fn flow_request(&self, route: Option<&str>, status: u16, latency: Duration) {
        let family = match route {
            Some(MINT_ROUTE) => &self.mint_latency,
            Some(EXCHANGE_ROUTE) => &self.exchange_latency,
            _ => return,
        };
        family
            .get_or_create(&[("outcome", outcome_of(status))])
            .observe(latency.as_secs_f64());
    }

    /// Record GitHub's `x-ratelimit-remaining` on a call for `installation` (`None`: for no one
    /// installation).
    pub fn github_rate_limit(&self, installation: Option<i64>, remaining: u64) {
        let label = match installation {
            None => "app".to_owned(),
            Some(id) => {
                let mut known = self
                    .rate_limited_installations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if known.contains(&id) || known.len() < MAX_RATE_LIMIT_INSTALLATIONS {
                    known.insert(id);
                    id.to_string()
                } else {
                    OTHER_INSTALLATIONS.to_owned()
                }
            }
        };
        self.github_rate_limit
            .get_or_create(&[("installation", label)])
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
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
