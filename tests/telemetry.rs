//! What an operator sees of a running broker: traces exported over OTLP/HTTP that join the
//! caller's trace, access log lines, admin changes in the log, no colour codes off a terminal,
//! the operator endpoints on their own listener, and the metrics the deploy/ dashboards and
//! alerts name. The log and trace tests run `sts-broker serve` as a process (the global
//! subscriber and the `OTEL_*` variables are per process).

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use sts_broker::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use support::{main_job, BrokerApi, ServeProcess};

/// The caller's trace: W3C `traceparent` version 00, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

/// One exported span with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn attribute(&self, key: &str) -> Option<AnyValue> {
        attribute(&self.span.attributes, key)
    }

    /// The HTTP status the span records (an integer, or its decimal text as some SDK paths
    /// record values set after the span started).
    fn status_code(&self) -> Option<i64> {
        match self.attribute("http.response.status_code")? {
            AnyValue::IntValue(code) => Some(code),
            AnyValue::StringValue(code) => code.parse().ok(),
            _ => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) keeping every span it is sent.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for resource in request.resource_spans {
                    let attributes = resource.resource.unwrap_or_default().attributes;
                    let service = match attribute(&attributes, "service.name") {
                        Some(AnyValue::StringValue(name)) => name,
                        other => format!("{other:?}"),
                    };
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.lock().unwrap().push(Received {
                                service: service.clone(),
                                span,
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// The dev world's simulators, with the broker's placeholder address in `public_url` only.
async fn world() -> DevWorld {
    DevWorld::start("127.0.0.1:9".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_traceparent_is_traced_and_logged_in_the_callers_trace() {
    let (collector, spans) = otlp_receiver().await;
    let world = world().await;
    let mut command = support::serve_command(&world, "traced.toml", "");
    // The standard variables alone turn export on and name the service.
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_SERVICE_NAME", "sts-broker-under-test")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let mut serve = ServeProcess::start(command);
    let base = format!("http://{}", serve.listening_address().await);
    world.seed(&base).await.unwrap();
    let http = reqwest::Client::new();
    let api = BrokerApi {
        http: &http,
        base: &base,
    };
    let session = api.main_session(&world).await;
    let mint = support::reply(
        http.post(api.url("/api/v1/sts"))
            .bearer_auth(&session)
            .header("traceparent", traceparent())
            .json(&json!({ "sources": ["acme/modules"], "policyName": "default" })),
    )
    .await;
    assert_eq!(mint.status, 200, "{}", mint.body);
    let mint_request_id = mint.body["request"].as_str().unwrap().to_owned();
    let missing = http
        .get(api.url("/no/such/route"))
        .header("traceparent", traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Shutting down flushes the batch exporter.
    let lines = serve.stop().await;

    let spans = spans.lock().unwrap().clone();
    let in_trace: Vec<&Received> = spans.iter().filter(|s| s.trace_id() == TRACE_ID).collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.span.name.as_str()).collect();
    let server = in_trace
        .iter()
        .find(|s| s.span.name == "POST /api/v1/sts")
        .unwrap_or_else(|| panic!("no server span of the mint in the trace: {names:?}"));
    assert_eq!(server.service, "sts-broker-under-test");
    assert_eq!(server.span.kind, SpanKind::Server as i32);
    assert_eq!(hex(&server.span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(server.status_code(), Some(200));
    assert_eq!(
        server.attribute("http.route"),
        Some(AnyValue::StringValue("/api/v1/sts".into()))
    );
    assert_ne!(
        server.span.status.clone().unwrap_or_default().code,
        SpanStatus::Error as i32
    );
    let client = in_trace
        .iter()
        .find(|s| s.span.name == "POST /app/installations/{installation_id}/access_tokens")
        .unwrap_or_else(|| panic!("no GitHub client span in the trace: {names:?}"));
    assert_eq!(client.span.kind, SpanKind::Client as i32);
    assert_eq!(client.span.trace_id, server.span.trace_id);
    // An unmatched request is named by its method alone; a 404 is the caller's, not an error.
    let unmatched = in_trace
        .iter()
        .find(|s| s.span.name == "GET")
        .unwrap_or_else(|| panic!("no span of the unmatched request: {names:?}"));
    assert_eq!(unmatched.status_code(), Some(404));
    // The exchange sent no traceparent: its spans start a trace of their own.
    assert!(spans
        .iter()
        .any(|s| s.span.name == "POST /api/v1/auth/github-oidc" && s.trace_id() != TRACE_ID));

    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access = events
        .iter()
        .find(|e| {
            e["target"] == "sts_broker::access" && e["fields"]["request_id"] == mint_request_id
        })
        .unwrap_or_else(|| panic!("no access line for the mint in {lines:#?}"));
    let fields = &access["fields"];
    assert_eq!(fields["method"], "POST", "{access}");
    assert_eq!(fields["route"], "/api/v1/sts", "{access}");
    assert_eq!(fields["status"], 200, "{access}");
    assert_eq!(fields["trace_id"], TRACE_ID, "{access}");
    assert!(fields["latency_ms"].as_f64().unwrap() >= 0.0, "{access}");
    // Every line inside the mint's span names the trace.
    let trace_ids = support::mint_line_span_fields(&events, "trace_id");
    assert_eq!(trace_ids, [TRACE_ID]);
    // The seeding's changes are logged with what they changed.
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["level"] == "INFO"
                && e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin change: "))
        })
        .collect();
    assert!(
        changes.iter().any(|e| e["fields"]["route"]
            == "/api/v1/admin/workspaces/{ws}/policies/{name}"
            && e["fields"]["workspace"] == DEV_WORKSPACE
            && e["fields"]["policy"] == "default"),
        "{changes:#?}"
    );
    let all = lines.join("\n");
    assert!(!all.contains(&session), "the session token is in the logs");
    assert!(
        !all.contains(&world.admin_token),
        "the admin token is in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_access_lines_and_no_colour_codes_off_a_terminal() {
    let world = world().await;
    let mut command = support::serve_command(&world, "text.toml", "");
    // The environment overrides the file's `log_format = "json"`.
    command.env("STS_BROKER__TELEMETRY__LOG_FORMAT", "text");
    let mut serve = ServeProcess::start(command);
    let base = format!("http://{}", serve.listening_address().await);
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let lines = serve.stop().await;
    let all = lines.join("\n");
    assert!(!all.contains('\u{1b}'), "colour codes in {all}");
    let access = lines
        .iter()
        .find(|l| l.contains("GET /healthz 200 "))
        .unwrap_or_else(|| panic!("no access line in {all}"));
    for field in [
        "method=\"GET\"",
        "route=\"/healthz\"",
        "status=200",
        "request_id=",
        "trace_id=",
    ] {
        assert!(access.contains(field), "{field} missing: {access}");
    }
}

/// `GET path` on `base`, with the admin token: the status and body.
async fn get(base: &str, path: &str, token: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn with_admin_listen_the_operator_endpoints_are_served_only_there() {
    sts_broker::telemetry::init_for_test();
    let world = world().await;
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = sts_broker::app::App::build(world.config.clone())
        .await
        .unwrap();
    let broker = sts_broker::server::spawn_with_admin(app, public, Some(admin)).unwrap();
    let admin_base = format!("http://{}", broker.admin_addr.unwrap());
    world.seed(&admin_base).await.unwrap();
    let token = world.admin_token.as_str();
    for path in ["/metrics", "/api/v1/admin/workspaces"] {
        assert_eq!(get(&broker.url, path, token).await.0, 404, "public {path}");
        assert_eq!(get(&admin_base, path, token).await.0, 200, "admin {path}");
    }
    for base in [&broker.url, &admin_base] {
        assert_eq!(get(base, "/healthz", token).await.0, 200, "{base}");
    }
    // CI's endpoints are on the public listener only.
    let http = reqwest::Client::new();
    let oidc = world.issuer.token_for(&main_job(), DEV_AUDIENCE);
    for (base, status) in [(&admin_base, 404), (&broker.url, 200)] {
        let api = BrokerApi { http: &http, base };
        assert_eq!(
            api.exchange(&oidc, DEV_WORKSPACE).await.status,
            status,
            "{base}"
        );
    }
}

/// Every metric name a PromQL expression mentions (`sts_*` and `process_*`), histogram series
/// suffixes removed.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("sts_") || word.starts_with("process_"))
        .map(|word| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

/// Every `expr` string anywhere in a JSON or YAML document.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(expr) if key == "expr" => out.push(expr.clone()),
                    _ => exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboards_and_alerts_name_only_metrics_the_broker_exports() {
    let (world, broker) = support::spawn_dev_broker(|_| {}).await;
    let http = reqwest::Client::new();
    let api = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    let session = api.main_session(&world).await;
    // acme/payroll is excluded: the exclusions family gets a series.
    assert_eq!(
        api.mint(&session, &["acme/modules", "acme/payroll"])
            .await
            .status,
        200
    );
    // A refused exchange: the denials family gets a series (labelled families with no series
    // are left out of the exposition).
    assert_eq!(api.exchange("not-a-jwt", DEV_WORKSPACE).await.status, 401);
    // A rate-limited answer for the installation: the gauge shows what GitHub said is left.
    world.github.fail_next(1, 403, Some(3600));
    assert_eq!(api.mint(&session, &["acme/modules"]).await.status, 503);
    let (status, scraped) = get(&broker.url, "/metrics", &world.admin_token).await;
    assert_eq!(status, 200);
    assert!(
        scraped.contains("sts_github_rate_limit_remaining{installation=\""),
        "{scraped}"
    );
    assert!(scraped.contains(&format!(
        "sts_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(
        scraped.contains("sts_mint_duration_seconds_bucket{le=\"1.0\",outcome=\"success\"}")
            || scraped.contains("sts_mint_duration_seconds_bucket{outcome=\"success\",le=\"1.0\"}"),
        "{scraped}"
    );

    // Every family the broker exports is listed, and every listed one is exported.
    let exported: Vec<String> = scraped
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect();
    let mut listed: Vec<String> = sts_broker::metrics::METRIC_NAMES
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    listed.sort();
    let mut sorted = exported.clone();
    sorted.sort();
    assert_eq!(sorted, listed);

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = Vec::new();
    for (dir, ext) in [("deploy/grafana", "json"), ("deploy/prometheus", "yaml")] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some(ext) {
                let text = std::fs::read_to_string(&path).unwrap();
                let value: Value = if ext == "json" {
                    serde_json::from_str(&text).unwrap()
                } else {
                    serde_norway::from_str(&text).unwrap()
                };
                documents.push((path, value));
            }
        }
    }
    assert!(documents.len() >= 2, "{documents:?}");
    for (path, document) in documents {
        let mut found = Vec::new();
        exprs(&document, &mut found);
        assert!(!found.is_empty(), "no expr in {}", path.display());
        for expr in found {
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{}: no metric in {expr}", path.display());
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{}: `{name}` in `{expr}` is not exported",
                    path.display()
                );
            }
        }
    }
}
