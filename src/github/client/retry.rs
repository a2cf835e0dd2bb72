//! When a call to GitHub is repeated, and how long we wait in between.

use super::response::{is_rate_limited, read_capped, retry_after, ApiResponse};
use super::{GitHubClient, GitHubError};
use rand::Rng as _;
use reqwest::RequestBuilder;
use std::time::{Duration, Instant};

/// Attempts per call, first one included.
pub(super) const MAX_ATTEMPTS: u32 = 3;
/// First backoff; doubled per attempt, plus up to the same again of random jitter so that many
/// brokers retrying together spread out.
pub(super) const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest `Retry-After` (or rate-limit reset) we sleep through. Beyond it the caller is better
/// served by a prompt `RateLimited` than by a request that outlives its own timeout.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Which failures a call may retry; see [`GitHubClient::execute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetryPolicy {
    /// GET and DELETE: repeating them has no extra effect.
    Idempotent,
    /// The mint POST: repeat only when GitHub certainly did not act on it.
    NotProcessedOnly,
}

impl GitHubClient {
    /// Send with retries per `policy` and read the body. Returns the last response whatever its
    /// status; the caller maps non-2xx with [`map_error`](super::response::map_error).
    ///
    /// GET and DELETE retry on transport errors, 5xx, 429 and rate-limit 403s. The mint POST
    /// retries only when GitHub certainly did not process it: a connect error (nothing was sent)
    /// or a 429 / rate-limit 403 (refused before processing). It does NOT retry a 5xx or a
    /// timeout: GitHub may have minted the token and lost the 201 on the way, and a token we never
    /// saw is live for an hour with nobody able to revoke it (revocation needs the token itself).
    pub(super) async fn execute(
        &self,
        operation: &'static str,
        policy: RetryPolicy,
        build: impl Fn() -> Result<RequestBuilder, GitHubError>,
    ) -> Result<ApiResponse, GitHubError> {
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let sent = build()?.send().await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    self.observe(operation, 0, started);
                    let retryable = match policy {
                        RetryPolicy::Idempotent => true,
                        RetryPolicy::NotProcessedOnly => error.is_connect(),
                    };
                    if retryable && attempt < MAX_ATTEMPTS {
                        tracing::debug!(
                            github.operation = operation,
                            attempt,
                            "github request failed to send, retrying"
                        );
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(GitHubError::Transport(error));
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match read_capped(response).await {
                Ok(body) => body,
                Err(error) => {
                    self.observe(operation, status.as_u16(), started);
                    // A body cut short on a mint may hide a 201: never retry it.
                    let retryable = policy == RetryPolicy::Idempotent
                        && matches!(error, GitHubError::Transport(_));
                    if retryable && attempt < MAX_ATTEMPTS {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(error);
                }
            };
            self.observe(operation, status.as_u16(), started);
            let rate_limited = is_rate_limited(status, &headers, &body);
            let retryable =
                rate_limited || (policy == RetryPolicy::Idempotent && status.is_server_error());
            if !retryable || status.is_success() {
                return Ok(ApiResponse {
                    status,
                    headers,
                    body,
                });
            }
            let server_wait = retry_after(&headers);
            let wait_too_long = server_wait.is_some_and(|wait| wait > MAX_RETRY_AFTER);
            if wait_too_long && rate_limited {
                return Err(GitHubError::RateLimited {
                    retry_after: server_wait,
                });
            }
            if wait_too_long || attempt >= MAX_ATTEMPTS {
                return Ok(ApiResponse {
                    status,
                    headers,
                    body,
                });
            }
            tracing::debug!(
                github.operation = operation,
                http.status = status.as_u16(),
                attempt,
                "github answered a retryable status, retrying"
            );
            tokio::time::sleep(server_wait.unwrap_or_default().max(backoff(attempt))).await;
            attempt += 1;
        }
    }
}

/// Exponential backoff with jitter for the wait after attempt `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    let jitter_ms =
        rand::thread_rng().gen_range(0..=u64::try_from(base.as_millis()).unwrap_or(u64::MAX));
    base + Duration::from_millis(jitter_ms)
}
