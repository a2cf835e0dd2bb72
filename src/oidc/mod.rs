//! Verification of GitHub Actions OIDC tokens (or any configured OIDC issuer's).
//!
//! Only configured issuers are ever fetched. Knows nothing about axum or the store: replay
//! protection is the caller's job, using [`VerifiedToken::replay_key`].

mod keystore;
#[cfg(test)]
mod tests;
pub mod unverified;

pub use unverified::MAX_TOKEN_BYTES;

pub use keystore::{
    JwksCache, JWKS_CACHE_TTL, JWKS_FAILURE_BACKOFF, JWKS_REFRESH_COOLDOWN, MAX_FETCH_BYTES,
    MIN_RSA_MODULUS_BITS,
};

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use url::Url;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Runners' and the broker's clocks
/// drift, and GitHub's tokens are valid for minutes only, so a minute is generous yet small. Keep
/// replay-guard records at least `exp + JWT_LEEWAY`, or a token could be replayed in the leeway
/// after its record expired.
pub const JWT_LEEWAY: u64 = 60;

/// The only signature algorithm accepted. GitHub signs Actions tokens with RS256 only; pinning it
/// shuts out `alg: none`, HMAC-with-the-public-key confusion and algorithm downgrades.
pub const ALLOWED_ALGORITHM: Algorithm = Algorithm::RS256;

/// Time to establish a connection to an issuer. Verification waits on it, so it stays short.
pub const FETCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Total time for one issuer request, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed per issuer request; only to the origin of the URL first requested, so a
/// redirect cannot turn a configured issuer into a fetch of an arbitrary host.
pub const MAX_FETCH_REDIRECTS: usize = 3;

/// Claims jsonwebtoken must find before it validates anything (`iat` is checked by us: the crate
/// ignores it).
const REQUIRED_CLAIMS: [&str; 4] = ["exp", "iss", "aud", "sub"];

/// Verified claims of an OIDC token: a JSON object.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// One trusted issuer, from `[[oidc.issuers]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// JWKS URL; `None` = OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<Url>,
    /// Allow `http://` for issuer and JWKS URLs; honoured only when the host is loopback.
    pub allow_http: bool,
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The configured issuer it matched.
    pub issuer: String,
    /// Every claim of the payload.
    pub claims: Claims,
    /// `jti`, or `sha256:<hex>` of the raw token when it has none.
    pub replay_key: String,
    /// The token's `exp`.
    pub expires_at: OffsetDateTime,
}

/// Why a token was refused. Callers see a generic message; the variant goes to logs and audit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// `iss` is not a configured issuer.
    #[error("issuer not trusted")]
    UnknownIssuer,
    /// Header `alg` is not RS256 (`none`, HS256, ES256…).
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// No key with the header's `kid`, even after a refresh.
    #[error("unknown signing key")]
    UnknownKey,
    /// The key for `kid` is not an RSA signing key usable with RS256.
    #[error("key type does not fit the algorithm")]
    KeyTypeMismatch,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `aud` is not among the issuer's audiences.
    #[error("audience not accepted")]
    AudienceMismatch,
    /// A required claim (`iss`, `aud`, `exp`, `iat`, `sub`) is absent or of the wrong type.
    #[error("missing or invalid claim `{0}`")]
    MissingClaim(&'static str),
    /// The issuer's JWKS could not be fetched or parsed.
    #[error("issuer keys unavailable")]
    JwksUnavailable(String),
}

impl VerifyError {
    /// Stable snake_case code, for audit reasons and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::UnknownIssuer => "issuer_not_trusted",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_signing_key",
            Self::KeyTypeMismatch => "key_type_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::AudienceMismatch => "audience_mismatch",
            Self::MissingClaim(_) => "missing_claim",
            Self::JwksUnavailable(_) => "jwks_unavailable",
        }
    }
}

/// Verifies OIDC tokens against the configured issuers' JWKS.
pub struct OidcVerifier {
    issuers: HashMap<String, IssuerSettings>,
    keys: JwksCache,
}

debug_showing!(OidcVerifier { keys });

impl OidcVerifier {
    /// Build from the configured issuers. Fails when an issuer URL is not https (or http on a
    /// loopback host with `allow_http`).
    pub fn new(issuers: Vec<IssuerSettings>) -> Result<Self, String> {
        for settings in &issuers {
            let name = &settings.issuer;
            let url =
                Url::parse(name).map_err(|e| format!("oidc issuer `{name}`: invalid url: {e}"))?;
            crate::config::check_fetch_url(&url, settings.allow_http)
                .map_err(|e| format!("oidc issuer `{name}`: issuer url {e}"))?;
            if let Some(jwks_url) = &settings.jwks_url {
                crate::config::check_fetch_url(jwks_url, settings.allow_http)
                    .map_err(|e| format!("oidc issuer `{name}`: jwks_url {e}"))?;
            }
            if settings.audiences.iter().all(|aud| aud.is_empty()) {
                return Err(format!("oidc issuer `{name}`: no audiences configured"));
            }
        }
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(FETCH_CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .user_agent(crate::config::USER_AGENT)
            .redirect(same_origin_redirects())
            .build()
            .map_err(|e| format!("oidc http client: {e}"))?;
        let keys = JwksCache::new(client, &issuers)?;
        let issuers = issuers
            .into_iter()
            .map(|settings| (settings.issuer.clone(), settings))
            .collect();
        Ok(Self { issuers, keys })
    }

    /// Verify signature and claims. Does not record the replay key.
    #[tracing::instrument(skip_all, fields(oidc.issuer = tracing::field::Empty))]
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let unverified = unverified::decode(token)?;
        // Before any lookup or network call: nothing but RS256 is ever worth a fetch.
        if unverified.header.alg.parse::<Algorithm>().ok() != Some(ALLOWED_ALGORITHM) {
            return Err(VerifyError::AlgorithmNotAllowed(unverified.header.alg));
        }
        let Some(claimed_issuer) = unverified.issuer else {
            return Err(VerifyError::MissingClaim("iss"));
        };
        // Only configured issuers are looked up, so an unknown one costs no fetch.
        let Some(settings) = self.issuers.get(&claimed_issuer) else {
            return Err(VerifyError::UnknownIssuer);
        };
        tracing::Span::current().record("oidc.issuer", settings.issuer.as_str());
        let key = self
            .keys
            .decoding_key(&settings.issuer, unverified.header.kid.as_deref())
            .await?;

        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation(settings))
            .map_err(map_jwt_error)?;
        let claims = data.claims;

        let Some(iat) = claims.get("iat").and_then(numeric_date) else {
            return Err(VerifyError::MissingClaim("iat"));
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if iat > now.saturating_add(leeway_secs()) {
            return Err(VerifyError::IssuedInFuture);
        }
        let expires_at = claims
            .get("exp")
            .and_then(numeric_date)
            .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp).ok())
            .ok_or(VerifyError::MissingClaim("exp"))?;

        let replay_key = match claims.get("jti").and_then(serde_json::Value::as_str) {
            Some(jti) if !jti.is_empty() => jti.to_owned(),
            _ => format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes()))),
        };
        Ok(VerifiedToken {
            issuer: settings.issuer.clone(),
            claims,
            replay_key,
            expires_at,
        })
    }
}

/// Explicit validation, never `Validation::default()` (which would allow HS256).
fn validation(settings: &IssuerSettings) -> Validation {
    let mut validation = Validation::new(ALLOWED_ALGORITHM);
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&settings.audiences);
    validation.set_required_spec_claims(&REQUIRED_CLAIMS);
    validation.leeway = JWT_LEEWAY;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation
}

fn leeway_secs() -> i64 {
    i64::try_from(JWT_LEEWAY).unwrap_or(i64::MAX)
}

/// A JWT NumericDate (RFC 7519 §2): seconds, possibly fractional; truncated to whole seconds.
fn numeric_date(value: &serde_json::Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

fn map_jwt_error(err: jsonwebtoken::errors::Error) -> VerifyError {
    match err.into_kind() {
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidAudience => VerifyError::AudienceMismatch,
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::InvalidIssuer => VerifyError::UnknownIssuer,
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => VerifyError::KeyTypeMismatch,
        ErrorKind::MissingRequiredClaim(claim) => VerifyError::MissingClaim(match claim.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            "nbf" => "nbf",
            _ => "unknown",
        }),
        _ => VerifyError::Malformed,
    }
}

/// Follow at most [`MAX_FETCH_REDIRECTS`] redirects, each to the origin (scheme, host, port) of
/// the URL first requested; anything else stops and surfaces as a non-2xx answer.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        // `previous` holds the first URL too, so it has one entry more than redirects taken.
        if attempt.previous().len() > MAX_FETCH_REDIRECTS
            || attempt.url().origin() != first.origin()
        {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}
