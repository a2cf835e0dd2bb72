//! What goes over the wire, shaped as GitHub documents it (<https://docs.github.com/en/rest>):
//! error bodies and their messages, installations, repositories and tokens as JSON, timestamps,
//! pagination with `Link` headers, and the rate-limit answers an injected failure stands in for.

use super::state::IssuedToken;
use super::{SimInstallation, SimRepo};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `documentation_url` of every error body, as GitHub sends one.
pub const DOCUMENTATION_URL: &str = "https://docs.github.com/rest";
/// GitHub's default page size.
pub const DEFAULT_PER_PAGE: usize = 30;
/// GitHub's largest page size.
pub const MAX_PER_PAGE: usize = 100;

/// GitHub's 422 message when a requested repository is not part of the installation.
pub const MSG_REPOSITORY_NOT_ACCESSIBLE: &str =
    "There is at least one repository that does not exist or is not accessible to the parent installation.";
/// GitHub's 422 message when a permission or level exceeds the installation's.
pub const MSG_PERMISSIONS_NOT_GRANTED: &str =
    "The permissions requested are not granted to this installation.";
/// GitHub's 403 message for a suspended installation.
pub const MSG_SUSPENDED: &str = "This installation has been suspended";
/// GitHub's 401 message for an unusable App JWT.
pub const MSG_JWT_NOT_DECODED: &str = "A JSON web token could not be decoded";
/// GitHub's 401 message for an unknown, revoked or expired token.
pub const MSG_BAD_CREDENTIALS: &str = "Bad credentials";

/// A GitHub-shaped error: `{"message", "documentation_url"}` with a status.
#[derive(Debug, Clone, Copy)]
pub(super) struct GhError {
    status: StatusCode,
    message: &'static str,
}

impl IntoResponse for GhError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "message": self.message, "documentation_url": DOCUMENTATION_URL })),
        )
            .into_response()
    }
}

pub(super) fn gh_error(status: StatusCode, message: &'static str) -> GhError {
    GhError { status, message }
}

/// GitHub's 404, which also stands for "you may not see this".
pub(super) fn not_found() -> GhError {
    gh_error(StatusCode::NOT_FOUND, "Not Found")
}

fn timestamp(at: OffsetDateTime) -> String {
    // GitHub's timestamps have whole seconds and a `Z`.
    let at = OffsetDateTime::from_unix_timestamp(at.unix_timestamp()).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// The App's id as GitHub writes it: a number when it is one (a client id stays a string).
pub(super) fn app_id_json(app_id: &str) -> Value {
    app_id
        .parse::<i64>()
        .map_or_else(|_| Value::from(app_id), Value::from)
}

pub(super) fn installation_json(installation: &SimInstallation, app_id: &str) -> Value {
    json!({
        "id": installation.id,
        "app_id": app_id_json(app_id),
        "account": account_json(installation),
        "target_type": installation.account_type,
        "target_id": installation.account_id,
        "permissions": installation.permissions,
        "repository_selection": installation.repository_selection,
        "events": [],
        "suspended_at": installation.suspended.then(|| timestamp(OffsetDateTime::now_utc())),
    })
}

fn account_json(installation: &SimInstallation) -> Value {
    json!({
        "login": installation.account_login,
        "id": installation.account_id,
        "type": installation.account_type,
    })
}

pub(super) fn repo_json(installation: &SimInstallation, repo: &SimRepo) -> Value {
    json!({
        "id": repo.id,
        "name": repo.name,
        "full_name": format!("{}/{}", installation.account_login, repo.name),
        "private": repo.private,
        "visibility": if repo.private { "private" } else { "public" },
        "owner": account_json(installation),
    })
}

/// Body of a token request; every field optional.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AccessTokenBody {
    pub(super) repositories: Option<Vec<String>>,
    pub(super) repository_ids: Option<Vec<i64>>,
    pub(super) permissions: Option<BTreeMap<String, Value>>,
}

impl AccessTokenBody {
    /// The request as GitHub reads it: an empty body asks for everything, a body that is not
    /// such JSON is a 400.
    pub(super) fn parse(body: &Bytes) -> Result<Self, GhError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body)
            .map_err(|_| gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"))
    }
}

/// The 201 body for a token just issued for `installation`.
pub(super) fn access_token_json(installation: &SimInstallation, issued: &IssuedToken) -> Value {
    let selection = match issued.repositories {
        Some(_) => "selected",
        None => installation.repository_selection.as_str(),
    };
    let mut body = json!({
        "token": issued.token,
        "expires_at": timestamp(issued.expires_at),
        "permissions": issued.permissions,
        "repository_selection": selection,
    });
    if let Some(selected) = &issued.repositories {
        body["repositories"] = selected
            .iter()
            .map(|repo| repo_json(installation, repo))
            .collect();
    }
    body
}

/// `?per_page=&page=` as GitHub reads them.
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// Slice `items` for `query` and build the `Link` header GitHub would send; `path` is the
/// request's whole path (with any [`super::GHES_API_PREFIX`]), so the links lead back here.
pub(super) fn paginate<'a, T>(
    items: &'a [T],
    query: &PageQuery,
    headers: &HeaderMap,
    path: &str,
) -> (&'a [T], Option<HeaderValue>) {
    let per_page = query
        .per_page
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page = query.page.unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = start.saturating_add(per_page).min(items.len());
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    let link = |n: usize, rel: &str| {
        format!("<http://{host}{path}?per_page={per_page}&page={n}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    let header = (!links.is_empty())
        .then(|| HeaderValue::from_str(&links.join(", ")).ok())
        .flatten();
    (&items[start..end], header)
}

/// `body` as JSON, with the page's `Link` header when there is one.
pub(super) fn with_link(body: Value, link: Option<HeaderValue>) -> Response {
    let mut response = Json(body).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// What GitHub answers instead when it will not serve a request: a 403 is a primary rate limit
/// (`X-RateLimit-Remaining: 0`, reset after `retry_after` or 60 s), a 429 a secondary one,
/// anything else a bare error body; `retry_after` adds a `Retry-After` header (seconds).
pub(super) fn refusal(status: StatusCode, retry_after: Option<u64>) -> Response {
    let message = match status {
        StatusCode::FORBIDDEN => "API rate limit exceeded for installation.",
        StatusCode::TOO_MANY_REQUESTS => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        _ => "Server Error",
    };
    let mut response = gh_error(status, message).into_response();
    let headers = response.headers_mut();
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::FORBIDDEN {
        let reset = OffsetDateTime::now_utc().unix_timestamp()
            + i64::try_from(retry_after.unwrap_or(60)).unwrap_or(60);
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(0),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset),
        );
    }
    response
}
