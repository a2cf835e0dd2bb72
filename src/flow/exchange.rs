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

/// Count a refusal of `reason` that the audit log does not see.
fn count_refusal(app: &App, reason: &'static str) {
    Metrics::outcome(&app.metrics.exchanges, "denied", reason);
    app.metrics.deny(reason);
}

/// Did `OidcVerifier::verify` refuse the token before it had verified its signature?
///
/// Before that point the token proves nothing: anyone can send any bytes, naming any workspace,
/// as fast as they like. Such a refusal is counted and logged at a bounded rate, and is NOT
/// written to the workspace's audit log, or anyone could fill any workspace's log (and the
/// database). From the signature on, the caller holds a token a trusted issuer signed, and every
/// decision is audited, once.
///
/// `verify` checks, in this order: the token's shape and header (`Malformed`,
/// `AlgorithmNotAllowed`); the unverified `iss`, only to pick an issuer (`MissingClaim("iss")`,
/// `UnknownIssuer`); that issuer's keys (`JwksUnavailable`, `UnknownKey`, `KeyTypeMismatch`);
/// then `jsonwebtoken::decode`, which checks the signature (`BadSignature`) before it validates
/// a single claim; then the claims (`Expired`, `NotYetValid`, `AudienceMismatch`, a missing
/// `exp`/`aud`/`sub`/`nbf`) and our own `iat` check (`IssuedInFuture`, a missing `iat`). So a
/// missing claim is on the far side of the signature except `iss`, which `verify` needs before
/// it can find a key. The one blur: `Malformed` is also what `jsonwebtoken` reports for a claim
/// of the wrong JSON type in a token whose signature it verified; only a trusted issuer could
/// sign such a token, and it is treated as before the signature (counted, not audited).
///
/// An exhaustive match: a new `VerifyError` variant must be placed on one side or the other.
fn refused_before_signature(e: &VerifyError) -> bool {
    match e {
        VerifyError::Malformed
        | VerifyError::AlgorithmNotAllowed(_)
        | VerifyError::UnknownIssuer
        | VerifyError::JwksUnavailable(_)
        | VerifyError::UnknownKey
        | VerifyError::KeyTypeMismatch
        | VerifyError::BadSignature => true,
        VerifyError::MissingClaim(claim) => *claim == "iss",
        VerifyError::Expired
        | VerifyError::NotYetValid
        | VerifyError::IssuedInFuture
        | VerifyError::AudienceMismatch => false,
    }
}

/// A refusal of the OIDC token after its signature verified: the error, and the verifier's
/// finer reason for the audit event and the counters.
type SignedRefusal = (FlowError, &'static str);

/// Verify the OIDC token. A refusal before its signature verified is counted, logged within the
/// budget and answered here (`Err`); one after it is handed back (`Ok(Err)`) to be audited.
async fn verify(
    app: &App,
    input: &ExchangeInput,
) -> FlowResult<Result<VerifiedToken, SignedRefusal>> {
    let e = match app.oidc.verify(input.token.expose_secret()).await {
        Ok(verified) => return Ok(Ok(verified)),
        Err(e) => e,
    };
    let reason = e.code();
    let before_signature = refused_before_signature(&e);
    // Within the budget either way: one genuine expired token can be sent again and again. The
    // code only: the message of some refusals holds bytes of the token.
    if let Some(suppressed) = app.refusal_log.admit() {
        tracing::info!(
            oidc.reason = reason,
            oidc.signature_verified = !before_signature,
            suppressed,
            "oidc token refused"
        );
    }
    let error = match e {
        VerifyError::JwksUnavailable(_) => FlowError::IssuerUnavailable(e),
        _ => FlowError::Unauthenticated(Unauthenticated::InvalidToken),
    };
    if before_signature {
        count_refusal(app, reason);
        return Err(error);
    }
    Ok(Err((error, reason)))
}

/// Exchange an OIDC token for a session. Every decision from the token's signature on writes
/// exactly one audit event, by [`Audited::finish`].
// The workspace id is recorded once it is valid: until then it is whatever the caller sent.
#[tracing::instrument(skip_all, fields(workspace.id = tracing::field::Empty))]
pub async fn exchange(app: &App, input: ExchangeInput, request_id: &str) -> FlowResult<NewSession> {
    let workspace = validate(app, &input)?;
    tracing::Span::current().record("workspace.id", workspace.as_str());
    let verified = verify(app, &input).await?;
    let mut audited = Audited::new(
        AuditKind::Exchange,
        "exchange",
        request_id,
        Counted::Exchanges,
    )
    .in_workspace(&workspace);
    let result = match verified {
        Ok(verified) => exchange_verified(app, &workspace, verified, &mut audited).await,
        Err((error, reason)) => {
            audited.because(reason);
            Err(error)
        }
    };
    audited.finish(app, result).await
}

/// The exchange of a verified token: the inner function of [`exchange`].
async fn exchange_verified(
    app: &App,
    workspace: &WorkspaceId,
    verified: VerifiedToken,
    audited: &mut Audited,
) -> FlowResult<NewSession> {
    let now = OffsetDateTime::now_utc();
    // Time-ordered (UUIDv7, RFC 9562 §5.7): new ids land at the end of the sessions index
    // instead of on a random page of it, which each commit would then write again.
    let session_id = format!("ses_{}", uuid::Uuid::now_v7().simple());
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
    let jti = JtiRecord {
        issuer: verified.issuer.clone(),
        jti: verified.replay_key,
        expires_at: verified.expires_at + Duration::seconds(REPLAY_KEY_SLACK_SECONDS),
    };
    // The claims move into the session record: no copy of the map.
    let claims_value = serde_json::Value::Object(verified.claims);
    audited.event.actor = Actor::from_claims(&claims_value, None);
    let session = SessionRecord {
        id: session_id.clone(),
        workspace_id: workspace.as_str().to_owned(),
        issuer: verified.issuer,
        subject: subject.clone(),
        claims: claims_value,
        created_at: now,
        expires_at: now + app.config.session.ttl(),
        revoked_at: None,
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
    // A rotation made elsewhere is followed before signing, so no replica signs with a
    // deactivated key for longer than the refresh period (which the key's retention counts on).
    app.sessions.refresh_if_stale().await?;
    let token = app
        .sessions
        .sign(&claims)
        .map_err(|e| FlowError::Internal {
            kind: Internal::SessionSigning,
            source: e,
        })?;
    let mut success = audited.event.clone();
    success.actor.session_id = Some(session_id);
    success.outcome = Outcome::Success;
    success.details = serde_json::json!({ "sessionExpiresAt": format_time(session.expires_at) });
    match app.store.record_exchange(&jti, &session, &success).await {
        Ok(()) => audited.written_as(success),
        // Nothing of the transaction was written: `finish` records the refusal.
        Err(StoreError::Replay) => return Err(FlowError::Replayed),
        // The session's foreign key checks that the workspace exists, in the transaction that
        // writes it: no separate read, and no deletion can slip in between.
        Err(StoreError::NotFound(_)) => return Err(FlowError::NotFound(Missing::Workspace)),
        Err(e) => return Err(e.into()),
    }
    Ok(NewSession {
        token: SecretString::from(token),
        expires_at: session.expires_at,
    })
}
