//! Handlers: extract → call the domain flow → wrap the result. Nothing else.

use super::error::{ApiData, ApiError, ApiResult};
use super::extract::{Admin, AppJson, BearerToken, RequestId};
use super::types::{ExchangeRequest, MintRequest, RevokeRequest, RevokeResponse};
use super::AppState;
use crate::admin::{self, CreateWorkspace, PatchWorkspace};
use crate::exchange::{self, Purpose};
use crate::policy::PolicyFormat;
use crate::revoke::{self, AdminRevocation};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

pub(super) async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready" })),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "status": "database unreachable" })),
            )
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

pub(super) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(state.sessions.jwks())
}

pub(super) async fn exchange_token(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    AppJson(req): AppJson<ExchangeRequest>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(exchange::exchange(&state, req, &rid).await?))
}

pub(super) async fn mint_tokens(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    BearerToken(token): BearerToken,
    body: Bytes,
) -> ApiResult<ApiData> {
    let auth = exchange::authenticate(&state, &token, Purpose::Use).await?;
    // Atmos always sends a body, but an empty one means "defaults", as the contract allows.
    let req: MintRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MintRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![format!("body: {e}")]))?
    };
    Ok(ApiData::ok(
        crate::mint::mint(&state, &auth, req, &rid).await?,
    ))
}

pub(super) async fn revoke_tokens(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    BearerToken(token): BearerToken,
    body: Bytes,
) -> ApiResult<ApiData> {
    let auth = exchange::authenticate(&state, &token, Purpose::Revoke).await?;
    let req: RevokeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![format!("body: {e}")]))?
    };
    let revoked = revoke::revoke_session_tokens(&state, &auth, req.ids, &rid).await?;
    Ok(ApiData::ok(RevokeResponse { revoked }))
}

pub(super) async fn end_session(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    BearerToken(token): BearerToken,
) -> ApiResult<ApiData> {
    let auth = exchange::authenticate(&state, &token, Purpose::Revoke).await?;
    let revoked = revoke::end_session(&state, &auth, &rid).await?;
    Ok(ApiData::ok(RevokeResponse { revoked }))
}

fn admin<'a>(state: &'a AppState, rid: &'a str) -> admin::Admin<'a> {
    admin::Admin {
        app: state,
        request_id: rid,
    }
}

pub(super) async fn list_workspaces(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        serde_json::json!({ "workspaces": admin(&s, &rid).list_workspaces().await? }),
    ))
}

pub(super) async fn create_workspace(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    AppJson(req): AppJson<CreateWorkspace>,
) -> ApiResult<ApiData> {
    Ok(ApiData::created(
        admin(&s, &rid).create_workspace(req).await?,
    ))
}

pub(super) async fn get_workspace(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(admin(&s, &rid).get_workspace(&ws).await?))
}

pub(super) async fn patch_workspace(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
    AppJson(req): AppJson<PatchWorkspace>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        admin(&s, &rid).patch_workspace(&ws, req).await?,
    ))
}

pub(super) async fn delete_workspace(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(admin(&s, &rid).delete_workspace(&ws).await?))
}

pub(super) async fn list_installations(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        serde_json::json!({ "installations": admin(&s, &rid).list_installations(&ws).await? }),
    ))
}

pub(super) async fn link_installation(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path((ws, owner)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        admin(&s, &rid).link_installation(&ws, &owner).await?,
    ))
}

pub(super) async fn unlink_installation(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path((ws, owner)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        admin(&s, &rid).unlink_installation(&ws, &owner).await?,
    ))
}

pub(super) async fn list_policies(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        serde_json::json!({ "policies": admin(&s, &rid).list_policies(&ws).await? }),
    ))
}

pub(super) async fn get_policy(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(admin(&s, &rid).get_policy(&ws, &name).await?))
}

pub(super) async fn put_policy(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path((ws, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<ApiData> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(format) = PolicyFormat::from_content_type(content_type) else {
        return Err(ApiError::unsupported_media_type(
            "send the policy as application/json or application/yaml",
        ));
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid(vec!["body: not UTF-8".to_owned()]))?;
    let (created, view) = admin(&s, &rid).put_policy(&ws, &name, text, format).await?;
    Ok(if created {
        ApiData::created(view)
    } else {
        ApiData::ok(view)
    })
}

pub(super) async fn delete_policy(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    Ok(ApiData::ok(
        admin(&s, &rid).delete_policy(&ws, &name).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokensQuery {
    state: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list_tokens(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
    query: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiData> {
    let Query(q) = query.map_err(|e| ApiError::invalid(vec![e.body_text()]))?;
    Ok(ApiData::ok(serde_json::json!({
        "tokens": admin(&s, &rid).list_tokens(&ws, q.state.as_deref(), q.limit).await?
    })))
}

pub(super) async fn admin_revoke(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
    AppJson(req): AppJson<AdminRevocation>,
) -> ApiResult<ApiData> {
    let revoked = revoke::admin_revoke(&s, &ws, req, &rid).await?;
    Ok(ApiData::ok(RevokeResponse { revoked }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(super) async fn audit_log(
    State(s): State<AppState>,
    _: Admin,
    RequestId(rid): RequestId,
    Path(ws): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiData> {
    let Query(q) = query.map_err(|e| ApiError::invalid(vec![e.body_text()]))?;
    Ok(ApiData::ok(
        admin(&s, &rid)
            .audit_page(&ws, q.limit, q.cursor.as_deref())
            .await?,
    ))
}
