use super::response::{retry_after, ApiResponse};
use super::*;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::Mutex;
use sts_sim::github::{GitHubSimulator, RunningSimulator, SimInstallation};
use sts_sim::keys::RsaKeyPair;
use sts_sim::testing::{acme_installation, shared_app_key};
use time::OffsetDateTime;

const APP_ID: &str = "4242";

type Calls = Arc<Mutex<Vec<(&'static str, u16)>>>;

struct Fixture {
    sim: GitHubSimulator,
    running: RunningSimulator,
    client: GitHubClient,
    calls: Calls,
}

fn client_for(url: &str, pem: SecretString, calls: &Calls) -> GitHubClient {
    let calls = Arc::clone(calls);
    GitHubClient::new(GitHubClientConfig {
        api_url: Url::parse(url).unwrap(),
        app_id: APP_ID.into(),
        private_key_pem: pem,
        observer: Some(Arc::new(move |operation, status, _, _| {
            calls.lock().unwrap().push((operation, status));
        })),
    })
    .unwrap()
}

async fn fixture() -> Fixture {
    let sim = GitHubSimulator::new(APP_ID, shared_app_key().public_key());
    sim.add_installation(acme_installation());
    let running = sim.start().await.unwrap();
    let calls = Calls::default();
    let client = client_for(&running.url, shared_app_key().private_pkcs1_pem(), &calls);
    Fixture {
        sim,
        running,
        client,
        calls,
    }
}

/// [`fixture`] plus installation 5, which is suspended: GitHub refuses every mint from it.
async fn fixture_with_suspended_installation() -> Fixture {
    let f = fixture().await;
    f.sim.add_installation(
        SimInstallation::organization(5, "Frozen", 1005).with_repo(1, "x", false),
    );
    f.sim.set_suspended(5, true);
    f
}

fn request(repositories: Option<&[&str]>, permissions: &[(&str, &str)]) -> TokenRequest {
    TokenRequest {
        repositories: repositories
            .map(|names| names.iter().map(|name| (*name).to_owned()).collect()),
        permissions: permissions
            .iter()
            .map(|(key, level)| ((*key).to_owned(), (*level).to_owned()))
            .collect(),
    }
}

fn contents_read() -> TokenRequest {
    request(Some(&["infra"]), &[("contents", "read")])
}

/// The mint most tests make: [`contents_read`] from installation 1.
async fn mint_contents_read(client: &GitHubClient) -> Result<InstallationToken, GitHubError> {
    client.create_installation_token(1, &contents_read()).await
}

#[tokio::test]
async fn mints_a_token_that_reaches_exactly_the_requested_repositories() {
    let f = fixture().await;
    let token = f
        .client
        .create_installation_token(
            1,
            &request(Some(&["infra", "modules"]), &[("contents", "read")]),
        )
        .await
        .unwrap();
    assert_eq!(
        token.repositories.as_deref(),
        Some(&["Acme/infra".to_owned(), "Acme/modules".to_owned()][..])
    );
    assert_eq!(token.repository_selection, "selected");
    assert_eq!(token.permissions["contents"], "read");
    assert_eq!(token.permissions["metadata"], "read");
    assert!(token.expires_at > OffsetDateTime::now_utc() + time::Duration::minutes(50));

    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/installation/repositories", f.running.url))
        .bearer_auth(token.token.expose_secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<&str> = listed["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|repo| repo["full_name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Acme/infra", "Acme/modules"]);
    assert_eq!(f.calls.lock().unwrap().as_slice(), [("create_token", 201)]);
}

#[tokio::test]
async fn maps_refused_mints_to_domain_errors() {
    let f = fixture_with_suspended_installation().await;
    let cases: [(i64, TokenRequest, &str); 5] = [
        (
            1,
            request(Some(&["infra"]), &[("issues", "write")]),
            "github_permission_not_granted",
        ),
        (
            1,
            request(Some(&["infra"]), &[("contents", "writ")]),
            "github_permission_not_granted",
        ),
        (
            1,
            request(Some(&["elsewhere"]), &[("contents", "read")]),
            "github_repository_not_accessible",
        ),
        (404, contents_read(), "github_not_found"),
        (
            5,
            request(None, &[("contents", "read")]),
            "github_installation_suspended",
        ),
    ];
    for (installation, token_request, code) in cases {
        let error = f
            .client
            .create_installation_token(installation, &token_request)
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            code,
            "{installation} {token_request:?}: {error}"
        );
    }
    assert_eq!(f.sim.counts(), (0, 0));
}

#[tokio::test]
async fn revoking_kills_the_token_and_revoking_again_is_fine() {
    let f = fixture().await;
    let token = mint_contents_read(&f.client).await.unwrap();
    let raw = token.token.expose_secret().to_owned();
    assert!(f.sim.token_is_live(&raw));
    f.client
        .revoke_installation_token(&token.token)
        .await
        .unwrap();
    assert!(!f.sim.token_is_live(&raw));
    assert!(f.sim.token_info(&raw).unwrap().revoked);
    f.client
        .revoke_installation_token(&token.token)
        .await
        .unwrap();
    assert_eq!(f.sim.counts(), (1, 1));
    let calls = f.calls.lock().unwrap().clone();
    assert_eq!(calls[1..], [("revoke_token", 204), ("revoke_token", 401)]);
}

#[tokio::test]
async fn a_client_signing_with_another_key_is_unauthorized() {
    let f = fixture().await;
    let stranger = client_for(
        &f.running.url,
        RsaKeyPair::generate().private_pkcs8_pem(),
        &Calls::default(),
    );
    let error = stranger.installation(1).await.unwrap_err();
    assert!(matches!(error, GitHubError::Unauthorized), "{error:?}");
    let error = mint_contents_read(&stranger).await.unwrap_err();
    assert!(matches!(error, GitHubError::Unauthorized), "{error:?}");
}

#[tokio::test]
async fn pkcs1_and_pkcs8_keys_both_authenticate() {
    let f = fixture().await;
    for pem in [
        shared_app_key().private_pkcs1_pem(),
        shared_app_key().private_pkcs8_pem(),
    ] {
        let client = client_for(&f.running.url, pem, &Calls::default());
        let installation = client.installation(1).await.unwrap();
        assert_eq!(installation.account_login, "Acme");
    }
}

#[tokio::test]
async fn a_key_that_is_not_an_rsa_pem_fails_construction() {
    let result = GitHubClient::new(GitHubClientConfig {
        api_url: Url::parse("https://api.github.com").unwrap(),
        app_id: APP_ID.into(),
        private_key_pem: SecretString::from(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        ),
        observer: None,
    });
    assert!(matches!(result, Err(GitHubError::Signing(_))));
}

#[tokio::test]
async fn installation_lookups_are_cached_positively_and_negatively() {
    let f = fixture().await;
    let first = f.client.installation_for_owner("ACME").await.unwrap();
    assert_eq!(first.account_login, "Acme");
    assert_eq!(first.id, 1);
    assert_eq!(first.account_type, "Organization");
    assert!(!first.suspended);
    let second = f.client.installation_for_owner("acme").await.unwrap();
    assert_eq!(first, second);
    // The lookup by owner also filled the cache by id.
    assert_eq!(f.client.installation(1).await.unwrap(), first);
    assert_eq!(f.sim.request_count("/"), 1);

    for _ in 0..2 {
        let error = f.client.installation_for_owner("ghost").await.unwrap_err();
        assert!(matches!(error, GitHubError::NotFound));
        let error = f.client.installation(77).await.unwrap_err();
        assert!(matches!(error, GitHubError::NotFound));
    }
    assert_eq!(f.sim.request_count("/users/ghost/installation"), 1);
    assert_eq!(f.sim.request_count("/app/installations/77"), 1);
}

#[tokio::test]
async fn a_mint_refused_for_suspension_refreshes_the_cached_installation() {
    let f = fixture().await;
    assert!(
        !f.client
            .installation_for_owner("acme")
            .await
            .unwrap()
            .suspended
    );
    f.sim.set_suspended(1, true);
    let error = mint_contents_read(&f.client).await.unwrap_err();
    assert!(matches!(error, GitHubError::Suspended), "{error:?}");
    assert!(
        f.client
            .installation_for_owner("acme")
            .await
            .unwrap()
            .suspended
    );
    assert!(f.client.installation(1).await.unwrap().suspended);
    assert_eq!(f.sim.request_count("/users/acme/installation"), 2);
}

#[tokio::test]
async fn every_request_carries_githubs_required_headers() {
    let f = fixture().await;
    let token = mint_contents_read(&f.client).await.unwrap();
    f.client.installation(1).await.unwrap();
    f.client
        .revoke_installation_token(&token.token)
        .await
        .unwrap();
    let requests = f.sim.requests();
    assert_eq!(requests.len(), 3);
    for request in requests {
        assert_eq!(
            request.accept.as_deref(),
            Some("application/vnd.github+json")
        );
        assert_eq!(request.api_version.as_deref(), Some("2022-11-28"));
        let agent = request.user_agent.unwrap_or_default();
        assert!(agent.starts_with("sts-broker/"), "{agent}");
    }
}

#[tokio::test]
async fn owner_logins_cannot_change_the_request_path() {
    let f = fixture().await;
    let error = f
        .client
        .installation_for_owner("acme/../../app/installations/1?x=")
        .await
        .unwrap_err();
    assert!(matches!(error, GitHubError::NotFound), "{error:?}");
    assert_eq!(f.sim.request_count("/users/"), 1);
    assert_eq!(f.sim.request_count("/app/"), 0);
}

#[tokio::test]
async fn endpoints_keep_the_path_of_a_ghes_api_url() {
    for base in ["https://ghe.example/api/v3", "https://ghe.example/api/v3/"] {
        let client = GitHubClient::new(GitHubClientConfig {
            api_url: Url::parse(base).unwrap(),
            app_id: APP_ID.into(),
            private_key_pem: shared_app_key().private_pkcs1_pem(),
            observer: None,
        })
        .unwrap();
        let url = client.endpoint(&["users", "acme", "installation"]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://ghe.example/api/v3/users/acme/installation"
        );
    }
}

#[tokio::test]
async fn lists_every_page_of_repositories_and_revokes_the_listing_token() {
    let f = fixture().await;
    let mut big = SimInstallation::organization(3, "big", 1003);
    for id in 0..230 {
        big = big.with_repo(10_000 + id, &format!("repo-{id}"), true);
    }
    f.sim.add_installation(big);
    let repositories = f.client.installation_repositories(3).await.unwrap();
    assert_eq!(repositories.len(), 230);
    assert_eq!(repositories[229].full_name, "big/repo-229");
    assert_eq!(f.sim.request_count("/installation/repositories"), 3);
    assert_eq!(f.sim.counts(), (1, 1));

    let again = f.client.installation_repositories(3).await.unwrap();
    assert_eq!(again, repositories);
    assert_eq!(f.sim.counts(), (1, 1));
    let operations: Vec<&str> = f.calls.lock().unwrap().iter().map(|(op, _)| *op).collect();
    assert_eq!(
        operations,
        [
            "create_token",
            "list_repositories",
            "list_repositories",
            "list_repositories",
            "revoke_token"
        ]
    );
}

#[tokio::test]
async fn a_get_succeeds_after_two_injected_502s() {
    let f = fixture().await;
    f.sim.fail_next(2, 502, None);
    let installation = f.client.installation(1).await.unwrap();
    assert_eq!(installation.id, 1);
    assert_eq!(f.sim.request_count("/app/installations/1"), 3);
    assert_eq!(
        f.calls.lock().unwrap().as_slice(),
        [
            ("get_installation", 502),
            ("get_installation", 502),
            ("get_installation", 200)
        ]
    );
}

#[tokio::test]
async fn a_get_gives_up_after_three_502s() {
    let f = fixture().await;
    f.sim.fail_next(3, 502, None);
    let error = f.client.installation(1).await.unwrap_err();
    assert!(
        matches!(error, GitHubError::Upstream { status: 502 }),
        "{error:?}"
    );
    assert_eq!(f.sim.request_count("/"), 3);
}

#[tokio::test]
async fn the_mint_is_retried_after_a_502_and_reports_two_attempts() {
    let f = fixture().await;
    f.sim.fail_next(1, 502, None);
    let token = mint_contents_read(&f.client).await.unwrap();
    assert_eq!(token.attempts, 2);
    assert!(f.sim.token_is_live(token.token.expose_secret()));
    assert_eq!(f.sim.request_count("/app/installations/1/access_tokens"), 2);
    assert_eq!(
        f.calls.lock().unwrap().as_slice(),
        [("create_token", 502), ("create_token", 201)]
    );

    let first_try = mint_contents_read(&f.client).await.unwrap();
    assert_eq!(first_try.attempts, 1);
}

#[tokio::test]
async fn the_mint_gives_up_after_max_attempts_of_5xx() {
    let f = fixture().await;
    let bound = usize::try_from(retry::MAX_ATTEMPTS).unwrap();
    // One more failure queued than we may spend: the broker must stop at the bound.
    f.sim.fail_next(bound + 1, 503, None);
    let error = mint_contents_read(&f.client).await.unwrap_err();
    assert!(
        matches!(error, GitHubError::Upstream { status: 503 }),
        "{error:?}"
    );
    assert_eq!(
        f.sim.request_count("/app/installations/1/access_tokens"),
        bound
    );
    assert_eq!(f.sim.counts(), (0, 0));
}

#[tokio::test]
async fn refused_mints_are_not_retried() {
    let f = fixture_with_suspended_installation().await;
    // 422 (permission not granted), 404 (no installation), 403 (suspended): GitHub decided, and
    // asking again cannot change its mind.
    let refusals = [
        (1, request(Some(&["infra"]), &[("issues", "write")])),
        (404, contents_read()),
        (5, contents_read()),
    ];
    for (installation, token_request) in refusals {
        f.client
            .create_installation_token(installation, &token_request)
            .await
            .unwrap_err();
        let path = format!("/app/installations/{installation}/access_tokens");
        assert_eq!(f.sim.request_count(&path), 1, "{path}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_the_mint() {
    // Nothing listens on a port we bound and released: every attempt is a connect error,
    // which proves GitHub never saw the request.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let calls = Calls::default();
    let client = client_for(
        &format!("http://127.0.0.1:{port}"),
        shared_app_key().private_pkcs1_pem(),
        &calls,
    );
    let error = mint_contents_read(&client).await.unwrap_err();
    assert!(matches!(error, GitHubError::Transport(_)), "{error:?}");
    assert_eq!(error.code(), "github_unreachable");
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        [
            ("create_token", 0),
            ("create_token", 0),
            ("create_token", 0)
        ]
    );
}

#[tokio::test]
async fn the_mint_is_retried_after_a_429_with_a_short_retry_after() {
    let f = fixture().await;
    f.sim.fail_next(1, 429, Some(1));
    let token = mint_contents_read(&f.client).await.unwrap();
    assert!(f.sim.token_is_live(token.token.expose_secret()));
    assert_eq!(f.sim.request_count("/app/installations/1/access_tokens"), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_rate_limited_without_a_retry() {
    let f = fixture().await;
    f.sim.fail_next(1, 429, Some(120));
    let error = mint_contents_read(&f.client).await.unwrap_err();
    match error {
        GitHubError::RateLimited { retry_after } => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(f.sim.request_count("/"), 1);
}

#[tokio::test]
async fn an_exhausted_primary_rate_limit_is_reported_without_a_retry() {
    let f = fixture().await;
    // The simulator's 403 says the limit resets in 60 s: longer than we are willing to wait.
    f.sim.fail_next(1, 403, None);
    let error = f.client.installation(1).await.unwrap_err();
    assert!(
        matches!(
            error,
            GitHubError::RateLimited {
                retry_after: Some(_)
            }
        ),
        "{error:?}"
    );
    assert_eq!(f.sim.request_count("/"), 1);
}

#[tokio::test]
async fn debug_output_shows_no_secret() {
    let f = fixture().await;
    let token = mint_contents_read(&f.client).await.unwrap();
    let raw = token.token.expose_secret().to_owned();
    let jwt = f.client.signer.jwt().unwrap().expose_secret().to_owned();
    let pem = shared_app_key()
        .private_pkcs1_pem()
        .expose_secret()
        .to_owned();
    let key_body: String = pem.lines().nth(1).unwrap().to_owned();
    let config = GitHubClientConfig {
        api_url: Url::parse(&f.running.url).unwrap(),
        app_id: APP_ID.into(),
        private_key_pem: SecretString::from(pem),
        observer: None,
    };
    let shown = [
        format!("{:?}", f.client),
        format!("{token:?}"),
        format!("{config:?}"),
    ];
    for text in shown {
        assert!(!text.contains(&raw), "{text}");
        assert!(!text.contains(&jwt), "{text}");
        assert!(!text.contains(&key_body), "{text}");
    }
    assert!(format!("{:?}", f.client).contains(APP_ID));
}

#[test]
fn classifies_error_responses() {
    fn response(status: u16, message: &str, headers: &[(&'static str, &str)]) -> ApiResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        ApiResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: Bytes::from(serde_json::json!({ "message": message }).to_string()),
            attempts: 1,
        }
    }
    let cases = [
        (response(404, "Not Found", &[]), "github_not_found"),
        (response(401, "Bad credentials", &[]), "github_unauthorized"),
        (response(422, "There is at least one repository that does not exist or is not accessible to the parent installation.", &[]), "github_repository_not_accessible"),
        (response(422, "The permissions requested are not granted to this installation.", &[]), "github_permission_not_granted"),
        (response(403, "This installation has been suspended", &[]), "github_installation_suspended"),
        (response(403, "API rate limit exceeded", &[("x-ratelimit-remaining", "0")]), "github_rate_limited"),
        (response(403, "You have exceeded a secondary rate limit", &[]), "github_rate_limited"),
        (response(429, "slow down", &[]), "github_rate_limited"),
        (response(403, "Resource not accessible by integration", &[("x-ratelimit-remaining", "4999")]), "github_forbidden"),
        (response(500, "boom", &[]), "github_upstream_error"),
        (response(409, "conflict", &[]), "github_upstream_error"),
    ];
    for (response, code) in cases {
        let status = response.status;
        assert_eq!(map_error(&response).code(), code, "{status}");
    }
}

#[test]
fn reads_link_headers_and_retry_after() {
    let mut headers = HeaderMap::new();
    assert_eq!(link_has_next(&headers), None);
    headers.insert(
        reqwest::header::LINK,
        HeaderValue::from_static(
            "<http://x/a?page=2>; rel=\"next\", <http://x/a?page=5>; rel=\"last\"",
        ),
    );
    assert_eq!(link_has_next(&headers), Some(true));
    headers.insert(
        reqwest::header::LINK,
        HeaderValue::from_static(
            "<http://x/a?page=1>; rel=\"first\", <http://x/a?page=4>; rel=\"prev\"",
        ),
    );
    assert_eq!(link_has_next(&headers), Some(false));
    assert_eq!(retry_after(&headers), None);
    headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
}

/// Callers racing on one cold cache entry, as 30 mints of one CI fan-out do.
const RACERS: usize = 30;

#[tokio::test]
async fn concurrent_cold_repository_listings_share_one_listing() {
    let f = fixture().await;
    let listings =
        futures::future::join_all((0..RACERS).map(|_| f.client.installation_repositories(1))).await;
    for listing in listings {
        assert_eq!(listing.unwrap().len(), 3);
    }
    assert_eq!(f.sim.request_count("/installation/repositories"), 1);
    assert_eq!(f.sim.request_count("/app/installations/1/access_tokens"), 1);
    // The one listing token was revoked, once.
    assert_eq!(f.sim.counts(), (1, 1));
}

#[tokio::test]
async fn concurrent_cold_installation_lookups_share_one_call() {
    let f = fixture().await;
    let by_id = futures::future::join_all((0..RACERS).map(|_| f.client.installation(1))).await;
    for found in by_id {
        assert_eq!(found.unwrap().account_login, "Acme");
    }
    assert_eq!(f.sim.request_count("/app/installations/1"), 1);

    // Another installation, so that the lookup by id has not filled the cache by owner.
    f.sim.add_installation(
        SimInstallation::organization(6, "Globex", 1006).with_repo(2601, "plant", true),
    );
    let spellings = ["globex", "Globex", "GLOBEX"];
    let by_owner = futures::future::join_all((0..RACERS).map(|n| {
        f.client
            .installation_for_owner(spellings[n % spellings.len()])
    }))
    .await;
    for found in by_owner {
        assert_eq!(found.unwrap().id, 6);
    }
    assert_eq!(f.sim.request_count("/users/"), 1);

    // Misses share the call too, and the 404 is remembered.
    let missing = futures::future::join_all((0..RACERS).map(|_| f.client.installation(77))).await;
    for found in missing {
        assert!(matches!(found, Err(GitHubError::NotFound)), "{found:?}");
    }
    f.client.installation(77).await.unwrap_err();
    assert_eq!(f.sim.request_count("/app/installations/77"), 1);
}

#[tokio::test]
async fn concurrent_callers_share_a_failure_that_is_not_cached() {
    let f = fixture().await;
    let bound = usize::try_from(retry::MAX_ATTEMPTS).unwrap();
    f.sim.fail_next(bound, 502, None);
    let failed = futures::future::join_all((0..RACERS).map(|_| f.client.installation(1))).await;
    for outcome in failed {
        assert!(
            matches!(outcome, Err(GitHubError::Upstream { status: 502 })),
            "{outcome:?}"
        );
    }
    // One caller's attempts, not one set per caller.
    assert_eq!(f.sim.request_count("/app/installations/1"), bound);
    // The failure was not cached: the next lookup asks GitHub again and succeeds.
    assert_eq!(f.client.installation(1).await.unwrap().id, 1);
    assert_eq!(f.sim.request_count("/app/installations/1"), bound + 1);
}

#[tokio::test]
async fn a_listing_refused_for_suspension_fails_every_waiter_and_is_not_cached() {
    let f = fixture().await;
    f.sim.set_suspended(1, true);
    // The refused listing mint drops the entries of installation 1 from inside the listing's
    // own load: that must neither deadlock nor leave anything cached.
    let listings =
        futures::future::join_all((0..RACERS).map(|_| f.client.installation_repositories(1))).await;
    for listing in listings {
        assert!(
            matches!(listing, Err(GitHubError::Suspended)),
            "{listing:?}"
        );
    }
    assert_eq!(f.sim.request_count("/app/installations/1/access_tokens"), 1);
    f.sim.set_suspended(1, false);
    assert_eq!(
        f.client.installation_repositories(1).await.unwrap().len(),
        3
    );
}
