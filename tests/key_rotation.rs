//! Key rotation without downtime: the token-sealing key is rotated across a restart (sessions
//! and sealed tokens made before still work, and the old key can then go), the GitHub App key is
//! swapped by a restart, the operator token file is replaced under a running broker, and the
//! session signing key is rotated across replicas.

#![expect(
    clippy::unwrap_used,
    reason = "test setup failures should fail the test"
)]

mod support;

use base64::Engine as _;
use std::path::PathBuf;
use sts_broker::app::App;
use sts_broker::config::Config;
use sts_broker::dev::DEV_AUDIENCE;
use sts_broker::server::RunningBroker;
use support::{main_job, reply, spawn_dev_broker, BrokerApi};

/// Start a broker on `config` (the world's database), as a restart would.
async fn restart(config: Config) -> anyhow::Result<RunningBroker> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = App::build(config).await?;
    Ok(sts_broker::server::spawn(app, listener)?)
}

/// A fresh sealing key written to `dir/name`; its absolute path.
fn new_key_file(dir: &std::path::Path, name: &str) -> PathBuf {
    let key: [u8; 32] = rand::random();
    let path = dir.join(name);
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    path
}

/// The secret of the first token of a mint answer.
fn first_token(mint: &support::Reply) -> String {
    assert_eq!(mint.status, 200, "{}", mint.body);
    mint.data()["tokens"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_rotated_sealing_key_keeps_sessions_and_sealed_tokens_working_until_it_is_dropped() {
    let (world, broker) = spawn_dev_broker(|_| {}).await;
    let http = reqwest::Client::new();
    let oidc = || world.issuer.token_for(&main_job(), DEV_AUDIENCE);
    let before = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    let session = before.session(&oidc()).await;
    let old_token = first_token(&before.mint(&session, &["acme/modules"]).await);
    broker.stop().await.unwrap();

    // Rotate: the new key seals, the old one is listed as previous.
    let dir = world.dir.path();
    let old_key = dir.join("token-key");
    let mut rotated = world.config.clone();
    rotated.tokens.encryption_key_file = Some(new_key_file(dir, "token-key-2"));
    rotated.tokens.previous_encryption_key_files = vec![old_key];
    let broker = restart(rotated.clone()).await.unwrap();
    let after = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    // The session made before still verifies, and the token sealed before still opens: it
    // is revoked at GitHub.
    let new_token = first_token(&after.mint(&session, &["acme/modules"]).await);
    assert!(world.github.token_is_live(&old_token));
    let revoked = after
        .revoke(&session, serde_json::json!({ "token": old_token }))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(!world.github.token_is_live(&old_token));
    broker.stop().await.unwrap();

    // The old key dropped: the session signing key was re-sealed at the restart, so sessions
    // and what the new key sealed keep working.
    let mut new_only = rotated.clone();
    new_only.tokens.previous_encryption_key_files.clear();
    let broker = restart(new_only).await.unwrap();
    let last = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    let ended = last.end_session(&session).await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert!(!world.github.token_is_live(&new_token));
    broker.stop().await.unwrap();

    // Material sealed only under a key no longer configured is refused clearly, at start.
    let mut unrelated = world.config.clone();
    unrelated.tokens.encryption_key_file = Some(new_key_file(dir, "token-key-3"));
    let err = restart(unrelated).await.err().unwrap();
    let text = format!("{err:#}");
    assert!(
        text.contains("does not open with any configured key")
            && text.contains("previous_encryption_key_files"),
        "{text}"
    );
}

#[tokio::test]
async fn a_replaced_admin_token_file_works_at_once_and_the_old_token_is_refused() {
    let (world, broker) = spawn_dev_broker(|_| {}).await;
    let http = reqwest::Client::new();
    let list = |token: String| {
        reply(
            http.get(format!("{}/api/v1/admin/workspaces", broker.url))
                .bearer_auth(token),
        )
    };
    assert_eq!(list(world.admin_token.clone()).await.status, 200);

    let new_token = "n".repeat(48);
    std::fs::write(
        world.dir.path().join("admin-token"),
        format!("{new_token}\n"),
    )
    .unwrap();
    assert_eq!(list(new_token).await.status, 200);
    let old = list(world.admin_token.clone()).await;
    assert_eq!(old.status, 401, "{}", old.body);
}

#[tokio::test]
async fn a_swapped_app_key_signs_after_a_restart_and_nothing_stored_is_lost() {
    let (world, broker) = spawn_dev_broker(|_| {}).await;
    let http = reqwest::Client::new();
    let before = BrokerApi {
        http: &http,
        base: &broker.url,
    };
    let session = before
        .session(&world.issuer.token_for(&main_job(), DEV_AUDIENCE))
        .await;
    let old_token = first_token(&before.mint(&session, &["acme/modules"]).await);
    broker.stop().await.unwrap();

    // A new private key replaces the file, and the old one is deleted on GitHub: from now on
    // only an App JWT signed with the new key is accepted.
    let new_key = sts_sim::keys::RsaKeyPair::generate();
    std::fs::write(
        world.dir.path().join("app.pem"),
        secrecy::ExposeSecret::expose_secret(&new_key.private_pkcs1_pem()),
    )
    .unwrap();
    world.github.set_app_keys(&[new_key.public_key()]);
    let broker = restart(world.config.clone()).await.unwrap();
    let after = BrokerApi {
        http: &http,
        base: &broker.url,
    };

    // The session made before the swap mints (so the new key signed the App JWT), and ending
    // it revokes the token minted before the swap as well as the new one.
    let new_token = first_token(&after.mint(&session, &["acme/modules"]).await);
    let ended = after.end_session(&session).await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert!(!world.github.token_is_live(&old_token));
    assert!(!world.github.token_is_live(&new_token));
    // Both mints are in the audit log.
    let audit = reply(
        http.get(format!("{}/api/v1/admin/workspaces/acme/audit", broker.url))
            .bearer_auth(&world.admin_token),
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let mints = audit.body["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "mint" && e["outcome"] == "success")
        .count();
    assert_eq!(mints, 2, "{}", audit.body);
    broker.stop().await.unwrap();
}

/// The `kid` a session token's header names.
fn kid_of(session: &str) -> String {
    jsonwebtoken::decode_header(session).unwrap().kid.unwrap()
}

/// The `kid`s `/.well-known/jwks.json` publishes at `base`.
async fn published_kids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let jwks = reply(http.get(format!("{base}/.well-known/jwks.json"))).await;
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_rotated_session_signing_key_reaches_every_replica_and_is_retired_without_surprises() {
    use std::time::Duration;
    use sts_broker::session::keys::SIGNING_KEY_RETENTION;
    use sts_broker::session_key_cli;

    // Two replicas on one database.
    let (world, a) = spawn_dev_broker(|_| {}).await;
    let b = restart(world.config.clone()).await.unwrap();
    let http = reqwest::Client::new();
    let oidc = || world.issuer.token_for(&main_job(), DEV_AUDIENCE);
    let apis = [&a, &b].map(|broker| BrokerApi {
        http: &http,
        base: &broker.url,
    });
    let [on_a, on_b] = &apis;
    let old_session = on_a.session(&oidc()).await;
    let old_kid = kid_of(&old_session);
    assert_eq!(b.app.sessions.active_kid(), old_kid);

    let rotated = session_key_cli::rotate(&world.config).await.unwrap();
    assert!(
        rotated.contains(&format!("previous key {old_kid}")),
        "{rotated}"
    );
    // Replica A's periodic refresh, made now instead of waited for; B keeps its old ring.
    a.app.sessions.refresh().await.unwrap();
    let new_session = on_a.session(&oidc()).await;
    let new_kid = kid_of(&new_session);
    assert_ne!(new_kid, old_kid);
    assert_eq!(b.app.sessions.active_kid(), old_kid);

    // B has never seen the new kid: it reads the keys once and accepts the session.
    let reloads = b.app.sessions.reloads();
    first_token(&on_b.mint(&new_session, &["acme/modules"]).await);
    assert_eq!(b.app.sessions.reloads(), reloads + 1);
    assert_eq!(b.app.sessions.active_kid(), new_kid);
    // The session made before the rotation still mints on both replicas.
    for api in &apis {
        first_token(&api.mint(&old_session, &["acme/modules"]).await);
        assert_eq!(
            published_kids(&http, api.base).await,
            [old_kid.clone(), new_kid.clone()]
        );
    }
    let listed = session_key_cli::list(&world.config).await.unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with(&old_kid) && lines[0].contains("deactivated"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with(&new_kid) && lines[1].ends_with("active (signs)"),
        "{listed}"
    );

    // Within the retention the old key stays: sessions it signed are still live.
    let kept = session_key_cli::retire(&world.config, SIGNING_KEY_RETENTION)
        .await
        .unwrap();
    assert_eq!(kept, "no signing key to retire\n");
    first_token(&on_b.mint(&old_session, &["acme/modules"]).await);

    // Retired at once (as after a compromise): once the replicas refreshed, the old key's
    // session is refused everywhere and only the new key is published.
    let retired = session_key_cli::retire(&world.config, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(retired, format!("retired signing key {old_kid}\n"));
    for (broker, api) in [&a, &b].into_iter().zip(&apis) {
        broker.app.sessions.refresh().await.unwrap();
        let refused = api.mint(&old_session, &["acme/modules"]).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(refused.tag(), "invalid_session", "{}", refused.body);
        first_token(&api.mint(&new_session, &["acme/modules"]).await);
        assert_eq!(published_kids(&http, api.base).await, [new_kid.as_str()]);
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
