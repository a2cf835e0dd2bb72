//! Tests of compiling and evaluating whole policies.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// Short for the issuer most cases use.
const GH: &str = GITHUB_ACTIONS_ISSUER;

/// Claims of a GitHub Actions job in `acme/infra` on `main`, all strings as GitHub sends them.
fn base_claims() -> Claims {
    let v = json!({
        "iss": GH,
        "sub": "repo:acme/infra:ref:refs/heads/main",
        "repository": "acme/infra",
        "repository_id": "2002",
        "repository_owner": "acme",
        "repository_owner_id": "1001",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "ref_protected": "true",
        "actor": "octocat",
        "event_name": "push",
        "job_workflow_ref": "acme/infra/.github/workflows/plan.yml@refs/heads/main",
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Marks a claim to remove in [`claims_with`].
const ABSENT: &str = "<absent>";

fn claims_with(overrides: Value) -> Claims {
    let mut c = base_claims();
    if let Value::Object(o) = overrides {
        for (k, v) in o {
            if v == json!(ABSENT) {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    c
}

fn compile(yaml: &str) -> CompiledPolicy {
    match CompiledPolicy::from_source(yaml, PolicyFormat::Yaml) {
        Ok(p) => p,
        Err(e) => panic!("policy should compile, got {e:#?}\n{yaml}"),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    match CompiledPolicy::from_source(yaml, PolicyFormat::Yaml) {
        Ok(_) => panic!("policy should not compile:\n{yaml}"),
        Err(e) => e,
    }
}

fn repo(s: &str) -> RepoRef {
    RepoRef::parse(s).unwrap()
}

fn perms(pairs: &[(&str, Level)]) -> PermissionSet {
    PermissionSet(pairs.iter().map(|(k, l)| ((*k).to_owned(), *l)).collect())
}

/// A one-rule policy granting `acme/modules`, with `body` as the rest of the rule (indented
/// four spaces).
fn one_rule(body: &str) -> String {
    format!("rules:\n  - name: r\n{body}\n    grant:\n      repositories: [acme/modules]\n")
}

/// The policy of contract §4, comments and all.
const CONTRACT_EXAMPLE: &str = r#"
description: read-only shared modules for infra deploys from main
rules:
  - name: infra-main
    issuer: https://token.actions.githubusercontent.com   # optional, this is the default
    match:                        # every key must match the caller's OIDC claims
      repository_owner_id: "1001" # string = exact; glob if it holds * or ?; a list = any of
      repository: acme/infra
      ref: refs/heads/main
    match_patterns:               # optional regexes, always anchored as ^(?:...)$
      job_workflow_ref: 'acme/infra/\.github/workflows/(plan|apply)\.yml@refs/heads/main'
    grant:
      repositories: ["acme/terraform-*", "acme/modules"]  # owner/name; owner literal, name may glob
      permissions: {contents: read}                        # default {contents: read}
"#;

#[test]
fn the_contract_example_grants_its_repositories_to_a_matching_caller() {
    let policy = compile(CONTRACT_EXAMPLE);
    assert_eq!(
        policy.description(),
        Some("read-only shared modules for infra deploys from main")
    );
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    let granted = RepoDecision::Granted {
        permissions: perms(&[("contents", Level::Read)]),
        rules: vec!["infra-main".to_owned()],
    };
    let claims = base_claims();
    let cases = [
        ("acme/terraform-aws", granted.clone()),
        ("acme/modules", granted.clone()),
        ("ACME/Modules", granted),
        ("acme/terraform", RepoDecision::NotGranted),
        ("acme/modules2", RepoDecision::NotGranted),
        ("other/modules", RepoDecision::NotGranted),
    ];
    for (r, want) in cases {
        assert_eq!(policy.decide(GH, &claims, &repo(r)), want, "{r}");
    }
}

#[test]
fn the_contract_example_denies_a_caller_from_a_workflow_it_does_not_list() {
    let policy = compile(CONTRACT_EXAMPLE);
    let claims = claims_with(json!({
        "job_workflow_ref": "acme/infra/.github/workflows/destroy.yml@refs/heads/main"
    }));
    assert_eq!(
        policy.decide(GH, &claims, &repo("acme/modules")),
        RepoDecision::Denied {
            reasons: vec!["rule infra-main: claim job_workflow_ref does not match".to_owned()]
        }
    );
}

/// One case of the matching table: a rule body, claim overrides and the expected outcome
/// (`Ok` = granted, `Err(reason)` = denied with that reason).
struct MatchCase {
    name: &'static str,
    rule: &'static str,
    claims: Value,
    issuer: &'static str,
    want: Result<(), &'static str>,
}

fn case(
    name: &'static str,
    rule: &'static str,
    claims: Value,
    want: Result<(), &'static str>,
) -> MatchCase {
    MatchCase {
        name,
        rule,
        claims,
        issuer: GH,
        want,
    }
}

#[test]
fn matching_follows_the_documented_semantics() {
    let cases = vec![
        case(
            "an exact repository matches",
            "    match: {repository: acme/infra}",
            json!({}),
            Ok(()),
        ),
        case(
            "an exact repository is not a prefix match",
            "    match: {repository: acme/infra}",
            json!({"repository": "acme/infra-evil"}),
            Err("claim repository does not match"),
        ),
        case(
            "an exact ref is not a prefix match",
            "    match: {repository_owner: acme, ref: refs/heads/main}",
            json!({"ref": "refs/heads/main2"}),
            Err("claim ref does not match"),
        ),
        case(
            "repository compares case-insensitively",
            "    match: {repository: ACME/Infra}",
            json!({}),
            Ok(()),
        ),
        case(
            "repository_owner compares case-insensitively",
            "    match: {repository_owner: Acme}",
            json!({}),
            Ok(()),
        ),
        case(
            "actor compares case-insensitively",
            "    match: {repository_owner: acme, actor: OctoCat}",
            json!({}),
            Ok(()),
        ),
        case(
            "ref compares case-sensitively",
            "    match: {repository_owner: acme, ref: refs/heads/Main}",
            json!({}),
            Err("claim ref does not match"),
        ),
        case(
            "a repository glob is case-insensitive",
            "    match: {repository: 'ACME/inf*'}",
            json!({}),
            Ok(()),
        ),
        case(
            "a ref glob is case-sensitive",
            "    match: {repository_owner: acme, ref: 'refs/heads/Ma*'}",
            json!({}),
            Err("claim ref does not match"),
        ),
        case(
            "a single star does not cross a slash",
            "    match: {repository_owner: acme, ref: 'refs/heads/*'}",
            json!({"ref": "refs/heads/feature/x"}),
            Err("claim ref does not match"),
        ),
        case(
            "a double star crosses slashes",
            "    match: {repository_owner: acme, ref: 'refs/heads/**'}",
            json!({"ref": "refs/heads/feature/x"}),
            Ok(()),
        ),
        case(
            "a question mark is one character",
            "    match: {repository_owner: acme, ref: 'refs/tags/v?'}",
            json!({"ref": "refs/tags/v10"}),
            Err("claim ref does not match"),
        ),
        case(
            "a missing claim never matches",
            "    match: {repository_owner: acme, environment: prod}",
            json!({}),
            Err("claim environment is missing"),
        ),
        case(
            "a null claim never matches",
            "    match: {repository_owner: acme, environment: prod}",
            json!({"environment": null}),
            Err("claim environment is not a string or bool"),
        ),
        case(
            "a list claim never matches",
            "    match: {repository_owner: acme, ref: refs/heads/main}",
            json!({"ref": ["refs/heads/main"]}),
            Err("claim ref is not a string or bool"),
        ),
        case(
            "an object claim never matches",
            "    match: {repository_owner: acme, ref: refs/heads/main}",
            json!({"ref": {"name": "refs/heads/main"}}),
            Err("claim ref is not a string or bool"),
        ),
        case(
            "a policy bool matches the claim string GitHub sends",
            "    match: {repository_owner: acme, ref_protected: true}",
            json!({}),
            Ok(()),
        ),
        case(
            "a policy bool matches a claim bool",
            "    match: {repository_owner: acme, ref_protected: true}",
            json!({"ref_protected": true}),
            Ok(()),
        ),
        case(
            "a policy bool does not match the other value",
            "    match: {repository_owner: acme, ref_protected: true}",
            json!({"ref_protected": "false"}),
            Err("claim ref_protected does not match"),
        ),
        case(
            "a policy bool does not match another spelling",
            "    match: {repository_owner: acme, ref_protected: true}",
            json!({"ref_protected": "True"}),
            Err("claim ref_protected does not match"),
        ),
        case(
            "a policy string matches a claim bool by its text",
            "    match: {repository_owner: acme, ref_protected: 'false'}",
            json!({"ref_protected": false}),
            Ok(()),
        ),
        case(
            "a list matches any of its values",
            "    match: {repository_owner: acme, ref: [refs/heads/main, refs/heads/release]}",
            json!({"ref": "refs/heads/release"}),
            Ok(()),
        ),
        case(
            "a list matches none of the others",
            "    match: {repository_owner: acme, ref: [refs/heads/main, refs/heads/release]}",
            json!({"ref": "refs/heads/dev"}),
            Err("claim ref does not match"),
        ),
        case(
            "a list of owners binds when every owner is literal",
            "    match: {repository_owner: [acme, acme-labs]}",
            json!({"repository_owner": "acme-labs"}),
            Ok(()),
        ),
        case(
            "a regex alternation is anchored as a whole",
            "    match: {repository_owner: acme}\n    match_patterns: {ref: 'refs/heads/main|refs/heads/dev'}",
            json!({"ref": "refs/heads/main-evil"}),
            Err("claim ref does not match"),
        ),
        case(
            "a regex alternation matches each alternative exactly",
            "    match: {repository_owner: acme}\n    match_patterns: {ref: 'refs/heads/main|refs/heads/dev'}",
            json!({"ref": "refs/heads/dev"}),
            Ok(()),
        ),
        case(
            "a regex is anchored at the start",
            "    match: {repository_owner: acme}\n    match_patterns: {ref: 'main'}",
            json!({}),
            Err("claim ref does not match"),
        ),
        case(
            "a regex on a login claim is case-insensitive",
            "    match: {repository_owner: acme}\n    match_patterns: {repository: 'acme/(infra|ops)'}",
            json!({"repository": "ACME/Infra"}),
            Ok(()),
        ),
        case(
            "a regex on ref is case-sensitive",
            "    match: {repository_owner: acme}\n    match_patterns: {ref: 'refs/heads/(main|dev)'}",
            json!({"ref": "refs/heads/MAIN"}),
            Err("claim ref does not match"),
        ),
        case(
            "a regex never matches a number claim",
            "    match: {repository_owner: acme}\n    match_patterns: {run_attempt: '[0-9]+'}",
            json!({"run_attempt": 1}),
            Err("claim run_attempt is not a string or bool"),
        ),
        case(
            "match is checked before match_patterns",
            "    match: {repository_owner: acme, ref: refs/heads/dev}\n    match_patterns: {actor: 'nobody'}",
            json!({}),
            Err("claim ref does not match"),
        ),
        MatchCase {
            name: "a caller from another issuer is denied",
            rule: "    match: {repository_owner: acme}",
            claims: json!({}),
            issuer: "https://token.actions.githubusercontent.com/acme-enterprise",
            want: Err("issuer does not match"),
        },
        MatchCase {
            name: "a rule's issuer is compared exactly",
            rule: "    issuer: http://127.0.0.1:8123\n    match: {repository_owner: acme}",
            claims: json!({}),
            issuer: "http://127.0.0.1:8123",
            want: Ok(()),
        },
        MatchCase {
            name: "a rule with a custom issuer denies GitHub's",
            rule: "    issuer: http://127.0.0.1:8123\n    match: {repository_owner: acme}",
            claims: json!({}),
            issuer: GH,
            want: Err("issuer does not match"),
        },
    ];
    for c in cases {
        let policy = compile(&one_rule(c.rule));
        let got = policy.decide(c.issuer, &claims_with(c.claims), &repo("acme/modules"));
        let want = match c.want {
            Ok(()) => RepoDecision::Granted {
                permissions: perms(&[("contents", Level::Read)]),
                rules: vec!["r".to_owned()],
            },
            Err(reason) => RepoDecision::Denied {
                reasons: vec![format!("rule r: {reason}")],
            },
        };
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn denial_reasons_never_carry_claim_values() {
    let policy = compile(&one_rule(
        "    match: {repository_owner: acme, ref: refs/heads/main}",
    ));
    let claims = claims_with(json!({"ref": "refs/heads/SECRET-VALUE\nforged log line"}));
    let RepoDecision::Denied { reasons } = policy.decide(GH, &claims, &repo("acme/modules")) else {
        panic!("expected a denial");
    };
    assert_eq!(reasons, ["rule r: claim ref does not match"]);
    assert!(reasons
        .iter()
        .all(|r| !r.contains("SECRET") && !r.contains('\n')));
}

/// Two rules granting `acme/modules` at different levels, and one for another owner.
const TWO_RULES: &str = r#"
rules:
  - name: readers
    match: {repository_owner: acme}
    grant:
      repositories: [acme/modules, acme/docs]
      permissions: {contents: read, issues: write}
  - name: main-writers
    match: {repository: acme/infra, ref: refs/heads/main}
    grant:
      repositories: [acme/modules]
      permissions: {contents: write, pull_requests: read}
  - name: other-org
    match: {repository_owner_id: "1001"}
    grant:
      repositories: [globex/shared]
"#;

#[test]
fn every_matching_rule_merges_its_permissions_at_the_highest_level() {
    let policy = compile(TWO_RULES);
    assert_eq!(
        policy.decide(GH, &base_claims(), &repo("acme/modules")),
        RepoDecision::Granted {
            permissions: perms(&[
                ("contents", Level::Write),
                ("issues", Level::Write),
                ("pull_requests", Level::Read),
            ]),
            rules: vec!["readers".to_owned(), "main-writers".to_owned()],
        }
    );
}

#[test]
fn a_failing_rule_does_not_take_away_what_another_rule_grants() {
    let policy = compile(TWO_RULES);
    let claims = claims_with(json!({"ref": "refs/heads/dev"}));
    assert_eq!(
        policy.decide(GH, &claims, &repo("acme/modules")),
        RepoDecision::Granted {
            permissions: perms(&[("contents", Level::Read), ("issues", Level::Write)]),
            rules: vec!["readers".to_owned()],
        }
    );
}

#[test]
fn a_caller_of_an_owner_no_rule_binds_cannot_tell_a_granted_repo_from_an_unnamed_one() {
    let policy = compile(TWO_RULES);
    let claims = claims_with(json!({
        "repository_owner": "globex",
        "repository": "globex/infra",
        "repository_owner_id": "3003",
    }));
    // Two rules grant acme/modules, but neither binds globex: to this caller the repository is
    // as ungranted as one no rule names.
    assert_eq!(
        policy.decide(GH, &claims, &repo("acme/modules")),
        RepoDecision::NotGranted
    );
    assert_eq!(
        policy.decide(GH, &claims, &repo("acme/secrets")),
        RepoDecision::NotGranted
    );
}

/// What a case of [`owner_binding_decides_who_may_learn_why_a_rule_refused`] expects.
#[derive(Debug)]
enum Told {
    /// Granted by the rules named.
    Granted(&'static [&'static str]),
    /// Denied with these reasons.
    Denied(&'static [&'static str]),
    /// Told nothing: `no_trust_policy`.
    Nothing,
}

#[test]
fn owner_binding_decides_who_may_learn_why_a_rule_refused() {
    // (case, policy, claim overrides of the acme/infra caller, repository asked for, expected)
    let dev = json!({"ref": "refs/heads/dev"});
    let cases: Vec<(&str, String, Value, &str, Told)> = vec![
        (
            "bound by id: another account with the same login is told nothing",
            one_rule("    match: {repository_owner_id: \"1001\", ref: refs/heads/main}"),
            json!({"repository_owner_id": "3001"}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "bound by id: the account itself learns which check failed",
            one_rule("    match: {repository_owner_id: \"1001\", ref: refs/heads/main}"),
            dev.clone(),
            "acme/modules",
            Told::Denied(&["rule r: claim ref does not match"]),
        ),
        (
            "bound by id: an id sent as a number admits nobody",
            one_rule("    match: {repository_owner_id: \"1001\", ref: refs/heads/main}"),
            json!({"repository_owner_id": 1001}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "bound by id: a token without the id claim is told nothing",
            one_rule("    match: {repository_owner_id: \"1001\"}"),
            json!({"repository_owner_id": ABSENT}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "bound by login: another login is told nothing",
            one_rule("    match: {repository_owner: acme, ref: refs/heads/main}"),
            json!({"repository_owner": "acme-evil", "repository": "acme-evil/infra"}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "bound by login: the login in another case is the same account",
            one_rule("    match: {repository_owner: ACME, ref: refs/heads/main}"),
            json!({"repository_owner": "Acme", "ref": "refs/heads/dev"}),
            "acme/modules",
            Told::Denied(&["rule r: claim ref does not match"]),
        ),
        (
            "bound by id and login: a re-registered login without the id is told nothing",
            one_rule("    match: {repository_owner_id: \"1001\", repository_owner: acme, ref: refs/heads/main}"),
            json!({"repository_owner_id": "9999"}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "bound by a list of logins: each listed owner is admitted",
            one_rule("    match: {repository_owner: [acme, acme-labs], ref: refs/heads/main}"),
            json!({"repository_owner": "acme-labs", "ref": "refs/heads/dev"}),
            "acme/modules",
            Told::Denied(&["rule r: claim ref does not match"]),
        ),
        (
            "bound by repository only: another repository of the owner learns why",
            one_rule("    match: {repository: acme/infra}"),
            json!({"repository": "acme/web"}),
            "acme/modules",
            Told::Denied(&["rule r: claim repository does not match"]),
        ),
        (
            "bound by repository only: the owner part compares case-insensitively",
            one_rule("    match: {repository: acme/infra}"),
            json!({"repository": "ACME/web"}),
            "acme/modules",
            Told::Denied(&["rule r: claim repository does not match"]),
        ),
        (
            "bound by repository only: the same name under another owner is told nothing",
            one_rule("    match: {repository: acme/infra}"),
            json!({"repository": "globex/infra", "repository_owner": "globex"}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "bound by a repository glob with a literal owner: the owner is admitted",
            one_rule("    match: {repository: 'acme/infra-*'}"),
            json!({"repository": "acme/web"}),
            "acme/modules",
            Told::Denied(&["rule r: claim repository does not match"]),
        ),
        (
            "bound by repository: a claim without an owner part admits nobody",
            one_rule("    match: {repository: acme/infra}"),
            json!({"repository": "acme"}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "the issuer is not part of the owner binding: the owner learns the issuer failed",
            one_rule("    issuer: http://127.0.0.1:8123\n    match: {repository_owner: acme}"),
            json!({}),
            "acme/modules",
            Told::Denied(&["rule r: issuer does not match"]),
        ),
        (
            "a rule for another owner explains nothing, even to a caller another rule admits",
            OTHER_OWNERS_RULES.to_owned(),
            json!({}),
            "globex/shared",
            Told::Nothing,
        ),
        (
            "only the rules that admit the caller give reasons",
            OTHER_OWNERS_RULES.to_owned(),
            dev,
            "acme/modules",
            Told::Denied(&[
                "rule acme-main: claim ref does not match",
                "rule acme-release: claim ref does not match",
            ]),
        ),
        (
            "a caller no rule admits is told nothing about any of them",
            OTHER_OWNERS_RULES.to_owned(),
            json!({"repository_owner": "initech", "repository": "initech/x", "repository_owner_id": "7"}),
            "acme/modules",
            Told::Nothing,
        ),
        (
            "an admitted caller that passes is granted as before",
            OTHER_OWNERS_RULES.to_owned(),
            json!({}),
            "acme/modules",
            Told::Granted(&["acme-main"]),
        ),
    ];
    for (name, policy, overrides, asked, want) in cases {
        let policy = compile(&policy);
        let got = policy.decide(GH, &claims_with(overrides), &repo(asked));
        let ok = match (&got, &want) {
            (RepoDecision::NotGranted, Told::Nothing) => true,
            (RepoDecision::Denied { reasons }, Told::Denied(want)) => reasons == want,
            (RepoDecision::Granted { rules, .. }, Told::Granted(want)) => rules == want,
            _ => false,
        };
        assert!(ok, "{name}: got {got:?}, want {want:?}");
    }
}

/// Rules for three owners, two of them granting `acme/modules` to acme.
const OTHER_OWNERS_RULES: &str = r#"
rules:
  - name: acme-main
    match: {repository_owner_id: "1001", ref: refs/heads/main}
    grant:
      repositories: [acme/modules]
  - name: acme-release
    match: {repository: acme/infra, ref: 'refs/tags/v*'}
    grant:
      repositories: [acme/modules]
  - name: globex-only
    match: {repository_owner_id: "3003", repository_owner: globex}
    grant:
      repositories: [globex/shared, acme/modules]
"#;

#[test]
fn grants_lists_one_grant_per_matching_rule_and_owner() {
    let policy = compile(
        r#"
rules:
  - name: wide
    match: {repository_owner: acme}
    grant:
      repositories: [acme/modules, Globex/shared, acme/terraform-*, globex/docs]
      permissions: {contents: read}
  - name: all-of-acme
    match: {repository_owner: acme, ref: refs/heads/main}
    grant:
      repositories: [acme/modules, acme/*]
      permissions: {contents: write}
  - name: never
    match: {repository_owner: acme, environment: prod}
    grant:
      repositories: [acme/prod]
"#,
    );
    let read = perms(&[("contents", Level::Read)]);
    let write = perms(&[("contents", Level::Write)]);
    let want = vec![
        Grant {
            rule: "wide".to_owned(),
            owner: "acme".to_owned(),
            repositories: RepoSelector::Patterns(vec![
                "modules".to_owned(),
                "terraform-*".to_owned(),
            ]),
            permissions: read.clone(),
        },
        Grant {
            rule: "wide".to_owned(),
            owner: "Globex".to_owned(),
            repositories: RepoSelector::Patterns(vec!["shared".to_owned(), "docs".to_owned()]),
            permissions: read,
        },
        Grant {
            rule: "all-of-acme".to_owned(),
            owner: "acme".to_owned(),
            repositories: RepoSelector::All,
            permissions: write,
        },
    ];
    assert_eq!(policy.grants(GH, &base_claims()), want);
    assert!(policy
        .grants("https://elsewhere.example", &base_claims())
        .is_empty());
    assert!(messages(&policy).contains(
        &"rule all-of-acme grants acme/* with write access: the whole installation, including repositories created later"
            .to_owned()
    ));
}

#[test]
fn a_grant_without_permissions_gets_contents_read_and_the_default_issuer() {
    let policy = compile(&one_rule("    match: {repository_owner: acme}"));
    let rule = &policy.document().rules[0];
    assert_eq!(rule.issuer, GITHUB_ACTIONS_ISSUER);
    assert_eq!(rule.permissions, perms(&[("contents", Level::Read)]));
}

#[test]
fn invalid_policies_are_rejected_with_a_path_and_a_reason() {
    // (case, policy, an error it must contain)
    let bind = "does not bind the caller's owner";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a misspelt level",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {contents: writ}\n".into(),
            r#"rules[0].grant.permissions.contents: level "writ" is not one of read, write"#,
        ),
        (
            "a capitalised level",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {contents: Read}\n".into(),
            r#"rules[0].grant.permissions.contents: level "Read" is not one of read, write"#,
        ),
        (
            "the level all",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {contents: all}\n".into(),
            r#"rules[0].grant.permissions.contents: level "all" is not one of read, write"#,
        ),
        (
            "a level the key does not have",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {workflows: read}\n".into(),
            r#"rules[0].grant.permissions.workflows: level "read" is not one of write"#,
        ),
        (
            "an unknown permission",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {everything: write}\n".into(),
            r#"rules[0].grant.permissions.everything: unknown permission "everything""#,
        ),
        (
            "a level that is not a string",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {contents: true}\n".into(),
            "rules[0].grant.permissions.contents: must be a level string",
        ),
        (
            "empty permissions",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      permissions: {}\n".into(),
            "rules[0].grant.permissions: must not be empty: GitHub reads an empty permission set as every permission",
        ),
        ("a rule that binds no owner", one_rule("    match: {ref: refs/heads/main}"), bind),
        ("a rule granting to everyone", one_rule("    match: {event_name: push}"), bind),
        ("a glob owner", one_rule("    match: {repository_owner: 'acm*'}"), bind),
        ("a glob owner id", one_rule("    match: {repository_owner_id: '10*'}"), bind),
        ("a repository with a glob owner", one_rule("    match: {repository: '*/infra'}"), bind),
        ("a repository with a ? owner", one_rule("    match: {repository: 'acm?/x'}"), bind),
        ("a repository with a ** owner", one_rule("    match: {repository: '**/infra'}"), bind),
        (
            "a list with one unbound owner",
            one_rule("    match: {repository_owner: [acme, '*']}"),
            bind,
        ),
        ("a bool owner", one_rule("    match: {repository_owner: true}"), bind),
        (
            "an owner bound only by a regex",
            one_rule("    match: {ref: refs/heads/main}\n    match_patterns: {repository_owner: acme}"),
            "rules[0].match: does not bind the caller's owner",
        ),
        ("an empty match", one_rule("    match: {}"), "rules[0].match: must not be empty"),
        ("a missing match", one_rule("    issuer: https://token.actions.githubusercontent.com"), "rules[0].match: required"),
        (
            "an unquoted number",
            one_rule("    match: {repository_owner_id: 1001}"),
            r#"rules[0].match.repository_owner_id: must be a string, a bool or a list of them, not a number (quote numbers"#,
        ),
        (
            "an empty match string",
            one_rule("    match: {repository_owner: acme, ref: ''}"),
            "rules[0].match.ref: must not be an empty string",
        ),
        (
            "an empty match list",
            one_rule("    match: {repository_owner: acme, ref: []}"),
            "rules[0].match.ref: must not be an empty list",
        ),
        (
            "a null in a match list",
            one_rule("    match: {repository_owner: acme, ref: [refs/heads/main, null]}"),
            "rules[0].match.ref[1]: must be a string, a bool or a list of them, not null",
        ),
        (
            "a repository claim without a slash",
            one_rule("    match: {repository: acme}"),
            r#"rules[0].match.repository: "acme" is not owner/name"#,
        ),
        (
            "an invalid regex",
            one_rule("    match: {repository_owner: acme}\n    match_patterns: {ref: 'refs/(heads'}"),
            "rules[0].match_patterns.ref: regex does not compile",
        ),
        (
            "a regex escaping its anchors",
            one_rule("    match: {repository_owner: acme}\n    match_patterns: {ref: 'a)|(b'}"),
            "rules[0].match_patterns.ref: regex does not compile",
        ),
        (
            "an empty regex",
            one_rule("    match: {repository_owner: acme}\n    match_patterns: {ref: ''}"),
            "rules[0].match_patterns.ref: must not be an empty regex",
        ),
        (
            "an unknown top-level key",
            "rule:\n  - name: r\n".into(),
            "rule: unknown key (expected one of description, rules)",
        ),
        (
            "an unknown rule key",
            one_rule("    match: {repository_owner: acme}\n    mach: {ref: x}"),
            "rules[0].mach: unknown key (expected one of name, issuer, match, match_patterns, grant)",
        ),
        (
            "an unknown grant key",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant:\n      repositories: [acme/x]\n      repos: [acme/y]\n".into(),
            "rules[0].grant.repos: unknown key (expected one of repositories, permissions)",
        ),
        ("no rules", "description: nothing\n".into(), "rules: required"),
        ("empty rules", "rules: []\n".into(), "rules: must not be empty"),
        ("rules as a map", "rules: {a: b}\n".into(), "rules: must be a list of rules, not a map"),
        ("a rule as a string", "rules: [x]\n".into(), "rules[0]: must be a map"),
        ("a policy that is a list", "- a\n- b\n".into(), "policy: must be a map"),
        (
            "a description that is not a string",
            format!("description: [a]\n{}", one_rule("    match: {repository_owner: acme}")),
            "description: must be a string, not a list",
        ),
        (
            "a missing name",
            "rules:\n  - match: {repository_owner: acme}\n    grant: {repositories: [acme/x]}\n".into(),
            "rules[0].name: required",
        ),
        (
            "an empty name",
            "rules:\n  - name: ''\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/x]}\n".into(),
            "rules[0].name: must not be empty",
        ),
        (
            "a name with a line break",
            "rules:\n  - name: \"a\\nb\"\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/x]}\n".into(),
            "rules[0].name: must not contain control characters",
        ),
        (
            "a duplicate name",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/x]}\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/y]}\n".into(),
            r#"rules[1].name: "r" is already the name of rules[0]"#,
        ),
        (
            "a plain-http issuer",
            one_rule("    issuer: http://issuer.example\n    match: {repository_owner: acme}"),
            "rules[0].issuer: must be an https URL",
        ),
        (
            "an issuer that is not a URL",
            one_rule("    issuer: token.actions.githubusercontent.com\n    match: {repository_owner: acme}"),
            "rules[0].issuer: not a URL",
        ),
        (
            "a missing grant",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n".into(),
            "rules[0].grant: required",
        ),
        (
            "a grant with a glob owner",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: ['acm*/x']}\n".into(),
            r#"rules[0].grant.repositories[0]: owner "acm*" must be literal"#,
        ),
        (
            "a grant to every owner",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: ['*/*']}\n".into(),
            r#"rules[0].grant.repositories[0]: owner "*" must be literal"#,
        ),
        (
            "a grant without a slash",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: [acme]}\n".into(),
            r#"rules[0].grant.repositories[0]: "acme" is not owner/name"#,
        ),
        (
            "a grant with two slashes",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/a/b]}\n".into(),
            "rules[0].grant.repositories[0]: \"acme/a/b\" is not owner/name: more than one /",
        ),
        (
            "a grant of ..",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: [acme/..]}\n".into(),
            r#"rules[0].grant.repositories[0]: name ".." is not a GitHub repository name"#,
        ),
        (
            "an empty grant list",
            "rules:\n  - name: r\n    match: {repository_owner: acme}\n    grant: {repositories: []}\n".into(),
            "rules[0].grant.repositories: must not be empty",
        ),
        (
            "a duplicate key",
            "rules:\n  - name: r\n    match:\n      repository_owner: acme\n      ref: refs/heads/main\n      ref: refs/heads/dev\n    grant: {repositories: [acme/x]}\n".into(),
            "duplicate",
        ),
        ("not YAML at all", "rules: [\n".into(), "policy: not valid YAML"),
    ];
    for (name, policy, want) in cases {
        let errs = errors(&policy);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{name}: expected an error containing {want:?}, got {errs:#?}"
        );
    }
}

#[test]
fn every_validation_error_is_reported_at_once() {
    let errs = errors(
        r#"
rules:
  - name: first
    match: {ref: refs/heads/main}
    grant:
      repositories: [acme/x]
      permissions: {contents: writ}
  - name: second
    match: {repository_owner: acme}
    grant:
      repositories: ['acm*/y']
      permissions: {}
    extra: 1
"#,
    );
    let want = [
        "rules[0].match: does not bind",
        "rules[0].grant.permissions.contents: level \"writ\"",
        "rules[1].grant.repositories[0]: owner \"acm*\" must be literal",
        "rules[1].grant.permissions: must not be empty",
        "rules[1].extra: unknown key",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn size_caps_are_validation_errors() {
    let huge = format!(
        "description: '{}'\n{}",
        "x".repeat(MAX_POLICY_BYTES),
        one_rule("    match: {repository_owner: acme}")
    );
    assert!(errors(&huge)[0].contains("exceeds the limit of 65536 bytes"));

    let mut many = String::from("rules:\n");
    for i in 0..=MAX_RULES {
        many.push_str(&format!(
            "  - name: r{i}\n    match: {{repository_owner: acme}}\n    grant: {{repositories: [acme/x]}}\n"
        ));
    }
    assert_eq!(errors(&many), ["rules: 101 rules exceed the limit of 100"]);

    let long_regex = one_rule(&format!(
        "    match: {{repository_owner: acme}}\n    match_patterns: {{ref: '{}'}}",
        "a".repeat(MAX_REGEX_LEN + 1)
    ));
    assert!(errors(&long_regex)[0].contains("longer than the limit of 1024"));

    let blowup = one_rule(
        "    match: {repository_owner: acme}\n    match_patterns: {ref: '(\\w{100}){100}'}",
    );
    assert!(errors(&blowup)[0].starts_with("rules[0].match_patterns.ref: regex does not compile"));

    let globs: Vec<String> = (0..=MAX_COMPILED_MATCHERS)
        .map(|i| format!("'r{i}*'"))
        .collect();
    let many_globs = one_rule(&format!(
        "    match: {{repository_owner: acme, ref: [{}]}}",
        globs.join(", ")
    ));
    assert_eq!(
        errors(&many_globs),
        ["policy: 501 globs and regexes exceed the limit of 500"]
    );
}

#[test]
fn broad_or_organization_wide_grants_produce_warnings() {
    let policy = compile(
        r#"
rules:
  - name: x
    match: {repository_owner: acme, refs: refs/heads/main}
    grant:
      repositories: [acme/*]
      permissions: {contents: read, members: read, profile: write}
"#,
    );
    let got: Vec<(&str, &str, &str)> = policy
        .warnings()
        .iter()
        .map(|w| (w.path.as_str(), w.code.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("rules[0].match.refs", "unknown_claim", "rule x matches claim refs, which GitHub Actions tokens do not carry: the rule never matches a caller without it"),
            ("rules[0].match", "owner_bound_by_name", "rule x binds the owner by login only: if the account is renamed or deleted, whoever registers the login gets this rule; add repository_owner_id to bind the immutable id"),
            ("rules[0].grant.permissions", "write_without_ref", "rule x grants write access (profile) without constraining ref, environment or job_workflow_ref: any workflow on any branch of the caller's repository gets it"),
            ("rules[0].grant.repositories", "whole_installation_write", "rule x grants acme/* with write access: the whole installation, including repositories created later"),
            ("rules[0].grant.permissions.members", "organization_permission", "rule x grants organization permission members: reaches the whole organization, not only the granted repositories"),
            ("rules[0].grant.permissions.profile", "user_permission", "rule x grants user permission profile: acts on the account of the user who owns the installation"),
        ]
    );
}

fn messages(policy: &CompiledPolicy) -> Vec<String> {
    policy
        .warnings()
        .iter()
        .map(|w| w.message.clone())
        .collect()
}

#[test]
fn rules_bound_only_by_login_warn_and_rules_bound_by_id_do_not() {
    let login_warning = "rule r binds the owner by login only";
    // (match, expect the warning)
    let cases = [
        ("{repository_owner: acme}", true),
        ("{repository: acme/infra}", true),
        ("{repository_owner: acme, repository_id: '10*'}", true),
        ("{repository_owner_id: '1001'}", false),
        ("{repository: acme/infra, repository_id: '2002'}", false),
        ("{repository_owner_id: ['1001', '1002']}", false),
    ];
    for (m, want) in cases {
        let policy = compile(&one_rule(&format!("    match: {m}")));
        let got = messages(&policy)
            .iter()
            .any(|w| w.starts_with(login_warning));
        assert_eq!(got, want, "{m}: {:?}", policy.warnings());
    }
}

#[test]
fn custom_property_claims_do_not_warn() {
    let policy = compile(&one_rule(
        "    match: {repository_owner_id: '1001', repo_property_team: platform}",
    ));
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
}

#[test]
fn json_policies_compile_like_yaml_ones() {
    let json_src = r#"{
        "rules": [{
            "name": "r",
            "match": {"repository_owner_id": "1001", "ref": ["refs/heads/main"]},
            "grant": {"repositories": ["acme/modules"], "permissions": {"contents": "write"}}
        }]
    }"#;
    let policy = CompiledPolicy::from_source(json_src, PolicyFormat::Json).unwrap();
    assert_eq!(
        policy.decide(GH, &base_claims(), &repo("acme/modules")),
        RepoDecision::Granted {
            permissions: perms(&[("contents", Level::Write)]),
            rules: vec!["r".to_owned()],
        }
    );
    let dup = r#"{"rules": [], "rules": []}"#;
    let errs = CompiledPolicy::from_source(dup, PolicyFormat::Json).unwrap_err();
    assert!(errs[0].contains("duplicate key \"rules\""), "{errs:?}");
    let errs = CompiledPolicy::from_source("{", PolicyFormat::Json).unwrap_err();
    assert!(errs[0].starts_with("policy: not valid JSON"), "{errs:?}");
}

#[test]
fn repo_refs_parse_only_valid_github_names() {
    let cases = [
        ("acme/infra", Some(("acme", "infra"))),
        ("Acme-Corp/my.repo_1-x", Some(("Acme-Corp", "my.repo_1-x"))),
        ("acme/.github", Some(("acme", ".github"))),
        ("acme/...", Some(("acme", "..."))),
        ("acme", None),
        ("acme/", None),
        ("/infra", None),
        ("acme/infra/x", None),
        ("acme/.", None),
        ("acme/..", None),
        ("ac_me/infra", None),
        ("acme/in fra", None),
        ("acme/*", None),
        ("acme/infr?", None),
        (&*format!("{}/x", "a".repeat(40)), None),
        (
            &*format!("{}/x", "a".repeat(39)),
            Some((&*"a".repeat(39), "x")),
        ),
        (&*format!("a/{}", "x".repeat(101)), None),
        ("acmé/infra", None),
    ];
    for (input, want) in cases {
        let got = RepoRef::parse(input);
        let want = want.map(|(o, n)| RepoRef {
            owner: o.to_owned(),
            name: n.to_owned(),
        });
        assert_eq!(got, want, "{input}");
    }
    assert_eq!(repo("acme/infra").to_string(), "acme/infra");
}

#[test]
fn repo_selectors_match_names_case_insensitively() {
    let sel = RepoSelector::Patterns(vec!["terraform-*".to_owned(), "modules".to_owned()]);
    let cases = [
        (&sel, "terraform-aws", true),
        (&sel, "Terraform-AWS", true),
        (&sel, "MODULES", true),
        (&sel, "modules-evil", false),
        (&sel, "terraform", false),
        (&RepoSelector::All, "anything", true),
        (&RepoSelector::All, "", false),
    ];
    for (sel, name, want) in cases {
        assert_eq!(sel.matches(name), want, "{sel:?} vs {name}");
    }
}

#[test]
fn policy_formats_come_from_content_types_and_stored_names() {
    let cases = [
        ("application/json", Some(PolicyFormat::Json)),
        ("application/json; charset=utf-8", Some(PolicyFormat::Json)),
        // The contract lists the accepted types; any other is a 415, even if it smells of JSON.
        ("application/merge-patch+json", None),
        ("application/yaml", Some(PolicyFormat::Yaml)),
        ("Application/X-YAML", Some(PolicyFormat::Yaml)),
        ("text/yaml", Some(PolicyFormat::Yaml)),
        ("text/plain", None),
    ];
    for (ct, want) in cases {
        assert_eq!(PolicyFormat::from_content_type(ct), want, "{ct}");
    }
    for f in [PolicyFormat::Json, PolicyFormat::Yaml] {
        assert_eq!(PolicyFormat::from_stored(f.as_str()), Some(f));
    }
    assert_eq!(PolicyFormat::from_stored("toml"), None);
}

#[test]
fn fixture_policies_compile_or_fail_as_their_names_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies");
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => PolicyFormat::Yaml,
            Some("json") => PolicyFormat::Json,
            _ => continue,
        };
        let source = std::fs::read_to_string(&path).unwrap();
        let result = CompiledPolicy::from_source(&source, format);
        if file.starts_with("valid-") {
            assert!(result.is_ok(), "{file}: {:#?}", result.err());
        } else if file.starts_with("invalid-") {
            // The first line names the error the fixture exists for: `# error: <text>`.
            let want = source
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# error: "))
                .unwrap_or_else(|| panic!("{file}: first line must be `# error: <expected>`"));
            let Err(errs) = result else {
                panic!("{file} should not compile");
            };
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{file}: expected {want:?}, got {errs:#?}"
            );
        } else {
            panic!("{file}: fixture names start with valid- or invalid-");
        }
        seen.insert(file, ());
    }
    assert!(
        seen.keys().any(|f| f.starts_with("valid-")),
        "no valid fixtures in {dir:?}"
    );
    assert!(
        seen.keys().any(|f| f.starts_with("invalid-")),
        "no invalid fixtures in {dir:?}"
    );
}

#[test]
fn the_release_tag_example_of_the_docs_behaves_as_documented() {
    let policy = compile(
        r#"
rules:
  - name: release-tap
    match:
      repository_owner_id: "1001"
      repository: acme/app
      ref_protected: true
    match_patterns:
      ref: 'refs/tags/v[0-9]+\.[0-9]+\.[0-9]+'
    grant:
      repositories: [acme/homebrew-tap]
      permissions: {contents: write, pull_requests: write}
"#,
    );
    let tap = repo("acme/homebrew-tap");
    let app = |r: &str| claims_with(json!({"repository": "acme/app", "ref": r}));
    assert_eq!(
        policy.decide(GH, &app("refs/tags/v1.2.3"), &tap),
        RepoDecision::Granted {
            permissions: perms(&[("contents", Level::Write), ("pull_requests", Level::Write)]),
            rules: vec!["release-tap".to_owned()],
        }
    );
    let deny = |reason: &str| RepoDecision::Denied {
        reasons: vec![format!("rule release-tap: {reason}")],
    };
    assert_eq!(
        policy.decide(GH, &app("refs/tags/v1.2.3-rc1"), &tap),
        deny("claim ref does not match")
    );
    assert_eq!(
        policy.decide(GH, &base_claims(), &tap),
        deny("claim repository does not match")
    );

    let errs = errors(
        r#"
rules:
  - name: release-tap
    match:
      ref_protected: true
    match_patterns:
      repository: 'acme/app'
    grant:
      repositories: [acme/homebrew-tap]
      permissions: {contents: writ}
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("rules[0].match: does not bind the caller's owner"));
    assert_eq!(
        errs[1],
        r#"rules[0].grant.permissions.contents: level "writ" is not one of read, write"#
    );
}
