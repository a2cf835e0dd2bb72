//! Inside a GitHub Actions job: the OIDC token comes from the runner's request endpoint (https
//! only), tokens are masked, and a dead session is renewed with a fresh runner token.

use crate::helpers::{Run, World};
use sts_sim::tls::{serve_tls, RunningTls};

struct Runner {
    tls: RunningTls,
    request_token: String,
    ca: String,
}

async fn runner(w: &World) -> Runner {
    let ca = w
        .world
        .test_ca()
        .expect("the dev world has a CA (git is installed)");
    let tls = serve_tls(w.world.issuer.router(), ca).await.unwrap();
    Runner {
        tls,
        request_token: w.world.issuer.actions_request_token(),
        ca: w.world.ca_pem_path().unwrap().display().to_string(),
    }
}

impl Runner {
    /// `login --repo acme/modules` with the runner's own request token, trusting its CA.
    async fn login(&self, w: &World) -> Run {
        self.run(
            w,
            &["login", "--repo", "acme/modules"],
            &self.request_token,
            true,
        )
        .await
    }

    fn url(&self) -> String {
        format!("{}/actions/token?api-version=2.0", self.tls.url)
    }

    async fn run(&self, w: &World, args: &[&str], request_token: &str, ca: bool) -> Run {
        let url = self.url();
        let mut env = vec![
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token),
        ];
        if ca {
            env.push(("STS_CA_CERT", self.ca.as_str()));
        }
        w.run(args, &env).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_token_is_fetched_and_every_token_masked() {
    let w = World::start().await;
    let runner = runner(&w).await;
    let run = runner.login(&w).await;
    run.ok();
    let token = w.cached_tokens().remove(0);
    // The mask comes first, before any line that could show the token.
    let first_line = run.stderr.lines().next().unwrap_or_default();
    assert_eq!(first_line, format!("::add-mask::{token}"), "{}", run.stderr);
    assert_eq!(run.stderr.matches(&token).count(), 1, "only in the mask");
    assert_eq!(run.stdout, "");
    assert!(w.world.github.token_is_live(&token));
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_failures_say_what_to_fix() {
    let w = World::start().await;
    let runner = runner(&w).await;
    let run = runner
        .run(&w, &["login"], "wrong-request-token", true)
        .await;
    assert_eq!(run.code, 1);
    run.assert_stderr("answered 401");
    run.assert_stderr("id-token: write");

    // An endpoint whose certificate is not trusted is refused, not ignored.
    let run = runner
        .run(&w, &["login"], &runner.request_token, false)
        .await;
    assert_eq!(run.code, 1);
    run.assert_stderr("could not reach the GitHub Actions OIDC endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_session_is_renewed_with_a_new_runner_token() {
    let w = World::start().await;
    let runner = runner(&w).await;
    runner.login(&w).await.ok();
    let session = w.saved_session();
    w.end_session(&session).await;
    w.age_tokens();

    let run = runner.login(&w).await;
    run.ok();
    run.assert_stderr("authenticating again");
    run.assert_stderr("minted 1 token for acme");
    let new_session = w.saved_session();
    assert_ne!(new_session, session);
}
