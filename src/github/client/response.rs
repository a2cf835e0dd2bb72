//! Reading GitHub's answers: bounded bodies, JSON without echoing values, and the mapping of
//! error statuses to [`GitHubError`].

use super::GitHubError;
use bytes::Bytes;
use http::header::HeaderMap;
use http::StatusCode;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Largest response body read: the biggest legitimate answer (a page of 100 repositories) is far
/// below this; anything larger is refused instead of buffered.
pub(super) const MAX_RESPONSE_BYTES: usize = 5 * 1024 * 1024;
/// GitHub's error `message` is echoed in our errors; cap it so a huge body cannot bloat logs.
pub(super) const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// A response read in full (within [`MAX_RESPONSE_BYTES`]).
pub(super) struct ApiResponse {
    /// HTTP status.
    pub(super) status: StatusCode,
    /// Response headers.
    pub(super) headers: HeaderMap,
    /// The whole body.
    pub(super) body: Bytes,
    /// Requests sent to get this answer, first one included (see `retry::MAX_ATTEMPTS`).
    pub(super) attempts: u32,
}

/// A failure to reach GitHub or to read its answer: transient, so retried.
pub(super) fn transport(error: impl std::error::Error + Send + Sync + 'static) -> GitHubError {
    GitHubError::Transport(Arc::new(error))
}

/// Read the body, refusing more than [`MAX_RESPONSE_BYTES`], giving up at `until`.
pub(super) async fn read_capped(
    response: http::Response<BoxBody<Bytes, octocrab::Error>>,
    until: tokio::time::Instant,
) -> Result<Bytes, GitHubError> {
    let too_large = || GitHubError::InvalidResponse("response body too large".into());
    let announced = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut stream = response.into_body();
    let mut body = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(until, stream.frame()).await {
            Err(elapsed) => return Err(transport(elapsed)),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(transport)?,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(
    operation: &str,
    body: &[u8],
) -> Result<T, GitHubError> {
    // serde's message can quote the offending value, which may be a token: report only where.
    serde_json::from_slice(body).map_err(|error| {
        GitHubError::InvalidResponse(format!(
            "{operation}: unexpected json at line {} column {}",
            error.line(),
            error.column()
        ))
    })
}

/// GitHub's `message`, truncated; empty when the body is not GitHub's error JSON.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorJson {
        message: Option<String>,
    }
    serde_json::from_slice::<ErrorJson>(body)
        .ok()
        .and_then(|json| json.message)
        .map(|message| message.chars().take(MAX_ERROR_MESSAGE_CHARS).collect())
        .unwrap_or_default()
}

/// 429, or a 403 that is a primary (`X-RateLimit-Remaining: 0`) or secondary rate limit.
pub(super) fn is_rate_limited(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> bool {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    if status != StatusCode::FORBIDDEN {
        return false;
    }
    let exhausted = headers
        .get("x-ratelimit-remaining")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim() == "0");
    exhausted
        || headers.contains_key(http::header::RETRY_AFTER)
        || error_message(body)
            .to_lowercase()
            .contains("secondary rate limit")
}

/// How long GitHub asks us to wait: `Retry-After` seconds, else the primary limit's
/// `X-RateLimit-Reset` (epoch seconds) when the remaining count is 0.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = header("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        let reset = header("x-ratelimit-reset")?;
        let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now)));
    }
    None
}

/// `Some(true)` when a `Link` header has `rel="next"`, `Some(false)` when it has none, `None`
/// when there is no `Link` header at all.
pub(super) fn link_has_next(headers: &HeaderMap) -> Option<bool> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    Some(link.split(',').any(|part| {
        part.split(';')
            .skip(1)
            .any(|param| matches!(param.trim(), "rel=\"next\"" | "rel=next"))
    }))
}

/// Map a non-2xx answer to a [`GitHubError`], after the status codes GitHub documents for the
/// mint (<https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>:
/// 401, 403, 404, 422) and its rate limits
/// (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>: a 403 or
/// 429 with `x-ratelimit-remaining: 0`, `retry-after`, or a secondary-limit message).
pub(super) fn map_error(response: &ApiResponse) -> GitHubError {
    let message = error_message(&response.body);
    let lower = message.to_lowercase();
    match response.status {
        StatusCode::NOT_FOUND => GitHubError::NotFound,
        StatusCode::UNAUTHORIZED => GitHubError::Unauthorized,
        StatusCode::UNPROCESSABLE_ENTITY => {
            let about_repository = lower.contains("repositor")
                && (lower.contains("not exist") || lower.contains("not accessible"));
            if about_repository {
                GitHubError::RepositoryNotAccessible
            } else {
                GitHubError::PermissionNotGranted(message)
            }
        }
        status if is_rate_limited(status, &response.headers, &response.body) => {
            GitHubError::RateLimited {
                retry_after: retry_after(&response.headers),
            }
        }
        StatusCode::FORBIDDEN if lower.contains("suspended") => GitHubError::Suspended,
        StatusCode::FORBIDDEN => GitHubError::Forbidden(message),
        status => GitHubError::Upstream {
            status: status.as_u16(),
        },
    }
}
