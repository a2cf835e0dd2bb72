//! `sts-broker policy check` and `policy test` as real processes (they work in the product build:
//! no simulators, no GitHub, no database), and the examples of `docs/policies.md`, run exactly as
//! written so that the documentation cannot drift from the engine.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const DOCS: &str = include_str!("../docs/policies.md");

/// Run `sts-broker ARGS…`: exit code and stdout.
fn run(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sts-broker"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// The fenced blocks of the docs whose info string is `yaml KIND:NAME`, as (name, text).
fn doc_blocks(kind: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = DOCS.lines();
    let marker = format!("```yaml {kind}:");
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix(&marker) {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((name.to_owned(), body.join("\n") + "\n"));
        }
    }
    blocks
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_documented_policies_are_valid_and_their_documented_cases_pass() {
    let dir = tempfile::tempdir().unwrap();
    let policies = doc_blocks("policy");
    let cases = doc_blocks("cases");
    assert!(
        !policies.is_empty() && !cases.is_empty(),
        "no examples found in docs/policies.md"
    );
    for (name, text) in &policies {
        write(dir.path(), name, text);
        let (code, out) = run(&["policy", "check", name], dir.path());
        assert_eq!(code, 0, "{name}: {out}");
        assert!(out.starts_with(&format!("{name}: valid")), "{out}");
    }
    for (name, text) in &cases {
        let cases_file = format!("{name}.cases");
        write(dir.path(), &cases_file, text);
        let (code, out) = run(
            &["policy", "test", name, "--cases", &cases_file],
            dir.path(),
        );
        assert_eq!(code, 0, "{name}: {out}");
        // The documented console output is what the command prints.
        let summary = out.lines().last().unwrap();
        assert!(
            DOCS.contains(summary),
            "docs/policies.md does not show `{summary}`"
        );
        for line in out.lines() {
            assert!(
                DOCS.contains(line),
                "docs/policies.md does not show `{line}`"
            );
        }
    }
}

#[test]
fn the_documented_ci_workflow_runs_both_commands_on_pull_requests_touching_policies() {
    let workflows = doc_blocks("workflow");
    assert_eq!(workflows.len(), 1);
    let workflow: Value = serde_norway::from_str(&workflows[0].1).unwrap();
    let paths = &workflow["on"]["pull_request"]["paths"];
    assert!(
        paths.as_array().unwrap().iter().any(|p| p == "policies/**"),
        "{workflow}"
    );
    let steps = workflow["jobs"]["check"]["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    // Each step's words, all in one `run`.
    let required: [&[&str]; 3] = [
        &["--no-default-features"],
        &["sts-broker policy check"],
        &["sts-broker policy test", "--cases"],
    ];
    for words in required {
        assert!(
            runs.iter().any(|r| words.iter().all(|w| r.contains(w))),
            "{words:?} in {runs:?}"
        );
    }
}

const POLICY: &str = "rules:\n  - name: infra-main\n    match: {repository_owner_id: '1001', ref: refs/heads/main}\n    grant: {repositories: [acme/modules]}\n";

#[test]
fn a_failing_case_prints_expected_and_got_with_the_rule_trace_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", POLICY);
    write(
        dir.path(),
        "c.yaml",
        "cases:\n  - name: dev branch\n    claims: {repository_owner_id: '1001', ref: refs/heads/dev}\n    expect:\n      acme/modules: {permissions: {contents: read}}\n  - name: main\n    claims: {repository_owner_id: '1001', ref: refs/heads/main}\n    expect:\n      acme/modules: {permissions: {contents: read}}\n",
    );
    let (code, out) = run(
        &["policy", "test", "p.yaml", "--cases", "c.yaml"],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    let want = [
        "FAIL dev branch",
        "  acme/modules: expected granted {\"contents\":\"read\"}, got excluded trust_policy_denied",
        "    rule infra-main: grants it, did not match",
        "      FAIL ref: expected \"refs/heads/main\", got \"refs/heads/dev\"",
        "PASS main",
        "2 cases: 1 passed, 1 failed",
    ];
    for line in want {
        assert!(
            out.lines().any(|l| l == line),
            "missing `{line}` in:\n{out}"
        );
    }
    let (code, out) = run(
        &[
            "policy", "test", "p.yaml", "--cases", "c.yaml", "--format", "json",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["passed"].as_i64(), report["failed"].as_i64()),
        (Some(1), Some(1))
    );
    let result = &report["cases"][0]["results"][0];
    assert_eq!(result["got"], "trust_policy_denied");
    assert_eq!(result["expected"]["permissions"]["contents"], "read");
    assert_eq!(result["rules"][0]["checks"][1]["claim"], "ref");
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", POLICY);
    write(dir.path(), "bad.yaml", "rules: [{name: x}]\n");
    // (cases file, a word the message must carry)
    let cases = [
        ("cases:\n  - name: x\n    claims: {}\n    expect: {acme/modules: installation_suspended}\n", "cannot be expected offline"),
        ("cases:\n  - name: x\n    claims: {}\n    expect: {acme/modules: {permissions: {nope: read}}}\n", "unknown permission"),
        ("cases: 3\n", "cases"),
        ("cases:\n  - name: x\n    claims: {}\n    surprise: 1\n    expect: {}\n", "surprise"),
    ];
    for (text, needle) in cases {
        write(dir.path(), "c.yaml", text);
        let (code, out) = run(
            &["policy", "test", "p.yaml", "--cases", "c.yaml"],
            dir.path(),
        );
        assert_eq!(code, 2, "{text}: {out}");
        assert!(out.contains(needle), "{text}: {out}");
    }
    let (code, out) = run(
        &["policy", "test", "bad.yaml", "--cases", "c.yaml"],
        dir.path(),
    );
    assert_eq!(code, 2, "{out}");
    let (code, _) = run(
        &["policy", "test", "p.yaml", "--cases", "absent.yaml"],
        dir.path(),
    );
    assert_eq!(code, 2);
}

#[test]
fn check_prints_every_error_with_its_path_and_warnings_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok.yaml", POLICY);
    write(
        dir.path(),
        "risky.json",
        r#"{"rules": [{"name": "w", "match": {"repository_owner": "acme"}, "grant": {"repositories": ["acme/*"], "permissions": {"contents": "write"}}}]}"#,
    );
    write(
        dir.path(),
        "bad.yaml",
        "rules:\n  - name: x\n    match: {ref: refs/heads/main}\n    grant: {repositories: [acme/a], permissions: {contents: own}}\n",
    );
    let (code, out) = run(&["policy", "check", "ok.yaml", "risky.json"], dir.path());
    assert_eq!(code, 0, "{out}");
    for code in [
        "owner_bound_by_name",
        "write_without_ref",
        "whole_installation_write",
    ] {
        assert!(out.contains(&format!("[{code}]")), "{code}: {out}");
    }
    assert!(
        out.contains("warning: rules[0].grant.permissions:"),
        "{out}"
    );
    let (code, out) = run(&["policy", "check", "ok.yaml", "bad.yaml"], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml: invalid"), "{out}");
    assert!(
        out.contains("error: rules[0].grant.permissions.contents:"),
        "{out}"
    );
    assert!(out.contains("error: rules[0].match:"), "{out}");
    let (code, out) = run(
        &["policy", "check", "--format", "json", "risky.json"],
        dir.path(),
    );
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["files"][0]["valid"], true);
    assert_eq!(
        report["files"][0]["warnings"][0]["code"],
        "owner_bound_by_name"
    );
}
