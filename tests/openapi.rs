//! `openapi.yaml` stays in step with the router: every served route is documented, nothing
//! documented is missing from the router, every `/api` error answer uses the shared envelope, and
//! every `$ref` resolves.

use serde_json::Value;
use std::collections::BTreeSet;

/// HTTP methods a path item of the document can hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];
/// The one error schema every `/api` error response must use.
const ERROR_SCHEMA: &str = "#/components/schemas/ErrorEnvelope";

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Every (METHOD, path) with its operation object.
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let paths = spec["paths"].as_object().expect("the document has `paths`");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(*method) {
                ops.push((method.to_ascii_uppercase(), path.clone(), op));
            }
        }
    }
    ops
}

/// Follow a local `$ref` (`#/a/b`) to its target.
fn resolve<'a>(spec: &'a Value, reference: &str) -> Option<&'a Value> {
    spec.pointer(reference.strip_prefix('#')?)
}

/// The object itself, or what its `$ref` points to.
fn deref<'a>(spec: &'a Value, v: &'a Value) -> Option<&'a Value> {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(spec, r),
        None => Some(v),
    }
}

fn is_error_schema(schema: &Value) -> bool {
    let direct = |s: &Value| s.get("$ref").and_then(Value::as_str) == Some(ERROR_SCHEMA);
    direct(schema)
        || schema
            .get("allOf")
            .and_then(Value::as_array)
            .is_some_and(|all| all.iter().any(direct))
}

fn route_set() -> BTreeSet<(String, String)> {
    sts_broker::http::routes()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_owned(), p.to_owned()))
        .collect()
}

fn spec_set(spec: &Value) -> BTreeSet<(String, String)> {
    operations(spec)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect()
}

/// Fail naming, after `what`, each operation of `these` that `those` lacks.
fn assert_all_in(
    these: &BTreeSet<(String, String)>,
    those: &BTreeSet<(String, String)>,
    what: &str,
) {
    let lacking: Vec<_> = these.difference(those).cloned().collect();
    assert!(lacking.is_empty(), "{what}: {lacking:?}");
}

#[test]
fn every_route_of_the_router_is_documented() {
    assert_all_in(
        &route_set(),
        &spec_set(&spec()),
        "routes missing from openapi.yaml",
    );
}

#[test]
fn every_documented_operation_is_served_by_the_router() {
    assert_all_in(
        &spec_set(&spec()),
        &route_set(),
        "operations in openapi.yaml that the router does not serve",
    );
}

#[test]
fn every_api_error_response_uses_the_shared_error_envelope() {
    let spec = spec();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&spec) {
        if !path.starts_with("/api/") {
            continue;
        }
        let responses = op["responses"]
            .as_object()
            .expect("every operation has responses");
        for (code, response) in responses {
            if !(code.starts_with('4') || code.starts_with('5')) {
                continue;
            }
            checked += 1;
            let where_ = format!("{method} {path} {code}");
            let Some(response) = deref(&spec, response) else {
                wrong.push(format!("{where_}: dangling $ref"));
                continue;
            };
            let content = response.get("content").and_then(Value::as_object);
            match content {
                Some(content) if content.contains_key("application/json") => {
                    for (media, body) in content {
                        if !is_error_schema(&body["schema"]) {
                            wrong.push(format!("{where_} ({media}): schema is not {ERROR_SCHEMA}"));
                        }
                    }
                }
                _ => wrong.push(format!("{where_}: no application/json content")),
            }
        }
    }
    assert!(
        checked > 0,
        "no /api error responses found; is the document empty?"
    );
    assert!(
        wrong.is_empty(),
        "error responses without the shared envelope:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_ref_in_the_document_resolves() {
    fn walk(spec: &Value, v: &Value, at: &str, seen: &mut usize, dangling: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref") {
                    *seen += 1;
                    let ok = r.as_str().and_then(|r| resolve(spec, r)).is_some();
                    if !ok {
                        dangling.push(format!("{at}: {r}"));
                    }
                }
                for (k, child) in map {
                    walk(spec, child, &format!("{at}/{k}"), seen, dangling);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(spec, child, &format!("{at}/{i}"), seen, dangling);
                }
            }
            _ => {}
        }
    }
    let spec = spec();
    let (mut seen, mut dangling) = (0, Vec::new());
    walk(&spec, &spec, "", &mut seen, &mut dangling);
    assert!(seen > 0, "the document uses no $ref at all");
    assert!(
        dangling.is_empty(),
        "unresolvable $refs:\n{}",
        dangling.join("\n")
    );
}

#[test]
fn every_path_parameter_is_declared_by_each_operation_of_its_path() {
    let spec = spec();
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&spec) {
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = [&spec["paths"][&path]["parameters"], &op["parameters"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|p| deref(&spec, p))
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        if in_template != declared {
            wrong.push(format!(
                "{method} {path}: template {in_template:?}, declared {declared:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "path parameters out of step:\n{}",
        wrong.join("\n")
    );
}

/// The enum at JSON `pointer` in the spec lists exactly `code`'s values.
fn assert_documented_enum<'a>(pointer: &str, code: impl Iterator<Item = &'a str>) {
    let spec = spec();
    let documented: BTreeSet<&str> = spec
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{pointer} is an enum"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(documented, code.collect::<BTreeSet<&str>>(), "{pointer}");
}

#[test]
fn the_documented_exclusion_reasons_are_the_ones_the_mint_reports() {
    use sts_broker::audit::ExclusionReason;
    let code = ExclusionReason::ALL.iter().map(|r| r.as_str());
    assert_documented_enum("/components/schemas/ExclusionReason/enum", code);
}

#[test]
fn the_documented_lint_codes_are_the_ones_the_engine_reports() {
    use sts_broker::policy::WarningCode;
    let code = WarningCode::ALL.iter().map(|c| c.as_str());
    assert_documented_enum(
        "/components/schemas/PolicyWarning/properties/code/enum",
        code,
    );
}

#[test]
fn the_policy_tooling_operations_document_their_bodies_with_examples() {
    let spec = spec();
    let ops = operations(&spec);
    let op = |method: &str, path: &str| {
        ops.iter()
            .find(|(m, p, _)| m == method && p == path)
            .map(|(_, _, op)| *op)
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
    };
    let ws = "/api/v1/admin/workspaces/{ws}";
    let with_bodies = [
        ("POST", format!("{ws}/explain"), "Explanation"),
        ("POST", format!("{ws}/policies/{{name}}/rollback"), "Policy"),
    ];
    for (method, path, answer) in &with_bodies {
        let body = &op(method, path)["requestBody"]["content"]["application/json"];
        assert!(
            body.get("example").is_some() || body.get("examples").is_some(),
            "{method} {path}: no request example"
        );
        let ok = op(method, path)["responses"]["200"]["content"]["application/json"]["schema"]
            .to_string();
        assert!(ok.contains(answer), "{method} {path}: 200 is not {answer}");
    }
    let versions = op("GET", &format!("{ws}/policies/{{name}}/versions"));
    assert!(versions["responses"]["200"]["content"]["application/json"]
        .get("example")
        .is_some());
    let get = op("GET", &format!("{ws}/policies/{{name}}"));
    assert!(get["parameters"].as_array().is_some_and(|ps| ps
        .iter()
        .any(|p| p["name"] == "version" && p["in"] == "query")));
    let mint = &spec["components"]["schemas"]["MintRequest"]["properties"];
    assert!(
        mint.get("permissions").is_some(),
        "MintRequest lacks permissions"
    );
}

#[test]
fn api_operations_name_their_credentials() {
    let spec = spec();
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&spec) {
        let scheme = op["security"].as_array().map(|reqs| {
            reqs.iter()
                .filter_map(Value::as_object)
                .flat_map(|r| r.keys().cloned())
                .collect::<Vec<_>>()
        });
        let expected: Vec<String> = if path.starts_with("/api/v1/admin/") {
            vec!["operatorToken".into()]
        } else if path.starts_with("/api/") && path != "/api/v1/auth/github-oidc" {
            vec!["sessionJwt".into()]
        } else {
            Vec::new()
        };
        if scheme.as_ref() != Some(&expected) {
            wrong.push(format!(
                "{method} {path}: security {scheme:?}, expected {expected:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "operations with the wrong security:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn operation_ids_are_unique() {
    let spec = spec();
    let ops = operations(&spec);
    let ids: BTreeSet<&str> = ops
        .iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        ops.len(),
        "every operation needs its own operationId"
    );
}
