//! `ApiError` and the envelope every `/api` response is wrapped in. The status of every flow
//! error is decided here, in one table (`From<FlowError> for ApiError`); the other statuses of
//! the http layer are its own (malformed bodies, credentials, the envelope of layer errors).

use crate::flow::{Conflict, FlowError, Forbidden, Missing, Unauthenticated};
use crate::github::GitHubError;
use crate::store::StoreError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;

/// A failed request: status, stable tag, a message safe to show, optional validation errors and,
/// for 5xx, the cause (logged, never shown).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code (`errorTag`).
    pub tag: &'static str,
    /// Human text; leaks no policy internals or secrets.
    pub message: Cow<'static, str>,
    /// `data.validationErrors`.
    pub validation_errors: Vec<String>,
    /// Cause, for the log only.
    #[source]
    pub source: Option<anyhow::Error>,
    /// `Retry-After`, for answers that tell the caller to come back later.
    pub retry_after: Option<std::time::Duration>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(status: StatusCode, tag: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            tag,
            message: message.into(),
            validation_errors: Vec::new(),
            source: None,
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad_request(tag: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, tag, message)
    }
    /// 400 `invalid_request` with validation errors.
    pub fn invalid(errors: Vec<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request is invalid",
        );
        e.validation_errors = errors;
        e
    }
    /// 401 (adds `WWW-Authenticate: Bearer`).
    pub fn unauthorized(tag: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, tag, message)
    }
    /// 403.
    pub fn forbidden(tag: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, tag, message)
    }
    /// 404.
    pub fn not_found(tag: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, tag, message)
    }
    /// 409.
    pub fn conflict(tag: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, tag, message)
    }
    /// 415.
    pub fn unsupported_media_type(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }
    /// 422 with validation errors.
    pub fn unprocessable(
        tag: &'static str,
        message: impl Into<Cow<'static, str>>,
        errors: Vec<String>,
    ) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, tag, message);
        e.validation_errors = errors;
        e
    }
    /// 502: GitHub (or another upstream) failed.
    pub fn upstream(
        tag: &'static str,
        message: impl Into<Cow<'static, str>>,
        source: anyhow::Error,
    ) -> Self {
        let mut e = Self::new(StatusCode::BAD_GATEWAY, tag, message);
        e.source = Some(source);
        e
    }
    /// 503.
    pub fn unavailable(
        tag: &'static str,
        message: impl Into<Cow<'static, str>>,
        source: Option<anyhow::Error>,
    ) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, tag, message);
        e.source = source;
        e
    }
    /// 500; the cause is logged, the caller sees `internal error`.
    pub fn internal(tag: &'static str, source: anyhow::Error) -> Self {
        let mut e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, tag, "internal error");
        e.source = Some(source);
        e
    }
}

impl From<FlowError> for ApiError {
    /// The status table: which status and message each flow error answers with. The tag is the
    /// error's [`code`](FlowError::code); 5xx causes go to the log only.
    fn from(e: FlowError) -> Self {
        let tag = e.code();
        match e {
            FlowError::InvalidRequest(errors) => Self::invalid(errors),
            FlowError::NotGitHubActionsSession => Self::bad_request(
                tag,
                "GitHub STS requires a session made from a GitHub Actions OIDC token",
            ),
            FlowError::Unauthenticated(why) => Self::unauthorized(
                tag,
                match why {
                    Unauthenticated::InvalidToken => "the OIDC token was not accepted",
                    Unauthenticated::InvalidSession => "the session token is not valid",
                    Unauthenticated::SessionExpired => "the session has expired",
                    Unauthenticated::SessionRevoked => "the session was revoked",
                },
            ),
            FlowError::Replayed => Self::unauthorized(tag, "the OIDC token was already used"),
            FlowError::Forbidden(Forbidden::StsNotEntitled) => Self::forbidden(
                tag,
                "the workspace is not entitled to GitHub STS or the feature is disabled",
            ),
            FlowError::NotFound(what) => Self::not_found(
                tag,
                match what {
                    Missing::Workspace => "no such workspace".into(),
                    Missing::Policy => "no such policy".into(),
                    Missing::InstallationLink => "no installation linked for this owner".into(),
                    Missing::Session => "no such session in this workspace".into(),
                    Missing::Installation { owner } => {
                        Cow::Owned(format!("the GitHub App is not installed on `{owner}`"))
                    }
                },
            ),
            FlowError::Conflict(what) => Self::conflict(
                tag,
                match what {
                    Conflict::WorkspaceExists => "a workspace with this id exists",
                    Conflict::InstallationLinkedElsewhere => {
                        "this installation is already linked to another workspace"
                    }
                },
            ),
            FlowError::RateLimited { retry_after } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    tag,
                    "too many requests, try again later",
                );
                e.retry_after = retry_after;
                e
            }
            FlowError::PolicyInvalid(errors) => {
                Self::unprocessable(tag, "the policy is invalid", errors)
            }
            e @ FlowError::IssuerUnavailable(_) => Self::unavailable(
                tag,
                "the OIDC issuer's keys could not be fetched, try again later",
                Some(e.into()),
            ),
            e @ FlowError::RevokeIncomplete { workspace_kept, .. } => Self::upstream(
                tag,
                if workspace_kept {
                    "some tokens could not be revoked at github; the workspace was kept, retry"
                } else {
                    "some tokens could not be revoked at github; retry the request"
                },
                e.into(),
            ),
            FlowError::Abandoned => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                tag,
                "github did not answer in time; nothing was handed out, retry the request",
            ),
            FlowError::GitHub(e @ GitHubError::RateLimited { .. }) => Self::unavailable(
                tag,
                "github rate limit reached, try again later",
                Some(e.into()),
            ),
            FlowError::GitHub(GitHubError::NotFound) => Self::not_found(tag, "not found on github"),
            FlowError::GitHub(e) => Self::upstream(tag, "github request failed", e.into()),
            FlowError::Store(StoreError::Conflict(what)) => Self::conflict(tag, what),
            FlowError::Store(StoreError::NotFound(what)) => Self::not_found(tag, what),
            FlowError::Store(StoreError::Replay) => {
                Self::unauthorized(tag, "the OIDC token was already used")
            }
            FlowError::Store(e) => Self::internal(tag, e.into()),
            FlowError::Internal { source, .. } => Self::internal(tag, source),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        res.extensions_mut().insert(Arc::new(self));
        res
    }
}

/// A successful `/api` payload; the envelope middleware wraps it.
pub struct ApiData {
    status: StatusCode,
    data: serde_json::Value,
}

impl ApiData {
    /// 200 with `data`.
    pub fn ok<T: Serialize>(data: T) -> Self {
        Self::with_status(StatusCode::OK, data)
    }
    /// 201 with `data`.
    pub fn created<T: Serialize>(data: T) -> Self {
        Self::with_status(StatusCode::CREATED, data)
    }
    /// Any status with `data`.
    pub fn with_status<T: Serialize>(status: StatusCode, data: T) -> Self {
        Self {
            status,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }
}

#[derive(Clone)]
struct SuccessData(Arc<serde_json::Value>);

impl IntoResponse for ApiData {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut()
            .insert(SuccessData(Arc::new(self.data)));
        res
    }
}

/// Request id of the current request (set by the request-id layer).
pub fn request_id_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(super::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Wraps every `/api` response in the envelope, and logs each error once, here: refusals (4xx)
/// and failures (5xx) each within their own budget (`App::refusal_log`, `App::failure_log`),
/// since a caller can repeat either as fast as it likes.
pub(crate) async fn envelope(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = request_id_of(req.headers());
    let is_api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let status = res.status();
    let body = if let Some(err) = res.extensions_mut().remove::<Arc<ApiError>>() {
        log_error(&err, &request_id, &state);
        Some(error_body(
            status,
            &request_id,
            err.tag,
            &err.message,
            &err.validation_errors,
        ))
    } else if let Some(SuccessData(data)) = res.extensions_mut().remove::<SuccessData>() {
        Some(serde_json::json!({
            "success": true, "status": status.as_u16(), "request": request_id, "data": data,
        }))
    } else if is_api && (status.is_client_error() || status.is_server_error()) {
        // Errors produced by layers (timeout, body limit, unknown route) get the envelope too.
        let (tag, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
            StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body too large"),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "request timed out"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported_media_type", "unsupported content type")
            }
            s if s.is_server_error() => ("internal_error", "internal error"),
            _ => ("bad_request", "bad request"),
        };
        if status.is_server_error() {
            if let Some(suppressed) = state.failure_log.admit() {
                tracing::error!(
                    http.status = status.as_u16(),
                    request_id,
                    suppressed,
                    "request failed: {message}"
                );
            }
        }
        Some(error_body(status, &request_id, tag, message, &[]))
    } else {
        None
    };
    if let Some(body) = body {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        res.headers_mut().remove(header::CONTENT_LENGTH);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *res.body_mut() = Body::from(bytes);
    }
    res
}

fn error_body(
    status: StatusCode,
    request_id: &str,
    tag: &str,
    message: &str,
    validation_errors: &[String],
) -> serde_json::Value {
    let trace_id = crate::telemetry::current_trace_id().unwrap_or_else(|| request_id.to_owned());
    let mut body = serde_json::json!({
        "success": false,
        "status": status.as_u16(),
        "request": request_id,
        "errorTag": tag,
        "errorMessage": message,
        "traceId": trace_id,
    });
    if !validation_errors.is_empty() {
        body["data"] = serde_json::json!({ "validationErrors": validation_errors });
    }
    body
}

fn log_error(err: &ApiError, request_id: &str, app: &crate::app::App) {
    if err.status.is_server_error() {
        let Some(suppressed) = app.failure_log.admit() else {
            return;
        };
        let cause = err.source.as_ref().map(|s| format!("{s:#}"));
        tracing::error!(
            http.status = err.status.as_u16(),
            error.tag = err.tag,
            error.cause = cause,
            request_id,
            suppressed,
            "request failed: {}",
            err.message
        );
    } else if let Some(suppressed) = app.refusal_log.admit() {
        tracing::info!(
            http.status = err.status.as_u16(),
            error.tag = err.tag,
            request_id,
            suppressed,
            "request refused: {}",
            err.message
        );
    }
}

#[cfg(test)]
mod tests;
