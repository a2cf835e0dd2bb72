//! Handlers: extract → parse the path → call the flow → wrap the result. Nothing else.

use super::error::{ApiData, ApiError, ApiResult};
use super::extract::{AdminCall, AppJson, BearerToken, RequestId};
use super::types::admin::{
    AdminRevocation, AuditPageView, AuditQuery, CreateWorkspace, Deleted, InstallationList,
    InstallationView, PatchWorkspace, PolicyList, PolicyView, TokenList, TokenView, TokensQuery,
    Unlinked, WorkspaceDeleted, WorkspaceList, WorkspaceView,
};
use super::types::policy::{
    ExplainRequest, ExplainView, RollbackRequest, VersionList, VersionQuery,
};
use super::types::{ExchangeRequest, MintRequest, MintResponse, RevokeRequest, RevokeResponse};
use super::AppState;
use crate::flow::admin::NewWorkspace;
use crate::flow::revoke::Revocation;
use crate::flow::{self, FlowError, Missing};
use crate::ids::{InvalidId, PolicyName, WorkspaceId};
use crate::policy::PolicyFormat;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

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
    // Publishing the keys as last read is still right (they verify what this replica accepts),
    // so a failed refresh is only logged.
    if let Err(e) = state.sessions.refresh_if_stale().await {
        tracing::warn!(error = %e, "could not refresh the session signing keys");
    }
    axum::Json(state.sessions.jwks())
}

/// A workspace named in a path. A malformed id names no workspace that can exist, so it is
/// answered as one that does not.
fn workspace(raw: &str) -> Result<WorkspaceId, FlowError> {
    WorkspaceId::parse(raw).map_err(|_| FlowError::NotFound(Missing::Workspace))
}

/// A policy named in a path. A malformed name is refused (by `malformed`) only after the
/// workspace is known to exist, as for a well-formed name, so both orders answer the same.
async fn policy_name(
    admin: &flow::admin::Admin<'_>,
    ws: &WorkspaceId,
    raw: &str,
    malformed: impl FnOnce(InvalidId) -> FlowError,
) -> Result<PolicyName, FlowError> {
    match PolicyName::parse(raw) {
        Ok(name) => Ok(name),
        Err(e) => {
            admin.get_workspace(ws).await?;
            Err(malformed(e))
        }
    }
}

/// The workspace and policy named in the path of a call on an existing policy: a malformed
/// name is a policy that does not exist.
async fn existing_policy(
    admin: &flow::admin::Admin<'_>,
    ws: &str,
    name: &str,
) -> Result<(WorkspaceId, PolicyName), FlowError> {
    let ws = workspace(ws)?;
    let name = policy_name(admin, &ws, name, |_| FlowError::NotFound(Missing::Policy)).await?;
    Ok((ws, name))
}

/// An optional JSON body: Atmos always sends one, but an empty body means "defaults", as the
/// contract allows.
fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    super::extract::ensure_object(body)?;
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(vec![format!("body: {e}")]))
}

pub(super) async fn exchange_token(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    AppJson(req): AppJson<ExchangeRequest>,
) -> ApiResult<ApiData> {
    let session = flow::exchange::exchange(&state, req.into(), &rid).await?;
    Ok(ApiData::ok(super::types::ExchangeResponse::from(session)))
}

pub(super) async fn mint_tokens(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    BearerToken(token): BearerToken,
    body: Bytes,
) -> ApiResult<ApiData> {
    let input = optional_json::<MintRequest>(&body)
        .map(Into::into)
        .map_err(refused_body);
    let minted = flow::mint::mint(&state.0, &token, input, &rid).await?;
    Ok(ApiData::ok(MintResponse::from(minted)))
}

pub(super) async fn revoke_tokens(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    BearerToken(token): BearerToken,
    body: Bytes,
) -> ApiResult<ApiData> {
    let ids = optional_json::<RevokeRequest>(&body)
        .map(|req| req.ids)
        .map_err(refused_body);
    let revoked = flow::revoke::revoke_session_tokens(&state, &token, ids, &rid).await?;
    Ok(ApiData::ok(RevokeResponse { revoked }))
}

pub(super) async fn end_session(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    BearerToken(token): BearerToken,
) -> ApiResult<ApiData> {
    let revoked = flow::revoke::end_session(&state, &token, &rid).await?;
    Ok(ApiData::ok(RevokeResponse { revoked }))
}

pub(super) async fn list_workspaces(call: AdminCall) -> ApiResult<ApiData> {
    let workspaces = call.flow().list_workspaces().await?;
    Ok(ApiData::ok(WorkspaceList {
        workspaces: workspaces.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn create_workspace(
    call: AdminCall,
    AppJson(req): AppJson<CreateWorkspace>,
) -> ApiResult<ApiData> {
    let new = NewWorkspace::try_from(req)?;
    let created = call.flow().create_workspace(new).await?;
    Ok(ApiData::created(WorkspaceView::from(created)))
}

pub(super) async fn get_workspace(call: AdminCall, Path(ws): Path<String>) -> ApiResult<ApiData> {
    let found = call.flow().get_workspace(&workspace(&ws)?).await?;
    Ok(ApiData::ok(WorkspaceView::from(found)))
}

pub(super) async fn patch_workspace(
    call: AdminCall,
    Path(ws): Path<String>,
    AppJson(req): AppJson<PatchWorkspace>,
) -> ApiResult<ApiData> {
    let updated = call
        .flow()
        .patch_workspace(&workspace(&ws)?, req.sts_enabled)
        .await?;
    Ok(ApiData::ok(WorkspaceView::from(updated)))
}

pub(super) async fn delete_workspace(
    call: AdminCall,
    Path(ws): Path<String>,
) -> ApiResult<ApiData> {
    let revoked = call.flow().delete_workspace(&workspace(&ws)?).await?;
    Ok(ApiData::ok(WorkspaceDeleted {
        deleted: true,
        revoked,
    }))
}

pub(super) async fn list_installations(
    call: AdminCall,
    Path(ws): Path<String>,
) -> ApiResult<ApiData> {
    let links = call.flow().list_installations(&workspace(&ws)?).await?;
    Ok(ApiData::ok(InstallationList {
        installations: links.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn link_installation(
    call: AdminCall,
    Path((ws, owner)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    let link = call
        .flow()
        .link_installation(&workspace(&ws)?, &owner)
        .await?;
    Ok(ApiData::ok(InstallationView::from(link)))
}

pub(super) async fn unlink_installation(
    call: AdminCall,
    Path((ws, owner)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    call.flow()
        .unlink_installation(&workspace(&ws)?, &owner)
        .await?;
    Ok(ApiData::ok(Unlinked { unlinked: true }))
}

pub(super) async fn list_policies(call: AdminCall, Path(ws): Path<String>) -> ApiResult<ApiData> {
    let policies = call.flow().list_policies(&workspace(&ws)?).await?;
    Ok(ApiData::ok(PolicyList {
        policies: policies.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn get_policy(
    call: AdminCall,
    Path((ws, name)): Path<(String, String)>,
    query: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiData> {
    let Query(q) = query.map_err(|e| ApiError::invalid(vec![e.body_text()]))?;
    let admin = call.flow();
    let (ws, name) = existing_policy(&admin, &ws, &name).await?;
    let policy = match q.version {
        None => admin.get_policy(&ws, &name).await?,
        Some(version) => admin.policy_version(&ws, &name, version).await?,
    };
    Ok(ApiData::ok(PolicyView::from(policy)))
}

pub(super) async fn policy_versions(
    call: AdminCall,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    let admin = call.flow();
    let (ws, name) = existing_policy(&admin, &ws, &name).await?;
    let versions = admin.policy_versions(&ws, &name).await?;
    Ok(ApiData::ok(VersionList::from(versions)))
}

pub(super) async fn rollback_policy(
    call: AdminCall,
    Path((ws, name)): Path<(String, String)>,
    AppJson(req): AppJson<RollbackRequest>,
) -> ApiResult<ApiData> {
    let admin = call.flow();
    let (ws, name) = existing_policy(&admin, &ws, &name).await?;
    let put = admin.rollback_policy(&ws, &name, req.version).await?;
    Ok(ApiData::ok(PolicyView::from(put)))
}

pub(super) async fn put_policy(
    call: AdminCall,
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
    let admin = call.flow();
    let ws = workspace(&ws)?;
    let name = policy_name(&admin, &ws, &name, |e| {
        FlowError::invalid(format!("name: {e}"))
    })
    .await?;
    let put = admin.put_policy(&ws, &name, text, format).await?;
    let created = put.created;
    let view = PolicyView::from(put);
    Ok(if created {
        ApiData::created(view)
    } else {
        ApiData::ok(view)
    })
}

pub(super) async fn delete_policy(
    call: AdminCall,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<ApiData> {
    let admin = call.flow();
    let (ws, name) = existing_policy(&admin, &ws, &name).await?;
    admin.delete_policy(&ws, &name).await?;
    Ok(ApiData::ok(Deleted { deleted: true }))
}

pub(super) async fn explain(
    call: AdminCall,
    Path(ws): Path<String>,
    AppJson(req): AppJson<ExplainRequest>,
) -> ApiResult<ApiData> {
    let input = req.try_into()?;
    let explanation = flow::mint::explain::explain(call.state(), &workspace(&ws)?, input).await?;
    Ok(ApiData::ok(ExplainView::from(explanation)))
}

pub(super) async fn list_tokens(
    call: AdminCall,
    Path(ws): Path<String>,
    query: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiData> {
    let Query(q) = query.map_err(|e| ApiError::invalid(vec![e.body_text()]))?;
    let listing = call
        .flow()
        .list_tokens(&workspace(&ws)?, q.state.as_deref(), q.limit)
        .await?;
    Ok(ApiData::ok(TokenList {
        tokens: TokenView::list(listing),
    }))
}

pub(super) async fn admin_revoke(
    call: AdminCall,
    Path(ws): Path<String>,
    AppJson(req): AppJson<AdminRevocation>,
) -> ApiResult<ApiData> {
    // The selectors are checked before the workspace, as the contract orders the answers.
    let revocation = Revocation::try_from(req)?;
    let revoked = flow::revoke::admin_revoke(
        call.state(),
        &workspace(&ws)?,
        revocation,
        call.request_id(),
    )
    .await?;
    Ok(ApiData::ok(RevokeResponse { revoked }))
}

pub(super) async fn audit_log(
    call: AdminCall,
    Path(ws): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiData> {
    let Query(q) = query.map_err(|e| ApiError::invalid(vec![e.body_text()]))?;
    let page = call
        .flow()
        .audit_page(&workspace(&ws)?, q.limit, q.cursor.as_deref())
        .await?;
    Ok(ApiData::ok(AuditPageView::from(page)))
}

/// A body that did not parse, handed to a flow that refuses it only once it knows (and audits)
/// who sent it.
fn refused_body(e: ApiError) -> FlowError {
    FlowError::InvalidRequest(e.validation_errors)
}
