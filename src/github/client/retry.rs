//! When a call to GitHub is repeated, and how long we wait in between.
//!
//! Every call, the mint POST included, is retried on what is likely transient: a transport
//! error (connect, timeout, a body cut short), a 5xx, a 429 or a rate-limit 403. A 4xx that is
//! GitHub's decision (401, 404, 422, a suspension's 403) is final and never retried.
//!
//! The mint is not idempotent: a 5xx or a timeout may come after GitHub minted the token and lost
//! the 201 on the way, and a retry then mints a second one. We retry anyway. The lost token never
//! reached anyone, so nobody can use it, and it expires within the hour (it cannot be revoked,
//! since revocation needs the token itself). A CI job failing on a transient GitHub error is the
//! worse outcome, and GitHub's own clients retry 5xx the same way (Octokit's retry plugin,
//! <https://github.com/octokit/plugin-retry.js>). The attempts are bounded, and the count is
//! handed back to the caller so the mint's audit event shows every retried mint.

use super::response::{is_rate_limited, read_capped, retry_after, transport, ApiResponse};
use super::{GitHubClient, GitHubError, REQUEST_TIMEOUT};
use octocrab::OctoBody;
use rand::RngExt as _;
use std::time::{Duration, Instant};

/// Attempts per call, first one included. Three ride out a GitHub blip (a deploy, a lost
/// connection) while a GitHub that is really down costs each caller at most two more requests,
/// and each retried mint at most two tokens nobody received.
pub(super) const MAX_ATTEMPTS: u32 = 3;
/// First backoff; doubled per attempt, plus up to the same again of random jitter so that many
/// brokers retrying together spread out.
pub(super) const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest `Retry-After` (or rate-limit reset) we sleep through. Beyond it the caller is better
/// served by a prompt `RateLimited` than by a request that outlives its own timeout.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// A call and all its retries end within this, waits included: each attempt's timeout is cut to
/// what is left, and no retry starts that could not. It stays under the broker's default request
/// timeout (30 s, `server.request_timeout_seconds`) so that the CI job hears GitHub's error
/// rather than a bare 408, and keeps a down GitHub from pinning a worker for 3 × 15 s.
pub(super) const RETRY_DEADLINE: Duration = Duration::from_secs(20);

impl GitHubClient {
    /// Send with retries and read the body. Returns the last response whatever its status,
    /// with the number of requests sent; the caller maps non-2xx with
    /// [`map_error`](super::response::map_error).
    ///
    /// Retries transport errors, 5xx, 429 and rate-limit 403s (see the module doc for why the
    /// mint POST is among them), at most [`MAX_ATTEMPTS`] times in all and within
    /// [`RETRY_DEADLINE`].
    pub(super) async fn execute(
        &self,
        operation: &'static str,
        build: impl Fn() -> Result<http::Request<OctoBody>, GitHubError>,
    ) -> Result<ApiResponse, GitHubError> {
        let deadline = Instant::now() + RETRY_DEADLINE;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let timeout = deadline
                .saturating_duration_since(started)
                .min(REQUEST_TIMEOUT);
            // The attempt's whole deadline: sending, headers and body.
            let until = tokio::time::Instant::from_std(started + timeout);
            let sent = match tokio::time::timeout_at(until, self.octo.execute(build()?)).await {
                Ok(sent) => sent.map_err(transport),
                Err(elapsed) => Err(transport(elapsed)),
            };
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    self.observe(operation, 0, None, started);
                    if let Some(wait) = retry_wait(attempt, None, deadline) {
                        tracing::debug!(
                            github.operation = operation,
                            attempt,
                            "github request failed to send, retrying"
                        );
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(error);
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match read_capped(response, until).await {
                Ok(body) => body,
                Err(error) => {
                    self.observe(operation, status.as_u16(), Some(&headers), started);
                    // A body cut short is transient; one over the cap would be again.
                    let transient = matches!(error, GitHubError::Transport(_));
                    if let Some(wait) = retry_wait(attempt, None, deadline).filter(|_| transient) {
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(error);
                }
            };
            self.observe(operation, status.as_u16(), Some(&headers), started);
            let rate_limited = is_rate_limited(status, &headers, &body);
            let answer = ApiResponse {
                status,
                headers,
                body,
                attempts: attempt,
            };
            if status.is_success() || !(rate_limited || status.is_server_error()) {
                return Ok(answer);
            }
            let server_wait = retry_after(&answer.headers);
            if server_wait.is_some_and(|wait| wait > MAX_RETRY_AFTER) {
                return if rate_limited {
                    Err(GitHubError::RateLimited {
                        retry_after: server_wait,
                    })
                } else {
                    Ok(answer)
                };
            }
            let Some(wait) = retry_wait(attempt, server_wait, deadline) else {
                return Ok(answer);
            };
            tracing::debug!(
                github.operation = operation,
                http.status = status.as_u16(),
                attempt,
                "github answered a retryable status, retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// How long to wait before the attempt after `attempt` (1-based), or `None` when there must be
/// no further attempt: the bound is reached, or the wait would leave nothing of the deadline.
fn retry_wait(attempt: u32, server_wait: Option<Duration>, deadline: Instant) -> Option<Duration> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let wait = server_wait.unwrap_or_default().max(backoff(attempt));
    (Instant::now() + wait < deadline).then_some(wait)
}

/// Exponential backoff with jitter for the wait after attempt `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    let jitter_ms =
        rand::rng().random_range(0..=u64::try_from(base.as_millis()).unwrap_or(u64::MAX));
    base + Duration::from_millis(jitter_ms)
}
