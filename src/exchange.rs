//! The OIDC exchange (`POST /auth/github-oidc`) and session authentication for later calls.
//!
//! verify the OIDC token → workspace exists → record replay key + session + audit in one
//! transaction → sign the session JWT.

use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, Outcome};
use crate::http::error::{ApiError, ApiResult};
use crate::http::types::{ExchangeRequest, ExchangeResponse};
use crate::metrics::Metrics;
use crate::oidc::{Claims, VerifyError};
use crate::session::{
    SessionClaims, SessionError, GITHUB_ACTIONS_SESSION, REVOKE_GRACE_SECONDS, SESSION_AUDIENCE,
};
use crate::store::{JtiRecord, SessionRecord, StoreError};
use secrecy::{ExposeSecret as _, SecretString};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Longest OIDC token we read: GitHub's are ~1–2 KiB; anything near this is not a real token.
pub const MAX_OIDC_TOKEN_LEN: usize = 16 * 1024;
/// How long past the OIDC token's `exp` its replay key is kept: the verifier accepts tokens up to
/// its leeway past `exp`, so the key must outlive that window.
pub const REPLAY_KEY_SLACK_SECONDS: i64 = 300;
/// Claims copied into the audit actor (strings only). Never the raw token.
const AUDITED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "ref",
    "workflow_ref",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "actor",
    "event_name",
    "environment",
];

/// Is `id` a well-formed workspace id (`[a-z0-9][a-z0-9_-]{0,62}`)?
pub fn valid_workspace_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// The audit actor for OIDC claims.
pub fn actor_from_claims(claims: &serde_json::Value, session_id: Option<&str>) -> Actor {
    let claims = AUDITED_CLAIMS
        .iter()
        .filter_map(|k| {
            claims
                .get(*k)
                .and_then(|v| v.as_str())
                .map(|v| ((*k).to_owned(), v.to_owned()))
        })
        .collect();
    Actor {
        kind: "oidc".to_owned(),
        session_id: session_id.map(str::to_owned),
        claims,
    }
}

/// Is this the claim set of a GitHub Actions job?
fn is_github_actions(claims: &Claims) -> bool {
    ["repository", "repository_owner", "repository_owner_id"]
        .iter()
        .all(|k| claims.get(*k).is_some_and(serde_json::Value::is_string))
}

/// Write a denial/failure event; a failing audit write is logged loudly but does not change the
/// answer (nothing was handed out).
pub async fn audit_refusal(app: &App, event: &AuditEvent) {
    if let Err(e) = app.store.append_audit(event).await {
        tracing::error!(audit.id = %event.id, error = %e, "could not write audit event {}", event.id);
    }
}

/// Exchange an OIDC token for a session.
#[tracing::instrument(skip_all, fields(workspace.id = %req.workspace_id))]
pub async fn exchange(
    app: &App,
    req: ExchangeRequest,
    request_id: &str,
) -> ApiResult<ExchangeResponse> {
    let mut errors = Vec::new();
    if req.token.is_empty() || req.token.len() > MAX_OIDC_TOKEN_LEN {
        errors.push(format!(
            "token: must be a JWT of at most {MAX_OIDC_TOKEN_LEN} bytes"
        ));
    }
    if !valid_workspace_id(&req.workspace_id) {
        errors.push("workspaceId: must match [a-z0-9][a-z0-9_-]{0,62}".to_owned());
    }
    if !errors.is_empty() {
        Metrics::outcome(&app.metrics.exchanges, "denied", "invalid_request");
        return Err(ApiError::invalid(errors));
    }
    let mut audit = AuditEvent::new(AuditKind::Exchange, "exchange");
    audit.workspace_id = Some(req.workspace_id.clone());
    audit.request_id = Some(request_id.to_owned());

    let verified = match app.oidc.verify(&req.token).await {
        Ok(v) => v,
        Err(e) => {
            let reason = e.code();
            tracing::info!(oidc.reason = reason, "oidc token refused: {e}");
            audit.outcome = Outcome::Denied;
            audit.reason = Some(reason.to_owned());
            audit_refusal(app, &audit).await;
            Metrics::outcome(&app.metrics.exchanges, "denied", reason);
            app.metrics.deny(reason);
            return Err(match e {
                VerifyError::JwksUnavailable(_) => ApiError::unavailable(
                    "issuer_unavailable",
                    "the OIDC issuer's keys could not be fetched, try again later",
                    Some(anyhow::anyhow!("{e}")),
                ),
                _ => ApiError::unauthorized("invalid_token", "the OIDC token was not accepted"),
            });
        }
    };
    let claims_value = serde_json::Value::Object(verified.claims.clone());
    audit.actor = actor_from_claims(&claims_value, None);

    let Some(_workspace) = app.store.get_workspace(&req.workspace_id).await? else {
        audit.outcome = Outcome::Denied;
        audit.reason = Some("workspace_not_found".to_owned());
        audit_refusal(app, &audit).await;
        Metrics::outcome(&app.metrics.exchanges, "denied", "workspace_not_found");
        app.metrics.deny("workspace_not_found");
        return Err(ApiError::not_found(
            "workspace_not_found",
            "no such workspace",
        ));
    };

    let now = OffsetDateTime::now_utc();
    let ttl = Duration::seconds(i64::try_from(app.config.session.ttl_seconds).unwrap_or(3600));
    let session_id = format!("ses_{}", uuid::Uuid::new_v4().simple());
    let subject = verified
        .claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let typ = if is_github_actions(&verified.claims) {
        GITHUB_ACTIONS_SESSION
    } else {
        "ws:oidc"
    };
    let session = SessionRecord {
        id: session_id.clone(),
        workspace_id: req.workspace_id.clone(),
        issuer: verified.issuer.clone(),
        subject: subject.clone(),
        claims: claims_value,
        created_at: now,
        expires_at: now + ttl,
        revoked_at: None,
    };
    let jti = JtiRecord {
        issuer: verified.issuer.clone(),
        jti: verified.replay_key.clone(),
        expires_at: verified.expires_at + Duration::seconds(REPLAY_KEY_SLACK_SECONDS),
    };
    audit.actor.session_id = Some(session_id.clone());
    audit.outcome = Outcome::Success;
    audit.details = serde_json::json!({ "sessionExpiresAt": format_time(session.expires_at) });
    match app.store.record_exchange(&jti, &session, &audit).await {
        Ok(()) => {}
        Err(StoreError::Replay) => {
            audit.id = uuid::Uuid::now_v7().to_string();
            audit.outcome = Outcome::Denied;
            audit.reason = Some("token_replayed".to_owned());
            audit.actor.session_id = None;
            audit.details = serde_json::Value::Null;
            audit_refusal(app, &audit).await;
            Metrics::outcome(&app.metrics.exchanges, "denied", "token_replayed");
            app.metrics.deny("token_replayed");
            return Err(ApiError::unauthorized(
                "token_replayed",
                "the OIDC token was already used",
            ));
        }
        Err(e) => {
            Metrics::outcome(&app.metrics.exchanges, "failure", "database_error");
            return Err(e.into());
        }
    }
    let claims = SessionClaims {
        iss: app.sessions.issuer().to_owned(),
        aud: SESSION_AUDIENCE.to_owned(),
        sub: subject,
        sid: session_id.clone(),
        jti: session_id,
        ws: req.workspace_id,
        typ: typ.to_owned(),
        iat: now.unix_timestamp(),
        nbf: now.unix_timestamp(),
        exp: session.expires_at.unix_timestamp(),
    };
    let token = app
        .sessions
        .sign(&claims)
        .map_err(|e| ApiError::internal("session_signing_failed", e.into()))?;
    Metrics::outcome(&app.metrics.exchanges, "success", "");
    Ok(ExchangeResponse {
        token,
        expires_at: format_time(session.expires_at),
    })
}

/// RFC 3339 with `Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// What a session may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Minting: the session must be live.
    Use,
    /// Revoking: a revoked or recently expired session may still revoke (idempotent logout).
    Revoke,
}

/// An authenticated session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The JWT's claims.
    pub claims: SessionClaims,
    /// The session row.
    pub session: SessionRecord,
}

/// Check a session bearer token: signature, expiry, and the session row (revocation is seen by
/// every replica because it lives in the database).
pub async fn authenticate(
    app: &App,
    token: &SecretString,
    purpose: Purpose,
) -> ApiResult<Authenticated> {
    let grace = (purpose == Purpose::Revoke).then_some(REVOKE_GRACE_SECONDS);
    let claims = app
        .sessions
        .verify(token.expose_secret(), grace)
        .map_err(|e| {
            let (tag, msg) = match e {
                SessionError::Expired => ("session_expired", "the session has expired"),
                SessionError::Invalid => ("invalid_session", "the session token is not valid"),
            };
            app.metrics.deny(tag);
            ApiError::unauthorized(tag, msg)
        })?;
    let Some(session) = app.store.get_session(&claims.sid).await? else {
        app.metrics.deny("invalid_session");
        return Err(ApiError::unauthorized(
            "invalid_session",
            "the session token is not valid",
        ));
    };
    if session.workspace_id != claims.ws {
        app.metrics.deny("invalid_session");
        return Err(ApiError::unauthorized(
            "invalid_session",
            "the session token is not valid",
        ));
    }
    if purpose == Purpose::Use {
        if session.revoked_at.is_some() {
            app.metrics.deny("session_revoked");
            return Err(ApiError::unauthorized(
                "session_revoked",
                "the session was revoked",
            ));
        }
        if session.expires_at <= OffsetDateTime::now_utc() {
            app.metrics.deny("session_expired");
            return Err(ApiError::unauthorized(
                "session_expired",
                "the session has expired",
            ));
        }
    }
    Ok(Authenticated { claims, session })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_are_lowercase_slugs() {
        for ok in ["acme", "a", "acme-prod_1", "0x"] {
            assert!(valid_workspace_id(ok), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme/x",
            "acme prod",
            &"a".repeat(64),
            "ümlaut",
        ] {
            assert!(!valid_workspace_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_audit_actor_keeps_only_listed_string_claims() {
        let claims = serde_json::json!({
            "sub": "repo:acme/infra:ref:refs/heads/main", "repository": "acme/infra",
            "run_id": "42", "repository_id": 7, "secret_custom": "x"
        });
        let actor = actor_from_claims(&claims, Some("ses_1"));
        assert_eq!(actor.kind, "oidc");
        assert_eq!(
            actor.claims.get("repository").map(String::as_str),
            Some("acme/infra")
        );
        assert!(
            !actor.claims.contains_key("repository_id"),
            "numbers are not strings"
        );
        assert!(!actor.claims.contains_key("secret_custom"));
    }
}
