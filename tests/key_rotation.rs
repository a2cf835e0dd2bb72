//! Key rotation without downtime: the token-sealing key is rotated across a restart (sessions
//! and sealed tokens made before still work, and the old key can then go), and the operator
//! token file is replaced under a running broker.

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
