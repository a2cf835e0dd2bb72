//! Extractors that turn axum's rejections into `ApiError`s, so malformed input gets the envelope.

use super::error::{request_id_of, ApiError};
use super::AppState;
use crate::flow;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use secrecy::SecretString;
use serde::de::DeserializeOwned;

/// JSON body; a bad body is a 400 `invalid_request` naming the problem, an oversized one a 413.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection as R;
    match rejection {
        R::MissingJsonContentType(_) => {
            ApiError::unsupported_media_type("expected Content-Type: application/json")
        }
        R::BytesRejection(_) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError {
                status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                tag: "payload_too_large",
                message: "request body too large".into(),
                validation_errors: Vec::new(),
                source: None,
                retry_after: None,
            }
        }
        other => ApiError::invalid(vec![other.body_text()]),
    }
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
