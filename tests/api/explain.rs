//! Explain (`POST /admin/workspaces/{ws}/explain`) through the real server: it agrees with the
//! real mint on a table of callers and sources, traces every rule, explains drafts, and never
//! mints.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use sts_broker::dev::DEV_WORKSPACE;
use sts_sim::oidc::ActionsJob;

/// Every repository `/sts` or explain decided, as `repo → "granted {permissions}"` or
/// `repo → "excluded reason"`.
type Outcomes = BTreeMap<String, String>;

fn minted_outcomes(r: &Reply) -> Outcomes {
    let mut out = Outcomes::new();
    for mut t in tokens(r) {
        // GitHub adds `metadata: read` to every token; the policy's decision does not name it.
        t["permissions"].as_object_mut().unwrap().remove("metadata");
        let granted = format!("granted {}", t["permissions"]);
        match t["repositories"].as_array() {
            Some(repos) => {
                for repo in repos {
                    out.insert(repo.as_str().unwrap().to_owned(), granted.clone());
                }
            }
            None => {
                out.insert(format!("{}/*", t["owner"].as_str().unwrap()), granted);
            }
        }
    }
    for (repo, reason) in excluded(r) {
        out.insert(repo, format!("excluded {reason}"));
    }
    out
}

fn explained_outcomes(r: &Reply, with_skipped: bool) -> Outcomes {
    r.data()["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| with_skipped || d["outcome"] == "granted")
        .map(|d| {
            let what = match d["outcome"].as_str().unwrap() {
                "granted" => format!("granted {}", d["permissions"]),
                _ => format!("excluded {}", d["reason"].as_str().unwrap()),
            };
            (d["repo"].as_str().unwrap().to_owned(), what)
        })
        .collect()
}

/// `POST .../explain` with `body`, for a caller from the dev world's issuer unless it names one.
async fn explain(app: &TestApp, mut body: Value) -> Reply {
    if body.get("issuer").is_none() {
        body["issuer"] = json!(app.world.issuer.issuer());
    }
    app.admin(
        Method::POST,
        &format!("/workspaces/{DEV_WORKSPACE}/explain"),
        Some(body),
    )
    .await
}

/// The demo's sources (one of each outcome) and two more: a repository the installation cannot
/// reach, and an owner nobody linked.
fn every_kind_of_source() -> Vec<&'static str> {
    let mut sources = sts_broker::demo::STORY_SOURCES.to_vec();
    sources.extend(["acme/terraform-missing", "stranger/repo"]);
    sources
}

fn job_on(git_ref: &str) -> ActionsJob {
    ActionsJob {
        git_ref: git_ref.into(),
        ..main_job()
    }
}

fn stranger() -> ActionsJob {
    ActionsJob {
        owner: "stranger".into(),
        owner_id: "9999".into(),
        repo: "stranger/infra".into(),
        repo_id: "99990".into(),
        ..main_job()
    }
}

/// The reason explain gives the main job for `source`.
async fn explained_reason(app: &TestApp, source: &str) -> Value {
    let r = explain(
        app,
        json!({"claims": app.claims(&main_job()), "sources": [source]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.data()["decisions"][0]["reason"].clone()
}

/// The same caller, sources and policy through explain and through `/sts`: the same outcome and
/// reason per repository.
async fn assert_agree(
    app: &TestApp,
    case: &str,
    job: &ActionsJob,
    sources: Option<&[&str]>,
    policy: &str,
) {
    let mut sts = json!({ "policyName": policy });
    let mut ask = json!({ "policyName": policy, "claims": app.claims(job) });
    if let Some(sources) = sources {
        sts["sources"] = json!(sources);
        ask["sources"] = json!(sources);
    }
    let explained = explain(app, ask).await;
    assert_eq!(explained.status, 200, "{case}: {}", explained.body);
    let session = app.session(job).await;
    let minted = app.post_sts(&session, sts).await;
    assert_eq!(minted.status, 200, "{case}: {}", minted.body);
    assert_eq!(
        explained_outcomes(&explained, sources.is_some()),
        minted_outcomes(&minted),
        "{case}: explain disagrees with the mint\nexplain: {}\nmint: {}",
        explained.body,
        minted.body
    );
}

#[tokio::test]
async fn explain_agrees_with_the_mint_on_every_outcome_and_reason() {
    let app = spawn_app().await;
    let every_kind = every_kind_of_source();
    let every = Some(every_kind.as_slice());
    // (case, caller, sources, policy)
    let cases: [(&str, ActionsJob, Option<&[&str]>, &str); 6] = [
        (
            "main branch, every kind of source",
            main_job(),
            every,
            "default",
        ),
        (
            "another branch is denied",
            job_on("refs/heads/dev"),
            every,
            "default",
        ),
        ("a stranger learns nothing", stranger(), every, "default"),
        ("an absent policy", main_job(), every, "missing"),
        ("without sources", main_job(), None, "default"),
        (
            "without sources, another branch",
            job_on("refs/heads/dev"),
            None,
            "default",
        ),
    ];
    for (case, job, sources, policy) in &cases {
        assert_agree(&app, case, job, *sources, policy).await;
    }
    // An owner whose link is gone, from the store: not_installed_in_workspace on both sides.
    app.operator()
        .expect(
            200,
            Method::DELETE,
            &format!("/workspaces/{DEV_WORKSPACE}/installations/acme-labs"),
            None,
        )
        .await;
    assert_agree(&app, "unlinked owner", &main_job(), every, "default").await;
    assert_eq!(
        explained_reason(&app, "acme-labs/shared-modules").await,
        "not_installed_in_workspace"
    );
}

#[tokio::test]
async fn explain_agrees_with_the_mint_when_the_cached_installation_was_suspended_since() {
    const DORMANT: i64 = 300;
    let app = spawn_app_with(|world| world.github.set_suspended(DORMANT, false)).await;
    app.world.github.set_suspended(DORMANT, true);
    let sources: &[&str] = &["acme/modules", "dormant-co/legacy"];
    assert_agree(
        &app,
        "suspended after caching",
        &main_job(),
        Some(sources),
        "default",
    )
    .await;
    assert_eq!(
        explained_reason(&app, "dormant-co/legacy").await,
        "installation_suspended"
    );
}

#[tokio::test]
async fn why_was_acme_payroll_excluded_is_answered_rule_by_rule() {
    let app = spawn_app().await;
    let r = explain(
        &app,
        json!({"claims": app.claims(&job_on("refs/heads/dev")), "sources": ["acme/payroll", "acme/modules"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.data();
    assert_eq!(data["policy"]["name"], "default");
    assert_eq!(data["policy"]["version"], 1);
    let payroll = &data["decisions"][0];
    assert_eq!(
        (
            payroll["repo"].as_str(),
            payroll["outcome"].as_str(),
            payroll["reason"].as_str()
        ),
        (
            Some("acme/payroll"),
            Some("excluded"),
            Some("no_trust_policy")
        )
    );
    // No rule grants payroll.
    assert!(
        payroll["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["grants"] == false),
        "{}",
        r.body
    );
    let modules = &data["decisions"][1];
    assert_eq!(modules["reason"], "trust_policy_denied", "{}", r.body);
    let rule = modules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["grants"] == true)
        .unwrap();
    assert_eq!(rule["matched"], false);
    let failed: Vec<&Value> = rule["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    let claims: Vec<&Value> = failed.iter().map(|c| &c["claim"]).collect();
    assert_eq!(
        claims,
        [&json!("ref"), &json!("workflow_ref")],
        "{}",
        r.body
    );
    assert_eq!(failed[0]["expected"], "refs/heads/main");
    assert_eq!(failed[0]["actual"], "refs/heads/dev");
    // Granted on main, with the permissions and installation the mint would use.
    let r = explain(
        &app,
        json!({"claims": app.claims(&main_job()), "sources": ["acme/modules"]}),
    )
    .await;
    let d = &r.data()["decisions"][0];
    assert_eq!(
        (d["outcome"].as_str(), d["installationId"].as_i64()),
        (Some("granted"), Some(100)),
        "{}",
        r.body
    );
    assert_eq!(d["permissions"], json!({"contents": "read"}));
}

#[tokio::test]
async fn explain_never_mints_nor_writes_the_audit_log() {
    let app = spawn_app().await;
    let before = app.audit_events().await.len();
    let r = explain(
        &app,
        json!({"claims": app.claims(&main_job()), "sources": ["acme/modules"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.audit_events().await.len(), before);
    let listed = app
        .operator()
        .expect(
            200,
            Method::GET,
            &format!("/workspaces/{DEV_WORKSPACE}/tokens"),
            None,
        )
        .await;
    assert_eq!(listed.data()["tokens"], json!([]), "{}", listed.body);
}

/// A draft names no `issuer`, so its rule admits GitHub Actions' (the default).
const GITHUB_ACTIONS: &str = sts_broker::policy::GITHUB_ACTIONS_ISSUER;

const DRAFT_YAML: &str = "rules:\n  - name: payroll-main\n    match: {repository_owner: acme, ref: refs/heads/main}\n    grant:\n      repositories: [acme/payroll]\n      permissions: {contents: write}\n";

#[tokio::test]
async fn a_draft_is_explained_with_its_warnings_and_not_stored() {
    let app = spawn_app().await;
    let claims = app.claims(&main_job());
    for draft in [json!(DRAFT_YAML), draft_as_json()] {
        let r = explain(
            &app,
            json!({"claims": claims, "issuer": GITHUB_ACTIONS, "sources": ["acme/payroll"], "policy": draft}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.data();
        assert_eq!(data["policy"], json!({"name": "draft", "version": null}));
        assert_eq!(data["decisions"][0]["outcome"], "granted", "{}", r.body);
        assert_eq!(
            data["decisions"][0]["permissions"],
            json!({"contents": "write"})
        );
        let codes = strings(&data["warnings"], "code");
        assert_eq!(codes, ["owner_bound_by_name"], "{}", r.body);
        assert_eq!(data["warnings"][0]["path"], "rules[0].match");
    }
    let listed = app
        .operator()
        .expect(
            200,
            Method::GET,
            &format!("/workspaces/{DEV_WORKSPACE}/policies"),
            None,
        )
        .await;
    let names = strings(&listed.data()["policies"], "name");
    assert_eq!(names, ["default"]);
}

/// [`DRAFT_YAML`] as a JSON object.
fn draft_as_json() -> Value {
    json!({"rules": [{"name": "payroll-main", "match": {"repository_owner": "acme", "ref": "refs/heads/main"},
        "grant": {"repositories": ["acme/payroll"], "permissions": {"contents": "write"}}}]})
}

#[tokio::test]
async fn bad_explain_requests_are_refused_with_every_reason() {
    let app = spawn_app().await;
    let claims = app.claims(&main_job());
    // (body, status, a validation error it must carry)
    let cases = [
        (
            json!({"claims": claims, "policy": "rules: [{name: x}]"}),
            422,
            "rules[0]",
        ),
        (
            json!({"claims": claims, "policy": {"rules": "no"}}),
            422,
            "rules",
        ),
        (json!({"claims": claims, "policy": 3}), 400, "policy:"),
        (
            json!({"claims": claims, "policy": DRAFT_YAML, "policyName": "default"}),
            400,
            "not both",
        ),
        (
            json!({"claims": claims, "sources": ["not a repo"]}),
            400,
            "sources[0]",
        ),
        (json!({"claims": claims, "surprise": 1}), 400, "surprise"),
    ];
    for (body, status, needle) in cases {
        let r = explain(&app, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let errors = r.data()["validationErrors"].to_string();
        assert!(errors.contains(needle), "{body}: {}", r.body);
    }
    let r = app
        .admin(
            Method::POST,
            "/workspaces/nowhere/explain",
            Some(json!({"claims": {}})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
}
