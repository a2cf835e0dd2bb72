//! The OIDC exchange: verify the OIDC token (refusals here are counted, not audited) → workspace
//! exists → sign the session JWT → record replay key + session + audit in one transaction.

use super::{Audited, Counted, FlowError, FlowResult, Internal, Missing, Unauthenticated};
use crate::app::App;
use crate::audit::{format_time, Actor, AuditKind, Outcome};
use crate::ids::WorkspaceId;
use crate::metrics::Metrics;
use crate::oidc::{Claims, VerifiedToken, VerifyError, JWT_LEEWAY, MAX_TOKEN_BYTES};
use crate::session::{SessionClaims, SessionType, SESSION_AUDIENCE};
use crate::store::{JtiRecord, SessionRecord, StoreError};
use secrecy::{ExposeSecret as _, SecretString};
use time::{Duration, OffsetDateTime};

/// How long past the OIDC token's `exp` its replay key is kept: the verifier accepts tokens up to
/// its leeway past `exp`, so the key must outlive that window.
pub const REPLAY_KEY_SLACK_SECONDS: i64 = 300;

// A replay key that expired while its token was still accepted would let the token be used twice.
#[expect(
    clippy::cast_possible_wrap,
    reason = "JWT_LEEWAY is a small constant, far below i64::MAX"
)]
const _: () = assert!(
    REPLAY_KEY_SLACK_SECONDS >= JWT_LEEWAY as i64,
    "replay keys must outlive the JWT leeway"
);

/// What the caller sent.
#[derive(Debug)]
pub struct ExchangeInput {
    /// The OIDC JWT.
    pub token: SecretString,
    /// Workspace to bind the session to, unchecked.
    pub workspace_id: String,
}

/// A new session.
#[derive(Debug)]
pub struct NewSession {
    /// The signed session JWT.
    pub token: SecretString,
    /// When the session ends.
    pub expires_at: OffsetDateTime,
}

/// Is this the claim set of a GitHub Actions job?
fn is_github_actions(claims: &Claims) -> bool {
    ["repository", "repository_owner", "repository_owner_id"]
        .iter()
        .all(|k| claims.get(*k).is_some_and(serde_json::Value::is_string))
}

/// Check the input's shape: all problems at once.
fn validate(app: &App, input: &ExchangeInput) -> FlowResult<WorkspaceId> {
    let mut errors = Vec::new();
    let token = input.token.expose_secret();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        errors.push(format!(
            "token: must be a JWT of at most {MAX_TOKEN_BYTES} bytes"
        ));
    }
    let workspace = WorkspaceId::parse(&input.workspace_id)
        .map_err(|e| errors.push(format!("workspaceId: {e}")))
        .ok();
    match workspace {
        Some(workspace) if errors.is_empty() => Ok(workspace),
        _ => {
            Metrics::outcome(&app.metrics.exchanges, "denied", "invalid_request");
            Err(FlowError::InvalidRequest(errors))
        }
    }
}

/// Verify the OIDC token. A token that fails here names nobody the broker could verify, so its
/// refusal is counted but never audited (an unauthenticated caller must not be able to fill the
/// audit log).
async fn verify(app: &App, input: &ExchangeInput) -> FlowResult<VerifiedToken> {
    app.oidc
        .verify(input.token.expose_secret())
        .await
        .map_err(|e| {
            let reason = e.code();
            tracing::info!(oidc.reason = reason, "oidc token refused: {e}");
            let error = match e {
                VerifyError::JwksUnavailable(_) => FlowError::IssuerUnavailable(e),
                _ => FlowError::Unauthenticated(Unauthenticated::InvalidToken),
            };
            let outcome = match error.outcome() {
                Outcome::Failure => "failure",
                _ => "denied",
            };
            Metrics::outcome(&app.metrics.exchanges, outcome, reason);
            app.metrics.deny(reason);
            error
        })
}

/// Exchange an OIDC token for a session. Every decision after the token verified writes exactly
/// one audit event, by [`Audited::finish`].
#[tracing::instrument(skip_all, fields(workspace.id = %input.workspace_id))]
pub async fn exchange(app: &App, input: ExchangeInput, request_id: &str) -> FlowResult<NewSession> {
    let workspace = validate(app, &input)?;
    let verified = verify(app, &input).await?;
    let mut audited = Audited::new(
        AuditKind::Exchange,
        "exchange",
        request_id,
        Counted::Exchanges,
    );
    audited.event.workspace_id = Some(workspace.as_str().to_owned());
    let result = exchange_verified(app, &workspace, verified, &mut audited).await;
    audited.finish(app, result).await
}

/// The exchange of a verified token: the inner function of [`exchange`].
async fn exchange_verified(
    app: &App,
    workspace: &WorkspaceId,
    verified: VerifiedToken,
    audited: &mut Audited,
) -> FlowResult<NewSession> {
    let claims_value = serde_json::Value::Object(verified.claims.clone());
    audited.event.actor = Actor::from_claims(&claims_value, None);

    if app.store.get_workspace(workspace.as_str()).await?.is_none() {
        return Err(FlowError::NotFound(Missing::Workspace));
    }

    let now = OffsetDateTime::now_utc();
    let session_id = format!("ses_{}", uuid::Uuid::new_v4().simple());
    let subject = verified
        .claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let typ = if is_github_actions(&verified.claims) {
        SessionType::GitHubActions
    } else {
        SessionType::Oidc
    };
    let session = SessionRecord {
        id: session_id.clone(),
        workspace_id: workspace.as_str().to_owned(),
        issuer: verified.issuer.clone(),
        subject: subject.clone(),
        claims: claims_value,
        created_at: now,
        expires_at: now + app.config.session.ttl(),
        revoked_at: None,
    };
    let jti = JtiRecord {
        issuer: verified.issuer.clone(),
        jti: verified.replay_key.clone(),
        expires_at: verified.expires_at + Duration::seconds(REPLAY_KEY_SLACK_SECONDS),
    };
    // Signed before anything is stored: a signing failure then leaves no session and a failure
    // event, rather than a success event for a session nobody got.
    let claims = SessionClaims {
        iss: app.sessions.issuer().to_owned(),
        aud: SESSION_AUDIENCE.to_owned(),
        sub: subject,
        sid: session_id.clone(),
        jti: session_id.clone(),
        ws: workspace.as_str().to_owned(),
        typ,
        iat: now.unix_timestamp(),
        nbf: now.unix_timestamp(),
        exp: session.expires_at.unix_timestamp(),
    };
    let token = app
        .sessions
        .sign(&claims)
        .map_err(|e| FlowError::Internal {
            kind: Internal::SessionSigning,
            source: e.into(),
        })?;
    let mut success = audited.event.clone();
    success.actor.session_id = Some(session_id);
    success.outcome = Outcome::Success;
    success.details = serde_json::json!({ "sessionExpiresAt": format_time(session.expires_at) });
    match app.store.record_exchange(&jti, &session, &success).await {
        Ok(()) => audited.written_as(success),
        // Nothing of the transaction was written: `finish` records the refusal.
        Err(StoreError::Replay) => return Err(FlowError::Replayed),
        Err(e) => return Err(e.into()),
    }
    Ok(NewSession {
        token: SecretString::from(token),
        expires_at: session.expires_at,
    })
}
