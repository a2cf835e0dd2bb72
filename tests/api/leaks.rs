//! What the tests of callers that give up share: a broker with a chosen request timeout, a policy
//! that mints two tokens (one `contents: write`) per request, warm caches, and the one check that
//! matters afterwards: every token GitHub minted is either held by a client that got it (and
//! audited as handed out), or revoked at GitHub (and audited as such).

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest a test waits for the broker's detached work (revocations, audit writes) to finish.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// A policy granting `acme/modules` read and `acme/website` write to `acme/infra`'s jobs: a mint
/// of both is two tokens, one of which could push.
pub(crate) const DEPLOY_POLICY: &str = r#"rules:
  - name: reads
    issuer: ISSUER
    match: {repository: acme/infra}
    grant: {repositories: ["acme/modules"], permissions: {contents: read}}
  - name: writes
    issuer: ISSUER
    match: {repository: acme/infra}
    grant: {repositories: ["acme/website"], permissions: {contents: write}}
"#;

/// The body of a mint under [`DEPLOY_POLICY`].
pub(crate) fn deploy_mint() -> Value {
    json!({ "sources": ["acme/modules", "acme/website"], "policyName": "deploy" })
}

/// A broker on SQLite with the dev world seeded, its request timeout `request_timeout_seconds`,
/// [`DEPLOY_POLICY`] stored as `deploy`, and GitHub's caches warm (so that later token POSTs are
/// the caller's alone). The warming mint's tokens are revoked by ending its session.
pub(crate) async fn deploy_app(request_timeout_seconds: u64) -> TestApp {
    let app = spawn_app_configured(|config| {
        config.server.request_timeout_seconds = request_timeout_seconds;
    })
    .await;
    let policy = DEPLOY_POLICY.replace("ISSUER", &app.world.issuer.issuer());
    let r = app.put_policy_yaml("acme", "deploy", &policy).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    let warm = app.main_session().await;
    let r = app.post_sts(&warm, deploy_mint()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(tokens(&r).len(), 2, "{}", r.body);
    assert_eq!(app.delete_session(&warm).await.data()["revoked"], 2);
    app
}

/// Every audit event in the database, whatever its workspace (also a deleted one's).
pub(crate) async fn all_events(app: &TestApp) -> Vec<Value> {
    let pool = app.database().await;
    let rows: Vec<(String,)> = sqlx::query_as("select body from audit_events order by seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(body,)| serde_json::from_str(&body).unwrap())
        .collect()
}

/// Mint intents still waiting for their result.
pub(crate) async fn open_intents(app: &TestApp) -> i64 {
    let pool = app.database().await;
    let (open,): (i64,) = sqlx::query_as("select count(*) from mint_intents")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    open
}

/// A token the repository listing mints for itself: metadata read only, revoked at once.
fn is_listing_token(info: &sts_sim::github::SimTokenInfo) -> bool {
    info.permissions.len() == 1
        && info.permissions.get("metadata").map(String::as_str) == Some("read")
}

/// Tokens at GitHub that nobody accounts for: neither revoked nor in `received`.
fn unaccounted(app: &TestApp, received: &BTreeSet<String>) -> Vec<String> {
    app.world
        .github
        .issued_tokens()
        .into_iter()
        .filter(|(token, info)| !info.revoked && !received.contains(token))
        .map(|(token, _)| sts_broker::crypto::fingerprint(&token))
        .collect()
}

/// Wait (at most [`SETTLE_LIMIT`]) until the broker is idle: no open intent, and every token
/// GitHub minted either revoked or in `received`. Answers what is still unaccounted for.
pub(crate) async fn settle(app: &TestApp, received: &BTreeSet<String>) -> Vec<String> {
    let started = Instant::now();
    loop {
        let left = unaccounted(app, received);
        if (left.is_empty() && open_intents(app).await == 0) || started.elapsed() > SETTLE_LIMIT {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How the audit log accounts for one token, by fingerprint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accounted {
    /// In the success event of a mint (recorded as handed out).
    pub(crate) handed_out: bool,
    /// Named as revoked: in a failed mint's event with `revoked: true`, or in a revocation.
    pub(crate) revoked: bool,
}

/// What the audit log says about each fingerprint.
pub(crate) fn accounts(events: &[Value]) -> std::collections::BTreeMap<String, Accounted> {
    let mut accounts = std::collections::BTreeMap::<String, Accounted>::new();
    for event in events {
        for token in event["tokens"].as_array().into_iter().flatten() {
            let Some(fingerprint) = token["fingerprint"].as_str() else {
                continue;
            };
            let entry = accounts.entry(fingerprint.to_owned()).or_default();
            match event["kind"].as_str() {
                Some("mint") if event["outcome"] == "success" => entry.handed_out = true,
                Some("mint") => entry.revoked |= token["revoked"] == true,
                // A revocation (also a workspace deletion's) names the tokens GitHub revoked, or
                // flags the ones it did not.
                Some("revoke" | "session_revoke" | "admin") => {
                    entry.revoked |= token["revoked"] != false;
                }
                _ => {}
            }
        }
    }
    accounts
}

/// The promise, checked once the broker is idle: every token GitHub minted for a caller is
/// either in `received` (a client got it), live and audited as handed out, or revoked at GitHub
/// and audited as revoked. Listing tokens (metadata only, the broker's own) must be revoked.
pub(crate) async fn assert_no_token_unaccounted(app: &TestApp, received: &BTreeSet<String>) {
    let left = settle(app, received).await;
    assert!(
        left.is_empty(),
        "live tokens that no client holds: {left:?}"
    );
    let accounts = accounts(&all_events(app).await);
    for (token, info) in app.world.github.issued_tokens() {
        let fingerprint = sts_broker::crypto::fingerprint(&token);
        if is_listing_token(&info) {
            assert!(info.revoked, "a listing token is live: {fingerprint}");
            continue;
        }
        let account = accounts.get(&fingerprint).copied().unwrap_or_default();
        if received.contains(&token) {
            assert!(
                !info.revoked,
                "a token a client got was revoked: {fingerprint}"
            );
            assert!(account.handed_out, "handed out, not audited: {fingerprint}");
        } else {
            assert!(info.revoked, "live and held by nobody: {fingerprint}");
            assert!(
                account.revoked,
                "revoked, not audited as revoked: {fingerprint} {info:?}"
            );
        }
    }
}

/// The token values of a mint's answer.
pub(crate) fn token_values(r: &Reply) -> Vec<String> {
    tokens(r)
        .iter()
        .filter_map(|t| t["token"].as_str().map(str::to_owned))
        .collect()
}
