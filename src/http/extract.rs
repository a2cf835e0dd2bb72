//! Extractors that turn axum's rejections into `ApiError`s, so malformed input gets the envelope.

use super::error::{request_id_of, ApiError};
use super::AppState;
use crate::flow;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

/// JSON body; a bad body is a 400 `invalid_request` naming the problem, an oversized one a 413,
/// one that is not `application/json` a 415.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::unsupported_media_type(
                "expected Content-Type: application/json",
            ));
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(rejection.status(), rejection.body_text()))?;
        ensure_object(&body)?;
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(body_rejection(rejection.status(), rejection.body_text())),
        }
    }
}

/// Refuse a body that is JSON but not an object. Every request body of the API is an object,
/// yet serde's derived structs also accept an array (fields by position): `[null, null]` would
/// pass as a request with every field absent and run with the defaults. A body that is not
/// JSON at all is left for the typed parse, which names the syntax error.
pub(super) fn ensure_object(body: &[u8]) -> Result<(), ApiError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if !value.is_object() => Err(ApiError::invalid(vec![format!(
            "body: expected a JSON object, got {}",
            json_kind(&value)
        )])),
        _ => Ok(()),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `application/json`, or any `application/*+json`, parameters (`; charset=utf-8`) aside: what
/// axum's `Json` accepts.
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// A body axum refused: too large is a 413, anything else a 400 naming the problem.
fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError {
            status,
            tag: "payload_too_large",
            message: "request body too large".into(),
            validation_errors: Vec::new(),
            source: None,
            retry_after: None,
        };
    }
    ApiError::invalid(vec![text])
}

/// `Authorization: Bearer <token>`; missing or malformed is 401.
pub struct BearerToken(pub SecretString);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let missing =
            || ApiError::unauthorized("missing_credentials", "a Bearer token is required");
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(missing)?;
        let value = value.to_str().map_err(|_| missing())?;
        let Some((scheme, token)) = value.split_once(' ') else {
            return Err(missing());
        };
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(missing());
        }
        Ok(Self(SecretString::from(token.to_owned())))
    }
}

/// The request id, as set by the request-id layer.
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(request_id_of(&parts.headers)))
    }
}

/// What every admin handler starts from: proof that the caller presented the operator token,
/// and the request id, ready to call the admin flow.
pub struct AdminCall {
    state: AppState,
    request_id: String,
}

impl FromRequestParts<AppState> for AdminCall {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let BearerToken(presented) = BearerToken::from_request_parts(parts, state).await?;
        if !state.admin_token.matches(&presented) {
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "invalid operator token",
            ));
        }
        let Ok(RequestId(request_id)) = RequestId::from_request_parts(parts, state).await;
        Ok(Self {
            state: state.clone(),
            request_id,
        })
    }
}

impl AdminCall {
    /// The admin flow, for this request.
    pub fn flow(&self) -> flow::admin::Admin<'_> {
        flow::admin::Admin {
            app: &self.state,
            request_id: &self.request_id,
        }
    }

    /// The application state, for the admin handlers that call a flow other than `Admin`'s.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// This request's id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}
