//! `sts-broker demo`: the whole flow once, in-process, against the simulators, told as a story.
//! Every step checks what it saw; the demo fails if any step misbehaves.

use crate::app::App;
use crate::dev::{DevWorld, DEV_AUDIENCE, DEV_WORKSPACE};
use crate::http::types::{Envelope, ExchangeResponse, MintResponse, RevokeResponse};
use anyhow::Context as _;
use serde::de::DeserializeOwned;
use sts_sim::oidc::ActionsJob;

/// The six repositories the demo's job asks for: one of each outcome the story tells.
pub const STORY_SOURCES: [&str; 6] = [
    "acme/modules",
    "acme/terraform-aws-vpc",
    "acme-labs/shared-modules",
    "acme/website",
    "acme/payroll",
    "dormant-co/legacy",
];

struct Story {
    failures: usize,
}

impl Story {
    fn chapter(&self, n: u32, title: &str) {
        println!("\n== {n}. {title}");
    }
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            println!("   [ok]   {what}");
        } else {
            println!("   [FAIL] {what}");
            self.failures += 1;
        }
    }
}

async fn envelope<T: DeserializeOwned>(
    res: reqwest::Response,
) -> anyhow::Result<(u16, Envelope<T>)> {
    let status = res.status().as_u16();
    let body = res.text().await?;
    let env: Envelope<T> =
        serde_json::from_str(&body).with_context(|| format!("not an envelope: {body}"))?;
    Ok((status, env))
}

fn mask(token: &str) -> String {
    format!("{}…(redacted)", token.chars().take(8).collect::<String>())
}

/// The operator asks the broker why acme/payroll was excluded, for the same caller, without
/// minting (`POST .../explain`), and reads the rule trace.
async fn explain_payroll(
    story: &mut Story,
    http: &reqwest::Client,
    base: &str,
    world: &DevWorld,
    job: &ActionsJob,
) -> anyhow::Result<()> {
    println!("   the operator asks why acme/payroll was excluded (POST .../explain):");
    let res = http
        .post(format!(
            "{base}/api/v1/admin/workspaces/{DEV_WORKSPACE}/explain"
        ))
        .bearer_auth(&world.admin_token)
        .json(&serde_json::json!({
            "claims": world.issuer.claims_for(job, DEV_AUDIENCE),
            "issuer": world.issuer.issuer(),
            "sources": ["acme/payroll"],
        }))
        .send()
        .await?;
    let (status, env) = envelope::<serde_json::Value>(res).await?;
    let decision = env.data.unwrap_or_default()["decisions"][0].clone();
    for rule in decision["rules"].as_array().into_iter().flatten() {
        println!(
            "     rule {}: grants acme/payroll: {}, caller matched: {}",
            rule["name"].as_str().unwrap_or_default(),
            rule["grants"],
            rule["matched"]
        );
    }
    let no_rule_grants = decision["rules"]
        .as_array()
        .is_some_and(|rules| rules.iter().all(|r| r["grants"] == false));
    story.check(
        status == 200 && decision["reason"] == "no_trust_policy" && no_rule_grants,
        "explain: acme/payroll is no_trust_policy because no rule's grant covers it",
    );
    Ok(())
}

/// Run the demo; `Ok(true)` when every step behaved.
pub async fn run() -> anyhow::Result<bool> {
    let mut story = Story { failures: 0 };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let world = DevWorld::start(listener.local_addr()?).await?;
    let app = App::build(world.config.clone()).await?;
    let broker = crate::server::spawn(app, listener)?;
    let base = broker.url.clone();
    let github_api = world.config.github.api_url.clone();
    let http = reqwest::Client::new();

    story.chapter(1, "An operator sets up a workspace (admin API)");
    world.seed(&base).await?;
    println!("   workspace `{DEV_WORKSPACE}` created, STS entitled");
    println!("   linked the App's installations on acme, acme-labs and dormant-co (suspended)");
    println!("   policy `default` stored:");
    for line in crate::dev::dev_policy(&world.issuer.issuer()).lines() {
        println!("     | {line}");
    }

    story.chapter(
        2,
        "A CI job on acme/infra@main asks GitHub for an OIDC token",
    );
    let job = ActionsJob {
        workflow_path: ".github/workflows/deploy.yml".into(),
        ..ActionsJob::default()
    };
    let oidc_token = world.issuer.token_for(&job, DEV_AUDIENCE);
    println!("   iss={} aud={DEV_AUDIENCE}", world.issuer.issuer());
    println!(
        "   repository=acme/infra repository_owner_id=1001 ref=refs/heads/main workflow=deploy.yml"
    );

    story.chapter(
        3,
        "It trades the OIDC token for a broker session (POST /api/v1/auth/github-oidc)",
    );
    // Chapter 4 sends this very request again.
    let exchange = || {
        http.post(format!("{base}/api/v1/auth/github-oidc"))
            .json(&serde_json::json!({ "token": oidc_token, "workspaceId": DEV_WORKSPACE }))
            .send()
    };
    let res = exchange().await?;
    let (status, env) = envelope::<ExchangeResponse>(res).await?;
    story.check(
        status == 200 && env.success,
        &format!("session issued (HTTP {status})"),
    );
    let session = env.data.context("no session in the response")?;
    println!("   session expires at {}", session.expires_at);

    story.chapter(4, "Replaying the same OIDC token is refused");
    let res = exchange().await?;
    let (status, env) = envelope::<serde_json::Value>(res).await?;
    story.check(
        status == 401 && env.error_tag.as_deref() == Some("token_replayed"),
        &format!(
            "second exchange: HTTP {status} {}",
            env.error_tag.unwrap_or_default()
        ),
    );

    story.chapter(
        5,
        "The job asks for tokens for six repositories (POST /api/v1/sts)",
    );
    let sources = STORY_SOURCES;
    let res = http
        .post(format!("{base}/api/v1/sts"))
        .bearer_auth(&session.token)
        .json(&serde_json::json!({ "sources": sources, "policyName": "default" }))
        .send()
        .await?;
    let (status, env) = envelope::<MintResponse>(res).await?;
    story.check(
        status == 200 && env.success,
        &format!("mint answered HTTP {status}"),
    );
    let minted = env.data.context("no mint data")?;
    for t in &minted.tokens {
        println!(
            "   token {} for {} -> {:?} {:?} (expires {})",
            mask(&t.token),
            t.owner,
            t.repositories.clone().unwrap_or_default(),
            t.permissions,
            t.expires_at
        );
    }
    for e in &minted.excluded {
        println!("   excluded {} : {}", e.repo, e.reason);
    }
    story.check(
        minted.tokens.len() == 2,
        "two tokens: one per installation (acme, acme-labs)",
    );
    let reason_of = |repo: &str| {
        minted
            .excluded
            .iter()
            .find(|e| e.repo == repo)
            .map(|e| e.reason.as_str())
    };
    story.check(
        reason_of("acme/website") == Some("trust_policy_denied"),
        "acme/website: trust_policy_denied (needs a release tag)",
    );
    story.check(
        reason_of("acme/payroll") == Some("no_trust_policy"),
        "acme/payroll: no_trust_policy (no rule grants it)",
    );
    story.check(
        reason_of("dormant-co/legacy") == Some("installation_suspended"),
        "dormant-co/legacy: installation_suspended",
    );
    explain_payroll(&mut story, &http, &base, &world, &job).await?;

    story.chapter(6, "The token works, and only where it was granted");
    let acme = minted
        .tokens
        .iter()
        .find(|t| t.owner == "acme")
        .context("no acme token")?;
    let get = |path: String| {
        http.get(format!("{github_api}{path}"))
            .bearer_auth(&acme.token)
            .send()
    };
    let ok = get("/repos/acme/modules".into()).await?.status().as_u16();
    story.check(
        ok == 200,
        &format!("GET /repos/acme/modules with the token: HTTP {ok}"),
    );
    let hidden = get("/repos/acme/payroll".into()).await?.status().as_u16();
    story.check(
        hidden == 404,
        &format!("GET /repos/acme/payroll with the token: HTTP {hidden} (out of scope)"),
    );

    let clone_dir = tempfile::tempdir()?;
    if let Some(cloned) = git_clone(&world, &acme.token, clone_dir.path(), "before").await? {
        story.check(
            cloned,
            "git clone https://<github host>/acme/modules with the token as Atmos rewires git: cloned",
        );
    }

    story.chapter(
        7,
        "The job ends and revokes everything (DELETE /api/v1/auth/session)",
    );
    let res = http
        .delete(format!("{base}/api/v1/auth/session"))
        .bearer_auth(&session.token)
        .send()
        .await?;
    let (status, env) = envelope::<RevokeResponse>(res).await?;
    let revoked = env.data.map(|d| d.revoked).unwrap_or_default();
    story.check(
        status == 200 && revoked == 2,
        &format!("revoked {revoked} tokens at GitHub"),
    );

    story.chapter(
        8,
        "The revoked token no longer works, and neither does the session",
    );
    let dead = get("/repos/acme/modules".into()).await?.status().as_u16();
    story.check(
        dead == 401,
        &format!("GET /repos/acme/modules with the revoked token: HTTP {dead}"),
    );
    if let Some(cloned) = git_clone(&world, &acme.token, clone_dir.path(), "after").await? {
        story.check(!cloned, "git clone with the revoked token: refused");
    }
    let res = http
        .post(format!("{base}/api/v1/sts"))
        .bearer_auth(&session.token)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let status = res.status().as_u16();
    story.check(
        status == 401,
        &format!("mint with the ended session: HTTP {status}"),
    );

    story.chapter(
        9,
        "The audit trail (GET /api/v1/admin/workspaces/acme/audit)",
    );
    let res = http
        .get(format!(
            "{base}/api/v1/admin/workspaces/{DEV_WORKSPACE}/audit?limit=50"
        ))
        .bearer_auth(&world.admin_token)
        .send()
        .await?;
    let (_, env) = envelope::<serde_json::Value>(res).await?;
    let events = env
        .data
        .and_then(|d| d.get("events").cloned())
        .unwrap_or_default();
    let events = events.as_array().cloned().unwrap_or_default();
    for e in events.iter().rev() {
        println!(
            "   {} {:<15} {:<8} {}{}",
            e["time"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            e["outcome"].as_str().unwrap_or(""),
            e["reason"]
                .as_str()
                .map(|r| format!("reason={r} "))
                .unwrap_or_default(),
            e["tokens"]
                .as_array()
                .map(|t| format!("tokens={}", t.len()))
                .unwrap_or_default(),
        );
    }
    let has = |action: &str, outcome: &str| {
        events
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    story.check(
        has("exchange", "success")
            && has("exchange", "denied")
            && has("mint", "success")
            && has("session.revoke", "success"),
        "exchange, replay denial, mint and revoke are all audited",
    );
    let body = serde_json::to_string(&events)?;
    story.check(
        !minted.tokens.iter().any(|t| body.contains(&t.token)),
        "no token value appears in the audit log",
    );

    broker.stop().await?;
    println!();
    if story.failures == 0 {
        println!("demo: every step behaved");
    } else {
        println!("demo: {} step(s) misbehaved", story.failures);
    }
    Ok(story.failures == 0)
}

/// Clone `acme/modules` from the world's git server with `token`, through the `insteadOf`
/// rewrite Atmos CLI (and `sts-client`) writes; `None` when the world has no git server.
async fn git_clone(
    world: &crate::dev::DevWorld,
    token: &str,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<Option<bool>> {
    let (Some(host), Some(ca)) = (world.git_host(), world.ca_pem_path()) else {
        return Ok(None);
    };
    let status = tokio::process::Command::new("git")
        .args([
            "clone",
            "--quiet",
            &format!("https://{host}/acme/modules"),
            name,
        ])
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_SSL_CAINFO", ca)
        .env("GIT_CONFIG_COUNT", "1")
        .env(
            "GIT_CONFIG_KEY_0",
            format!("url.https://x-access-token:{token}@{host}/acme/.insteadOf"),
        )
        .env("GIT_CONFIG_VALUE_0", format!("https://{host}/acme/"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .context("running git")?;
    Ok(Some(status.success()))
}
