//! GitHub Enterprise Server (and ghe.com) end to end: the broker configured with
//! `api_url = ".../api/v3"` and `host = "HOST"` exchanges and mints tokens that name `HOST`, the
//! tokens work against `https://HOST/api/v3`, the client points git at `HOST`, and the revoke
//! reaches that API.

use crate::git::{empty_global_config, isolate_git, readme, repo_url};
use crate::helpers::{output, World};
use sts_broker::dev::DevGitHub;
use sts_sim::git::readme_for;

/// `GET https://HOST/api/v3/installation/repositories` with `token`, trusting the world's CA.
async fn list_repositories(w: &World, host: &str, token: &str) -> reqwest::Response {
    let ca = std::fs::read(w.world.ca_pem_path().unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
        .get(format!("https://{host}/api/v3/installation/repositories"))
        .bearer_auth(token)
        .header("user-agent", "sts-client-tests")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_ghes_tokens_name_its_host_work_there_drive_git_and_are_revoked_there() {
    let w = World::start_as(DevGitHub::Enterprise).await;
    let host = w.world.git_host().unwrap().to_owned();
    assert!(host.starts_with("localhost:"), "{host}");
    let api_url = &w.world.config.github.api_url;
    assert!(api_url.ends_with("/api/v3"), "{api_url}");

    // Exchange and mint through the client: the token names the enterprise host.
    let token = w.login().await;
    assert_eq!(w.cached_host(), host);

    // The token works against that host's API.
    let res = list_repositories(&w, &host, &token).await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["total_count"], 1, "{body}");
    assert_eq!(body["repositories"][0]["full_name"], "acme/modules");

    // The client rewrites git for that host: a private clone works under `exec`, which then
    // revokes through the broker, which revokes at the enterprise API.
    let config = empty_global_config(&w);
    let url = repo_url(&w, "acme/modules");
    assert!(url.starts_with(&format!("https://{host}/")), "{url}");
    let script = format!("git clone {url} cloned");
    let mut command = w.command(&["exec", "--repo", "acme/modules", "--", "sh", "-c", &script]);
    command.env("STS_OIDC_TOKEN", w.oidc());
    isolate_git(&w, &mut command, &config);
    output(command).await.ok();
    assert_eq!(
        readme(&w.home.path().join("cloned")),
        readme_for("acme", "modules")
    );
    assert!(!w.world.github.token_is_live(&token));
    assert!(w
        .world
        .github
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path == "/api/v3/installation/token"));
    let res = list_repositories(&w, &host, &token).await;
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
}
