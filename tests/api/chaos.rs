//! Chaos: many mints at once while GitHub answers slowly and at random, clients give up at
//! random, and the server's request timeout cuts others short. Once the broker is idle, every
//! token GitHub minted is either held by the client that got it (and audited as handed out), or
//! revoked at GitHub (and audited as revoked). Loopback only; bounded in count and time.
//!
//! A client that gives up ends its session afterwards, as a CI job's cleanup step does. That is
//! not what keeps the broker honest: a token the broker never recorded cannot be revoked by
//! ending a session, so any such token stays live and fails the test. It only settles the one
//! race no broker can see, a client that drops the connection while the answer is already on
//! its way: such tokens were recorded as handed out, and ending the session revokes them.

use crate::helpers::*;
use crate::leaks::*;
use rand::RngExt as _;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Concurrent mints.
const CLIENTS: usize = 40;
/// Clients start spread over this window.
const RAMP: Duration = Duration::from_secs(2);
/// GitHub answers each token POST after a random time in this range.
const GITHUB_LATENCY: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(2500));
/// A client that gives up does so after a random time up to this.
const PATIENCE: Duration = Duration::from_millis(3000);
/// The server's request timeout: the mint answers `mint_abandoned` a second before it.
const REQUEST_TIMEOUT_SECONDS: u64 = 3;

/// How one client's mint ended.
enum Ending {
    /// The client read an answer (tokens, or an error).
    Answered(Reply),
    /// The client dropped the request before an answer came.
    GaveUp,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_slow_github_and_random_disconnects_every_token_is_handed_out_or_revoked() {
    let app = Arc::new(deploy_app(REQUEST_TIMEOUT_SECONDS).await);
    app.world
        .github
        .set_mint_delay_between(GITHUB_LATENCY.0, GITHUB_LATENCY.1);

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let app = Arc::clone(&app);
        let (start, patience, patient) = {
            let mut rng = rand::rng();
            (
                rng.random_range(Duration::ZERO..RAMP),
                rng.random_range(Duration::ZERO..PATIENCE),
                rng.random_bool(0.4),
            )
        };
        clients.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let session = app.main_session().await;
            let mint = app.post_sts(&session, deploy_mint());
            let ending = if patient {
                Ending::Answered(mint.await)
            } else {
                match tokio::time::timeout(patience, mint).await {
                    Ok(reply) => Ending::Answered(reply),
                    Err(_) => {
                        let r = app.delete_session(&session).await;
                        assert_eq!(r.status, 200, "client {i} cleanup: {}", r.body);
                        Ending::GaveUp
                    }
                }
            };
            (i, ending)
        }));
    }

    let mut received = BTreeSet::new();
    let (mut answered, mut gave_up, mut abandoned) = (0, 0, 0);
    for client in clients {
        let (i, ending) = client.await.unwrap();
        match ending {
            Ending::Answered(r) => {
                answered += 1;
                match r.status {
                    200 => received.extend(token_values(&r)),
                    504 => abandoned += 1,
                    status => panic!("client {i}: unexpected {status}: {}", r.body),
                }
            }
            Ending::GaveUp => gave_up += 1,
        }
    }
    tracing::info!(
        answered,
        gave_up,
        abandoned,
        handed_out = received.len(),
        "chaos ended"
    );
    assert_eq!(answered + gave_up, CLIENTS);

    assert_no_token_unaccounted(&app, &received).await;
    for token in &received {
        assert!(
            app.world.github.token_is_live(token),
            "a handed-out token was revoked"
        );
    }
    let by_the_mint = all_events(&app)
        .await
        .iter()
        .filter(|e| e["kind"] == "mint" || e["action"] == "mint.undelivered")
        .flat_map(|e| e["tokens"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["revoked"] == true)
        .count();
    tracing::info!(by_the_mint, "tokens the mint revoked itself");
    if gave_up + abandoned > 0 {
        assert!(by_the_mint > 0, "mints cut short revoke their own tokens");
    }
}
