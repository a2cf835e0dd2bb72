//! Verification of GitHub Actions OIDC tokens (or any configured OIDC issuer's).
//!
//! Only configured issuers are ever fetched. Knows nothing about axum or the store: replay
//! protection is the caller's job, using [`VerifiedToken::replay_key`].

mod keystore;
pub mod unverified;

pub use keystore::JwksCache;

use time::OffsetDateTime;
use url::Url;

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
    // filled in by the implementation
}

impl OidcVerifier {
    /// Build from the configured issuers. Fails when an issuer URL is not https (or http on a
    /// loopback host with `allow_http`).
    pub fn new(issuers: Vec<IssuerSettings>) -> Result<Self, String> {
        let _ = issuers;
        unimplemented!("oidc verifier")
    }

    /// Verify signature and claims. Does not record the replay key.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let _ = token;
        unimplemented!("oidc verify")
    }
}
