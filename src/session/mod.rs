//! Broker sessions: ES256 JWTs the broker signs after an OIDC exchange, backed by a session row
//! (so they can be revoked at once, on every replica).
//!
//! The signing key is generated once, sealed and kept in the database, so sessions survive
//! restarts and every replica signs and verifies with the same key.

use crate::crypto::Sealer;
use crate::store::{SessionRecord, SigningKeyRecord, Store, StoreError};
use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What kind of caller a session was made for: the session JWT's `typ` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionType {
    /// Made from a GitHub Actions OIDC token; the same `typ` Atmos Pro gives its workspace
    /// GitHub Actions sessions. Only these may mint.
    #[serde(rename = "ws:gh:action")]
    GitHubActions,
    /// Made from another configured issuer's token.
    #[serde(rename = "ws:oidc")]
    Oidc,
}
/// Audience of session JWTs: only this broker accepts them.
pub const SESSION_AUDIENCE: &str = "sts-broker";
/// Clock-skew allowance between replicas when checking session `exp`/`nbf`: replicas share a
/// clock source in practice, so a few seconds suffice.
pub const SESSION_LEEWAY_SECONDS: u64 = 5;
/// How long after its `exp` a session may still revoke: tokens it minted live up to an hour past
/// the mint, and revoking is always safe, so logout after expiry must still work.
pub const REVOKE_GRACE_SECONDS: i64 = 2 * 3600;
/// Sealing context of the signing key (binds the sealed PEM to its purpose).
const KEY_SEAL_CONTEXT: &str = "session-signing-key";

/// Claims of a session JWT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionClaims {
    /// The broker's public URL.
    pub iss: String,
    /// [`SESSION_AUDIENCE`].
    pub aud: String,
    /// The OIDC `sub` of the caller.
    pub sub: String,
    /// Session id (also `jti`).
    pub sid: String,
    /// Same as `sid`.
    pub jti: String,
    /// Workspace the session is bound to.
    pub ws: String,
    /// Session kind.
    pub typ: SessionType,
    /// Issued at (epoch seconds).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
}

/// Why a session was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bad signature, wrong issuer/audience, malformed, or no such session.
    #[error("invalid session token")]
    Invalid,
    /// Past `exp`.
    #[error("session expired")]
    Expired,
    /// Ended by logout or an administrator.
    #[error("session revoked")]
    Revoked,
    /// The session row could not be read.
    #[error("session lookup failed")]
    Store(#[from] StoreError),
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
    store: &dyn Store,
    keys: &SessionKeys,
    token: &SecretString,
    purpose: Purpose,
) -> Result<Authenticated, SessionError> {
    let claims = verify_token(keys, token, purpose)?;
    let row = store.get_session(&claims.sid).await?;
    let session = check_row(&claims, row, purpose)?;
    Ok(Authenticated { claims, session })
}

/// The first half of [`authenticate`]: the JWT's signature, issuer, audience and expiry (with
/// the revoke grace for [`Purpose::Revoke`]). Reads nothing.
pub fn verify_token(
    keys: &SessionKeys,
    token: &SecretString,
    purpose: Purpose,
) -> Result<SessionClaims, SessionError> {
    let grace = (purpose == Purpose::Revoke).then_some(REVOKE_GRACE_SECONDS);
    keys.verify(token.expose_secret(), grace)
}

/// The second half of [`authenticate`]: what the session row (`row`, looked up by the verified
/// claims' `sid`) says about using the session for `purpose`.
pub fn check_row(
    claims: &SessionClaims,
    row: Option<SessionRecord>,
    purpose: Purpose,
) -> Result<SessionRecord, SessionError> {
    let Some(session) = row else {
        return Err(SessionError::Invalid);
    };
    if session.workspace_id != claims.ws {
        return Err(SessionError::Invalid);
    }
    if purpose == Purpose::Use {
        if session.revoked_at.is_some() {
            return Err(SessionError::Revoked);
        }
        if session.expires_at <= OffsetDateTime::now_utc() {
            return Err(SessionError::Expired);
        }
    }
    Ok(session)
}

/// Signs and verifies session JWTs.
pub struct SessionKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_jwk: serde_json::Value,
    issuer: String,
}

// The private key is a credential: only its id is shown.
debug_showing!(SessionKeys { kid });

impl SessionKeys {
    /// A fresh candidate key record (sealed private key + public JWK). The store decides whether
    /// it becomes the key (first writer wins).
    pub fn generate_record(sealer: &Sealer) -> SigningKeyRecord {
        let secret = p256::SecretKey::generate();
        #[expect(
            clippy::expect_used,
            reason = "PKCS#8 encoding of a fresh P-256 key cannot fail"
        )]
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8 pem");
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let mut jwk = EncodingKey::from_ec_pem(pem.as_bytes())
            .and_then(|key| Jwk::from_encoding_key(&key, Algorithm::ES256))
            .and_then(|jwk| Ok(serde_json::to_value(jwk)?))
            .unwrap_or_default();
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), kid.clone().into());
            obj.insert("alg".into(), "ES256".into());
            obj.insert("use".into(), "sig".into());
        }
        SigningKeyRecord {
            kid,
            algorithm: "ES256".to_owned(),
            private_key_sealed: sealer.seal(KEY_SEAL_CONTEXT, pem.as_str()),
            public_jwk: jwk,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    /// `record` sealed again under the current sealing key, when only a previous key (of a
    /// rotation) opens it; `None` when it needs nothing (or opens with no key at all, which
    /// [`from_record`](Self::from_record) reports).
    pub fn resealed(record: &SigningKeyRecord, sealer: &Sealer) -> Option<SigningKeyRecord> {
        if sealer.opens_with_current_key(KEY_SEAL_CONTEXT, &record.private_key_sealed) {
            return None;
        }
        let pem = sealer
            .open(KEY_SEAL_CONTEXT, &record.private_key_sealed)
            .ok()?;
        Some(SigningKeyRecord {
            private_key_sealed: sealer.seal(KEY_SEAL_CONTEXT, pem.expose_secret()),
            ..record.clone()
        })
    }

    /// Load from the stored record.
    pub fn from_record(
        record: &SigningKeyRecord,
        sealer: &Sealer,
        issuer: &str,
    ) -> anyhow::Result<Self> {
        let pem = sealer
            .open(KEY_SEAL_CONTEXT, &record.private_key_sealed)
            .map_err(|e| {
                anyhow::anyhow!(
                    "session signing key: {e} (was tokens.encryption_key changed without \
                     listing the old key in tokens.previous_encryption_key_files?)"
                )
            })?;
        let encoding = EncodingKey::from_ec_pem(pem.expose_secret().as_bytes())?;
        let x = record.public_jwk["x"].as_str().unwrap_or_default();
        let y = record.public_jwk["y"].as_str().unwrap_or_default();
        let decoding = DecodingKey::from_ec_components(x, y)?;
        Ok(Self {
            kid: record.kid.clone(),
            encoding,
            decoding,
            public_jwk: record.public_jwk.clone(),
            issuer: issuer.to_owned(),
        })
    }

    /// `{"keys": [...]}` for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.public_jwk] })
    }

    /// The issuer (`iss`) of sessions.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Sign a session JWT.
    pub fn sign(&self, claims: &SessionClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Verify signature, issuer and audience. With `allow_expired_for` set, a token up to that
    /// many seconds past `exp` is still accepted (for revoke-only calls).
    pub fn verify(
        &self,
        token: &str,
        allow_expired_for: Option<i64>,
    ) -> Result<SessionClaims, SessionError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[SESSION_AUDIENCE]);
        validation.leeway = SESSION_LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        if allow_expired_for.is_some() {
            validation.validate_exp = false;
        }
        let data = jsonwebtoken::decode::<SessionClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => SessionError::Expired,
                _ => SessionError::Invalid,
            })?;
        if let Some(grace) = allow_expired_for {
            if data.claims.exp + grace < OffsetDateTime::now_utc().unix_timestamp() {
                return Err(SessionError::Expired);
            }
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretBox;

    fn keys() -> (SessionKeys, Sealer) {
        let sealer = Sealer::new(&SecretBox::new(Box::new([3u8; 32])));
        let record = SessionKeys::generate_record(&sealer);
        (
            SessionKeys::from_record(&record, &sealer, "http://broker").unwrap(),
            sealer,
        )
    }

    fn claims(exp_in: i64) -> SessionClaims {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        SessionClaims {
            iss: "http://broker".into(),
            aud: SESSION_AUDIENCE.into(),
            sub: "repo:acme/infra:ref:refs/heads/main".into(),
            sid: "s1".into(),
            jti: "s1".into(),
            ws: "acme".into(),
            typ: SessionType::GitHubActions,
            iat: now,
            nbf: now,
            exp: now + exp_in,
        }
    }

    #[test]
    fn a_signed_session_verifies_and_round_trips() {
        let (k, _) = keys();
        let c = claims(600);
        assert_eq!(k.verify(&k.sign(&c).unwrap(), None).unwrap(), c);
    }

    #[test]
    fn an_expired_session_is_refused_unless_revoking_within_the_grace() {
        let (k, _) = keys();
        let token = k.sign(&claims(-600)).unwrap();
        assert!(matches!(
            k.verify(&token, None).unwrap_err(),
            SessionError::Expired
        ));
        assert!(k.verify(&token, Some(REVOKE_GRACE_SECONDS)).is_ok());
        let old = k.sign(&claims(-REVOKE_GRACE_SECONDS - 60)).unwrap();
        assert!(matches!(
            k.verify(&old, Some(REVOKE_GRACE_SECONDS)).unwrap_err(),
            SessionError::Expired
        ));
    }

    #[test]
    fn a_session_from_another_key_or_issuer_is_refused() {
        let (k1, _) = keys();
        let (k2, _) = keys();
        let token = k2.sign(&claims(600)).unwrap();
        assert!(matches!(
            k1.verify(&token, None).unwrap_err(),
            SessionError::Invalid
        ));
        let mut c = claims(600);
        c.iss = "http://other".into();
        assert!(matches!(
            k1.verify(&k1.sign(&c).unwrap(), None).unwrap_err(),
            SessionError::Invalid
        ));
    }

    #[test]
    fn debug_shows_the_key_id_and_no_key_material() {
        let (k, _) = keys();
        assert_eq!(
            format!("{k:?}"),
            format!("SessionKeys {{ kid: {:?}, .. }}", k.kid)
        );
    }

    #[test]
    fn a_signing_key_sealed_before_a_rotation_is_resealed_under_the_new_key() {
        let key = |byte: u8| secrecy::SecretBox::new(Box::new([byte; 32]));
        let old = Sealer::new(&key(1));
        let record = SessionKeys::generate_record(&old);
        assert!(SessionKeys::resealed(&record, &old).is_none());
        let rotated = Sealer::rotated(&key(2), &[key(1)]);
        let resealed = SessionKeys::resealed(&record, &rotated).unwrap();
        assert_eq!(resealed.kid, record.kid);
        // Once resealed, the new key alone opens it: the old one can go.
        let new_only = Sealer::new(&key(2));
        assert!(SessionKeys::from_record(&resealed, &new_only, "x").is_ok());
        let err = SessionKeys::from_record(&record, &new_only, "x").unwrap_err();
        assert!(
            err.to_string().contains("previous_encryption_key_files"),
            "{err}"
        );
    }

    #[test]
    fn session_types_keep_their_wire_names() {
        assert_eq!(
            serde_json::to_value(SessionType::GitHubActions).unwrap(),
            "ws:gh:action"
        );
        assert_eq!(serde_json::to_value(SessionType::Oidc).unwrap(), "ws:oidc");
    }

    #[test]
    fn the_stored_key_reloads_only_with_the_same_sealing_key() {
        let (_, sealer) = keys();
        let record = SessionKeys::generate_record(&sealer);
        let other = Sealer::new(&SecretBox::new(Box::new([4u8; 32])));
        assert!(SessionKeys::from_record(&record, &other, "x").is_err());
        let jwks = SessionKeys::from_record(&record, &sealer, "x")
            .unwrap()
            .jwks();
        assert_eq!(jwks["keys"][0]["kty"], "EC");
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        assert!(
            jwks["keys"][0].get("d").is_none(),
            "private part must not be published"
        );
    }
}
