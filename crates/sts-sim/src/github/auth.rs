//! Who is calling, checked as GitHub checks it: the App by its JWT
//! (<https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app>),
//! an installation by its token.

use super::state::{SimState, TokenRecord};
use super::wire::{gh_error, GhError, MSG_BAD_CREDENTIALS, MSG_JWT_NOT_DECODED};
use axum::http::{header, HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

/// Longest App JWT GitHub accepts (`exp` at most 10 minutes after issue).
pub const MAX_APP_JWT_LIFETIME: Duration = Duration::minutes(10);
/// Clock tolerance on App JWTs: GitHub tells Apps to backdate `iat` by 60 s, so a JWT may span
/// up to [`MAX_APP_JWT_LIFETIME`] plus this, and `iat` may be this far in the future.
pub const APP_JWT_TOLERANCE: Duration = Duration::seconds(60);

impl SimState {
    /// Check the App JWT as GitHub does; `Err` is the 401 to send.
    pub(super) fn check_app_jwt(&self, headers: &HeaderMap) -> Result<(), GhError> {
        let unauthorized = |message: &'static str| gh_error(StatusCode::UNAUTHORIZED, message);
        let Some(jwt) = credential(headers, &["bearer"]) else {
            return Err(unauthorized(MSG_JWT_NOT_DECODED));
        };
        #[derive(Deserialize)]
        struct AppClaims {
            iat: i64,
            exp: i64,
            iss: Value,
        }
        // Only RS256: a JWT with another `alg` (HS256 keyed with the public key, `none`) fails.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iat", "exp", "iss"]);
        let Some(data) = self
            .app_keys
            .iter()
            .find_map(|key| jsonwebtoken::decode::<AppClaims>(&jwt, key, &validation).ok())
        else {
            return Err(unauthorized(MSG_JWT_NOT_DECODED));
        };
        let claims = data.claims;
        let iss = match &claims.iss {
            Value::String(iss) => iss.clone(),
            Value::Number(iss) => iss.to_string(),
            _ => return Err(unauthorized(MSG_JWT_NOT_DECODED)),
        };
        if iss != self.app_id {
            return Err(unauthorized(
                "'Issuer' claim ('iss') does not identify this app",
            ));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let tolerance = APP_JWT_TOLERANCE.whole_seconds();
        let max_lifetime = MAX_APP_JWT_LIFETIME.whole_seconds();
        if claims.exp <= now {
            return Err(unauthorized(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ));
        }
        if claims.iat > now + tolerance {
            return Err(unauthorized(
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            ));
        }
        if claims.exp - claims.iat > max_lifetime + tolerance
            || claims.exp > now + max_lifetime + tolerance
        {
            return Err(unauthorized(
                "'Expiration time' claim ('exp') is too far in the future",
            ));
        }
        Ok(())
    }

    /// The installation token presented, if any: `Ok(None)` without an Authorization header,
    /// `Err(401)` for an unknown, revoked or expired one.
    pub(super) fn check_token(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(String, TokenRecord)>, GhError> {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        let bad_credentials = || gh_error(StatusCode::UNAUTHORIZED, MSG_BAD_CREDENTIALS);
        let token = credential(headers, &["token", "bearer"]).ok_or_else(bad_credentials)?;
        match self.live_token(&token) {
            Some(record) => Ok(Some((token, record.clone()))),
            None => Err(bad_credentials()),
        }
    }
}

/// The credential after one of `schemes` (case-insensitive) in `Authorization`.
fn credential(headers: &HeaderMap, schemes: &[&str]) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (schemes.iter().any(|s| scheme.eq_ignore_ascii_case(s)) && !credential.is_empty())
        .then(|| credential.to_owned())
}
