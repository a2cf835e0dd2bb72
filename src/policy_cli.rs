//! `sts-broker policy check` and `sts-broker policy test`: the broker's own policy engine,
//! offline (no GitHub, no database), for policy authors and their CI.
//!
//! Offline there are no installations, so a granted repository is reported as the policy grants
//! it and only the policy's own reasons (`no_trust_policy`, `trust_policy_denied`) can be
//! expected; the broker adds the installation reasons at mint time.

use crate::audit::ExclusionReason;
use crate::policy::{
    Claims, CompiledPolicy, PermissionSet, PolicyFormat, RepoDecision, RepoRef, RuleTrace,
    GITHUB_ACTIONS_ISSUER,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Every file valid; every case passed.
pub const EXIT_OK: u8 = 0;
/// Some policy invalid; some case failed.
pub const EXIT_FAILED: u8 = 1;
/// A file could not be read or parsed as a cases file.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The only reasons a policy decides by itself; the others need the workspace's installations.
const OFFLINE_REASONS: [ExclusionReason; 2] = [
    ExclusionReason::NoTrustPolicy,
    ExclusionReason::TrustPolicyDenied,
];

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// For machines: one JSON document.
    Json,
}

/// What a command printed and its exit code.
#[derive(Debug)]
pub struct Report {
    /// The process exit code.
    pub code: u8,
    /// Standard output.
    pub out: String,
}

/// `.json` files are JSON; everything else is YAML (a superset of JSON).
fn format_of(path: &Path) -> PolicyFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => PolicyFormat::Json,
        _ => PolicyFormat::Yaml,
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Compile a policy file: the policy, or every error (each with its path).
fn load_policy(path: &Path) -> Result<Result<CompiledPolicy, Vec<String>>, String> {
    let source = read(path)?;
    Ok(CompiledPolicy::from_source(&source, format_of(path)))
}

/// `policy check FILE…`: validate each file; warnings never fail a file.
pub fn check(files: &[impl AsRef<Path>], format: Format) -> Report {
    let mut code = EXIT_OK;
    let mut out = String::new();
    let mut results = Vec::new();
    for file in files {
        let path = file.as_ref();
        let name = path.display();
        match load_policy(path) {
            Err(unreadable) => {
                code = code.max(EXIT_BAD_INPUT);
                results.push(
                    json!({"file": name.to_string(), "valid": false, "errors": [unreadable]}),
                );
                let _ = writeln!(out, "{unreadable}");
            }
            Ok(Err(errors)) => {
                code = code.max(EXIT_FAILED);
                let _ = writeln!(out, "{name}: invalid");
                for e in &errors {
                    let _ = writeln!(out, "  error: {e}");
                }
                results.push(json!({"file": name.to_string(), "valid": false, "errors": errors}));
            }
            Ok(Ok(policy)) => {
                let _ = writeln!(out, "{name}: valid");
                let mut warnings = Vec::new();
                for w in policy.warnings() {
                    let _ = writeln!(out, "  warning: {w}");
                    warnings.push(
                        json!({"path": w.path, "code": w.code.as_str(), "message": w.message}),
                    );
                }
                results
                    .push(json!({"file": name.to_string(), "valid": true, "warnings": warnings}));
            }
        }
    }
    if format == Format::Json {
        out = json!({ "files": results }).to_string() + "\n";
    }
    Report { code, out }
}

/// One file of test cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

/// One caller and what it must get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    issuer: Option<String>,
    claims: Claims,
    /// The repositories asked for; default: the keys of `expect`.
    #[serde(default)]
    sources: Option<Vec<String>>,
    expect: BTreeMap<String, Expectation>,
}

/// `{permissions: {...}}` (granted with exactly these) or a reason.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expectation {
    Granted(GrantedExpectation),
    Excluded(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantedExpectation {
    permissions: BTreeMap<String, String>,
}

/// What a source is expected to get, or got: granted permissions or an exclusion reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Granted(PermissionSet),
    Excluded(ExclusionReason),
}

impl Verdict {
    fn describe(&self) -> String {
        match self {
            Self::Granted(p) => format!("granted {}", json!(p.to_strings())),
            Self::Excluded(r) => format!("excluded {r}"),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Granted(p) => json!({"permissions": p.to_strings()}),
            Self::Excluded(r) => json!(r.as_str()),
        }
    }
}

/// `metadata: read` is implied by GitHub on every token; an expectation may list it or not.
fn without_implied(mut set: PermissionSet) -> PermissionSet {
    if set.0.get("metadata") == Some(&crate::policy::Level::Read) {
        set.0.remove("metadata");
    }
    set
}

/// Check a cases file's expectations, every problem at once.
fn expectations(case: &Case) -> Result<BTreeMap<String, Verdict>, Vec<String>> {
    let mut errors = Vec::new();
    let mut verdicts = BTreeMap::new();
    for (repo, expected) in &case.expect {
        let path = format!("case {:?}: expect.{repo}", case.name);
        if RepoRef::parse(repo).is_none() {
            errors.push(format!("{path}: not an owner/repo name"));
            continue;
        }
        let verdict = match expected {
            Expectation::Granted(g) => {
                match PermissionSet::from_request("permissions", &g.permissions) {
                    Ok(set) => Verdict::Granted(without_implied(set)),
                    Err(e) => {
                        errors.extend(e.into_iter().map(|e| format!("{path}.{e}")));
                        continue;
                    }
                }
            }
            Expectation::Excluded(reason) => {
                match OFFLINE_REASONS.iter().find(|r| r.as_str() == reason) {
                    Some(r) => Verdict::Excluded(*r),
                    None => {
                        errors.push(format!(
                            "{path}: {reason:?} cannot be expected offline: expect {{permissions: …}}, \
                             no_trust_policy or trust_policy_denied"
                        ));
                        continue;
                    }
                }
            }
        };
        verdicts.insert(repo.to_ascii_lowercase(), verdict);
    }
    if errors.is_empty() {
        Ok(verdicts)
    } else {
        Err(errors)
    }
}

/// The engine's verdict on `repo`, as `/sts` would report it before installations are looked at.
fn verdict(policy: &CompiledPolicy, issuer: &str, claims: &Claims, repo: &RepoRef) -> Verdict {
    match policy.decide(issuer, claims, repo) {
        RepoDecision::Granted { permissions, .. } => Verdict::Granted(without_implied(permissions)),
        RepoDecision::Denied { .. } => Verdict::Excluded(ExclusionReason::TrustPolicyDenied),
        RepoDecision::NotGranted => Verdict::Excluded(ExclusionReason::NoTrustPolicy),
    }
}

/// `policy test POLICY --cases CASES`.
pub fn test(policy_file: &Path, cases_file: &Path, format: Format) -> Report {
    let bad = |message: String| Report {
        code: EXIT_BAD_INPUT,
        out: match format {
            Format::Text => format!("{message}\n"),
            Format::Json => json!({"error": message}).to_string() + "\n",
        },
    };
    let policy = match load_policy(policy_file) {
        Err(e) => return bad(e),
        Ok(Err(errors)) => {
            return bad(format!(
                "{}: invalid policy:\n  {}",
                policy_file.display(),
                errors.join("\n  ")
            ))
        }
        Ok(Ok(p)) => p,
    };
    let cases: CaseFile = match read(cases_file).and_then(|text| {
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", cases_file.display()))
    }) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let mut failed = 0;
    let mut out = String::new();
    let mut results = Vec::new();
    for case in &cases.cases {
        let expected = match expectations(case) {
            Ok(e) => e,
            Err(errors) => return bad(errors.join("\n")),
        };
        let issuer = case.issuer.as_deref().unwrap_or(GITHUB_ACTIONS_ISSUER);
        let sources = case
            .sources
            .clone()
            .unwrap_or_else(|| case.expect.keys().cloned().collect());
        let mut checks = Vec::new();
        let mut text = String::new();
        for raw in &sources {
            let Some(repo) = RepoRef::parse(raw) else {
                return bad(format!(
                    "case {:?}: sources: `{raw}` is not an owner/repo name",
                    case.name
                ));
            };
            let got = verdict(&policy, issuer, &case.claims, &repo);
            let Some(want) = expected.get(&raw.to_ascii_lowercase()) else {
                continue; // asked for, but nothing expected of it
            };
            let ok = *want == got;
            let rules = policy.trace(issuer, &case.claims, &repo);
            if !ok {
                let _ = writeln!(
                    text,
                    "  {raw}: expected {}, got {}",
                    want.describe(),
                    got.describe()
                );
                text.push_str(&render_trace(&rules));
            }
            checks.push(json!({
                "repo": raw, "ok": ok, "expected": want.to_json(), "got": got.to_json(),
                "rules": rules.iter().map(trace_json).collect::<Vec<_>>(),
            }));
        }
        for repo in expected.keys() {
            if !sources.iter().any(|s| s.eq_ignore_ascii_case(repo)) {
                return bad(format!(
                    "case {:?}: expect.{repo}: not among the case's sources",
                    case.name
                ));
            }
        }
        let passed = checks.iter().all(|c| c["ok"] == true);
        if passed {
            let _ = writeln!(out, "PASS {}", case.name);
        } else {
            failed += 1;
            let _ = writeln!(out, "FAIL {}", case.name);
            out.push_str(&text);
        }
        results.push(json!({"name": case.name, "passed": passed, "results": checks}));
    }
    let total = cases.cases.len();
    let _ = writeln!(
        out,
        "{total} cases: {} passed, {failed} failed",
        total - failed
    );
    if format == Format::Json {
        out = json!({"passed": total - failed, "failed": failed, "cases": results}).to_string()
            + "\n";
    }
    Report {
        code: if failed == 0 { EXIT_OK } else { EXIT_FAILED },
        out,
    }
}

/// The rule trace of a failing source, for people.
fn render_trace(rules: &[RuleTrace]) -> String {
    let mut out = String::new();
    for rule in rules {
        let grants = if rule.grants {
            "grants it"
        } else {
            "does not grant it"
        };
        let matched = if rule.matched {
            "matched"
        } else {
            "did not match"
        };
        let _ = writeln!(out, "    rule {}: {grants}, {matched}", rule.name);
        for c in &rule.checks {
            let actual = c
                .actual
                .as_ref()
                .map_or("(absent)".to_owned(), Value::to_string);
            let mark = if c.ok { "ok" } else { "FAIL" };
            let _ = writeln!(
                out,
                "      {mark:4} {}: expected {}, got {actual}",
                c.claim, c.expected
            );
        }
    }
    out
}

fn trace_json(rule: &RuleTrace) -> Value {
    json!({
        "name": rule.name, "grants": rule.grants, "matched": rule.matched,
        "checks": rule.checks.iter().map(|c| json!({
            "claim": c.claim, "expected": c.expected, "actual": c.actual, "ok": c.ok,
        })).collect::<Vec<_>>(),
    })
}
