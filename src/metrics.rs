//! Prometheus metrics, one registry per `App` (no globals), rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// `outcome` (+ `reason`) labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success`, `denied`, `failure`.
    pub outcome: String,
    /// Reason code, empty on success.
    pub reason: String,
}

/// A single `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Reason code.
    pub reason: String,
}

/// GitHub call labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitHubLabels {
    /// Operation (`create_token`, …).
    pub operation: String,
    /// HTTP status, `0` for a transport error.
    pub status: String,
}

/// HTTP request labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method.
    pub method: String,
    /// Matched route template.
    pub route: String,
    /// Status code.
    pub status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
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
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sts");
        let exchanges = Family::<OutcomeLabels, Counter>::default();
        registry.register("exchanges", "OIDC token exchanges", exchanges.clone());
        let mints = Family::<OutcomeLabels, Counter>::default();
        registry.register("mints", "STS mint requests", mints.clone());
        let tokens_minted = Counter::default();
        registry.register(
            "tokens_minted",
            "Installation tokens handed out",
            tokens_minted.clone(),
        );
        let tokens_revoked = Counter::default();
        registry.register(
            "tokens_revoked",
            "Installation tokens revoked at GitHub",
            tokens_revoked.clone(),
        );
        let exclusions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "exclusions",
            "Repositories excluded from mints",
            exclusions.clone(),
        );
        let denials = Family::<ReasonLabels, Counter>::default();
        registry.register("denials", "Refused requests by reason", denials.clone());
        let github_latency: HistogramFamily<GitHubLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "github_request_duration_seconds",
            "GitHub API call latency",
            github_latency.clone(),
        );
        let http_latency: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_latency.clone(),
        );
        Self {
            registry,
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
    pub fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: &str, reason: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Count one refusal.
    pub fn deny(&self, reason: &str) {
        self.denials
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Record one GitHub call.
    pub fn github_call(&self, operation: &'static str, status: u16, latency: Duration) {
        self.github_latency
            .get_or_create(&GitHubLabels {
                operation: operation.to_owned(),
                status: status.to_string(),
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
