//! Lint codes, traces and downscoping.

use super::*;
use serde_json::json;

fn compile(yaml: &str) -> CompiledPolicy {
    CompiledPolicy::from_source(yaml, PolicyFormat::Yaml).unwrap()
}

fn codes(yaml: &str) -> Vec<&'static str> {
    compile(yaml)
        .warnings()
        .iter()
        .map(|w| w.code.as_str())
        .collect()
}

fn rule(matches: &str, repos: &str, permissions: &str) -> String {
    format!(
        "rules:\n  - name: r\n    match: {matches}\n    grant:\n      repositories: {repos}\n      permissions: {permissions}\n"
    )
}

#[test]
fn write_grants_warn_unless_ref_environment_or_workflow_is_constrained() {
    // (match, repositories, permissions, expected codes)
    let cases = [
        ("{repository_owner_id: '1'}", "[acme/a]", "{contents: read}", vec![]),
        ("{repository_owner_id: '1'}", "[acme/a]", "{contents: write}", vec!["write_without_ref"]),
        ("{repository_owner_id: '1'}", "[acme/a]", "{issues: write, contents: read}", vec!["write_without_ref"]),
        ("{repository_owner_id: '1', ref: refs/heads/main}", "[acme/a]", "{contents: write}", vec![]),
        ("{repository_owner_id: '1', environment: prod}", "[acme/a]", "{contents: write}", vec![]),
        ("{repository_owner_id: '1', job_workflow_ref: 'acme/x/.github/workflows/a.yml@refs/heads/main'}", "[acme/a]", "{contents: write}", vec![]),
        ("{repository_owner_id: '1', ref: refs/heads/main}", "[acme/*]", "{contents: read}", vec!["whole_installation"]),
        ("{repository_owner_id: '1', ref: refs/heads/main}", "[acme/*]", "{contents: write}", vec!["whole_installation_write"]),
        ("{repository_owner_id: '1'}", "[acme/*]", "{contents: write}", vec!["write_without_ref", "whole_installation_write"]),
        ("{repository_owner: acme}", "[acme/a]", "{contents: read}", vec!["owner_bound_by_name"]),
    ];
    for (m, repos, permissions, want) in cases {
        assert_eq!(
            codes(&rule(m, repos, permissions)),
            want,
            "{m} {repos} {permissions}"
        );
    }
}

#[test]
fn warnings_carry_the_path_of_the_rule_they_concern() {
    let policy = compile(
        "rules:\n  - name: ok\n    match: {repository_owner_id: '1'}\n    grant: {repositories: [acme/a]}\n  - name: risky\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/a]}\n",
    );
    let w = &policy.warnings()[0];
    assert_eq!(
        (w.path.as_str(), w.code),
        ("rules[1].match", WarningCode::OwnerBoundByName)
    );
    assert!(
        w.to_string()
            .starts_with("rules[1].match: rule risky binds"),
        "{w}"
    );
}

#[test]
fn a_trace_shows_every_check_of_every_rule_with_expected_and_actual_values() {
    let policy = compile(
        "rules:\n  - name: main\n    match: {repository_owner_id: '1', ref: [refs/heads/main, refs/heads/release]}\n    match_patterns: {workflow: 'deploy.*'}\n    grant: {repositories: [acme/app]}\n  - name: other\n    match: {repository_owner_id: '1'}\n    grant: {repositories: [acme/docs]}\n",
    );
    let claims = json!({"repository_owner_id": "1", "ref": "refs/heads/dev"});
    let claims = claims.as_object().unwrap();
    let trace = policy.trace(
        GITHUB_ACTIONS_ISSUER,
        claims,
        &RepoRef::parse("acme/app").unwrap(),
    );
    assert_eq!(trace.len(), 2);
    let main = &trace[0];
    assert_eq!(
        (main.name.as_str(), main.grants, main.matched),
        ("main", true, false)
    );
    let checks: Vec<(&str, Value, Option<Value>, bool)> = main
        .checks
        .iter()
        .map(|c| (c.claim.as_str(), c.expected.clone(), c.actual.clone(), c.ok))
        .collect();
    assert_eq!(
        checks,
        [
            (
                "iss",
                json!(GITHUB_ACTIONS_ISSUER),
                Some(json!(GITHUB_ACTIONS_ISSUER)),
                true
            ),
            (
                "ref",
                json!(["refs/heads/main", "refs/heads/release"]),
                Some(json!("refs/heads/dev")),
                false
            ),
            ("repository_owner_id", json!("1"), Some(json!("1")), true),
            ("workflow", json!("deploy.*"), None, false),
        ]
    );
    let other = &trace[1];
    assert_eq!((other.grants, other.matched), (false, true));
    // A whole-installation target: only `owner/*` grants cover it.
    let whole = RepoRef {
        owner: "acme".to_owned(),
        name: WHOLE_INSTALLATION.to_owned(),
    };
    assert!(policy
        .trace(GITHUB_ACTIONS_ISSUER, claims, &whole)
        .iter()
        .all(|r| !r.grants));
}

#[test]
fn downscoping_keeps_what_both_sets_hold_at_the_lower_level() {
    let set = |pairs: &[(&str, Level)]| {
        PermissionSet(pairs.iter().map(|(k, l)| ((*k).to_owned(), *l)).collect())
    };
    let granted = set(&[("contents", Level::Write), ("issues", Level::Read)]);
    let asked = set(&[
        ("contents", Level::Read),
        ("issues", Level::Write),
        ("actions", Level::Read),
    ]);
    assert_eq!(
        granted.intersect(&asked),
        set(&[("contents", Level::Read), ("issues", Level::Read)])
    );
    assert!(granted
        .intersect(&set(&[("actions", Level::Read)]))
        .0
        .is_empty());
}

#[test]
fn asked_permissions_are_checked_against_githubs_list() {
    let asked = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert!(PermissionSet::from_request("permissions", &asked(&[("contents", "read")])).is_ok());
    let errors = PermissionSet::from_request(
        "permissions",
        &asked(&[("nope", "read"), ("contents", "own")]),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].starts_with("permissions.contents: level"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("permissions.nope: unknown permission"),
        "{errors:?}"
    );
}
