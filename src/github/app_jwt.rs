//! App JWTs (RS256, `iat` = now - 60 s, `exp` <= 10 min), reused until near expiry.
//!
//! GitHub: "Authenticating as a GitHub App" — the JWT is signed with the App's private key, `iss`
//! is the App id (or client id), `iat` should be backdated 60 s against clock drift and `exp` may
//! be at most 10 minutes after the real issue time.

use super::GitHubError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret as _, SecretString};
use std::sync::{Mutex, PoisonError};
use time::{Duration, OffsetDateTime};

/// How far `iat` is backdated: GitHub recommends 60 s so that a server clock slightly ahead of
/// ours does not see the JWT as issued in the future.
pub(crate) const APP_JWT_BACKDATE: Duration = Duration::seconds(60);

/// Lifetime counted from now: GitHub refuses `exp` more than 10 minutes ahead; 9 minutes leaves a
/// minute of room for our clock running behind GitHub's.
pub(crate) const APP_JWT_LIFETIME: Duration = Duration::minutes(9);

/// A cached JWT is replaced once less than this remains, so a request in flight (and its retries)
/// never carries a JWT that expires on the way.
pub(crate) const APP_JWT_REFRESH_MARGIN: Duration = Duration::seconds(60);

/// Claims GitHub reads from an App JWT.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AppJwtClaims {
    /// Issued at (backdated).
    pub(crate) iat: i64,
    /// Expiry.
    pub(crate) exp: i64,
    /// App id or client id.
    pub(crate) iss: String,
}

/// A signed JWT and when it stops being reusable.
struct CachedJwt {
    jwt: SecretString,
    expires_at: OffsetDateTime,
}

/// Signs App JWTs and reuses one until [`APP_JWT_REFRESH_MARGIN`] before it expires.
pub(crate) struct AppJwtSigner {
    app_id: String,
    key: EncodingKey,
    cached: Mutex<Option<CachedJwt>>,
}

// The key and the cached JWT are credentials: only the app id is shown.
debug_showing!(AppJwtSigner { app_id });

impl AppJwtSigner {
    /// Parse the PEM (PKCS#1 or PKCS#8) and sign one JWT right away, so that a key that parses
    /// but cannot sign (truncated DER, wrong key type) fails at startup rather than at the first
    /// mint.
    pub(crate) fn new(app_id: &str, private_key_pem: &SecretString) -> Result<Self, GitHubError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
            .map_err(GitHubError::Signing)?;
        let signer = Self {
            app_id: app_id.to_owned(),
            key,
            cached: Mutex::new(None),
        };
        signer.jwt_at(OffsetDateTime::now_utc())?;
        Ok(signer)
    }

    /// The App id this signer puts in `iss`.
    pub(crate) fn app_id(&self) -> &str {
        &self.app_id
    }

    /// A JWT valid for at least [`APP_JWT_REFRESH_MARGIN`] from now.
    pub(crate) fn jwt(&self) -> Result<SecretString, GitHubError> {
        self.jwt_at(OffsetDateTime::now_utc())
    }

    /// [`Self::jwt`] with an explicit clock, for tests.
    pub(crate) fn jwt_at(&self, now: OffsetDateTime) -> Result<SecretString, GitHubError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = cached.as_ref() {
            if current.expires_at - now >= APP_JWT_REFRESH_MARGIN {
                return Ok(current.jwt.clone());
            }
        }
        let expires_at = now + APP_JWT_LIFETIME;
        let claims = AppJwtClaims {
            iat: (now - APP_JWT_BACKDATE).unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            iss: self.app_id.clone(),
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(GitHubError::Signing)?;
        let jwt = SecretString::from(jwt);
        *cached = Some(CachedJwt {
            jwt: jwt.clone(),
            expires_at,
        });
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use sts_sim::keys::RsaKeyPair;

    fn decode(jwt: &SecretString, key: &DecodingKey) -> (Header, AppJwtClaims) {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "exp", "iat"]);
        let data = jsonwebtoken::decode::<AppJwtClaims>(jwt.expose_secret(), key, &validation)
            .expect("decodes");
        (data.header, data.claims)
    }

    #[test]
    fn signs_rs256_with_backdated_iat_and_nine_minute_expiry() {
        let pair = RsaKeyPair::generate();
        let signer = AppJwtSigner::new("12345", &pair.private_pkcs1_pem()).unwrap();
        let now = OffsetDateTime::now_utc() + Duration::hours(1);
        let (header, claims) = decode(&signer.jwt_at(now).unwrap(), &pair.decoding_key());
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(claims.iss, "12345");
        assert_eq!(claims.iat, now.unix_timestamp() - 60);
        assert_eq!(claims.exp, now.unix_timestamp() + 540);
    }

    #[test]
    fn accepts_pkcs1_and_pkcs8_keys() {
        let pair = RsaKeyPair::generate();
        for pem in [pair.private_pkcs1_pem(), pair.private_pkcs8_pem()] {
            let signer = AppJwtSigner::new("7", &pem).unwrap();
            let (_, claims) = decode(&signer.jwt().unwrap(), &pair.decoding_key());
            assert_eq!(claims.iss, "7");
        }
    }

    #[test]
    fn reuses_the_jwt_until_the_refresh_margin_and_then_signs_a_new_one() {
        let pair = RsaKeyPair::generate();
        let signer = AppJwtSigner::new("1", &pair.private_pkcs8_pem()).unwrap();
        let start = OffsetDateTime::now_utc() + Duration::hours(2);
        let first = signer.jwt_at(start).unwrap();
        let later = signer.jwt_at(start + Duration::minutes(7)).unwrap();
        assert_eq!(first.expose_secret(), later.expose_secret());
        let renewed = signer
            .jwt_at(start + Duration::minutes(8) + Duration::seconds(1))
            .unwrap();
        assert_ne!(first.expose_secret(), renewed.expose_secret());
    }

    #[test]
    fn refuses_keys_that_are_not_rsa_pem() {
        let broken = [
            "not a pem at all",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        ];
        for pem in broken {
            let result = AppJwtSigner::new("1", &SecretString::from(pem));
            assert!(
                matches!(result, Err(GitHubError::Signing(_))),
                "{pem:?} was accepted"
            );
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let pair = RsaKeyPair::generate();
        let signer = AppJwtSigner::new("99", &pair.private_pkcs1_pem()).unwrap();
        let jwt = signer.jwt().unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains("99"));
        assert!(!shown.contains(jwt.expose_secret()));
        assert!(!shown.contains("PRIVATE"));
    }
}
