//! The broker's CI endpoints, spoken exactly as Atmos CLI speaks them (same paths, bodies and
//! envelope), plus the revoke endpoints that Atmos does not use.

use crate::error::{describe_reqwest, ClientError};
use crate::model::{ClientToken, Exclusion};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;

/// Atmos CLI's timeout for the exchange, mint and revoke calls.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A broker that does not accept the connection in this long is down for our purposes.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest broker answer read: a mint answer with hundreds of tokens is well under this.
const MAX_BROKER_BODY: usize = 4 * 1024 * 1024;
/// Atmos's default API path under the base URL.
pub(crate) const DEFAULT_ENDPOINT: &str = "api/v1";

/// A session JWT from the exchange.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) token: SecretString,
    /// The JWT's `exp`; `None` = the broker gave none (treated as non-expiring, as Atmos does).
    pub(crate) expires_at: Option<OffsetDateTime>,
}

/// What `POST /sts` gave.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Minted {
    #[serde(default, deserialize_with = "crate::model::null_as_default")]
    pub(crate) tokens: Vec<ClientToken>,
    #[serde(default, deserialize_with = "crate::model::null_as_default")]
    pub(crate) excluded: Vec<Exclusion>,
}

/// Why a session-authenticated call failed, so the caller can re-authenticate once on 401.
#[derive(Debug)]
pub(crate) enum CallError {
    /// 401: the session is expired, revoked or unknown.
    SessionRefused(String),
    Other(ClientError),
}

impl From<ClientError> for CallError {
    fn from(error: ClientError) -> Self {
        Self::Other(error)
    }
}

/// The broker at one base URL.
pub(crate) struct Broker {
    http: reqwest::Client,
    /// `{base}/{endpoint}` without a trailing slash.
    api: String,
    /// The base URL as the user gave it (for messages).
    base: String,
}

impl Broker {
    pub(crate) fn new(http: reqwest::Client, base_url: &str, endpoint: &str) -> Self {
        let base = base_url.trim_end_matches('/').to_owned();
        let api = format!("{base}/{}", endpoint.trim_matches('/'));
        Self {
            http,
            api,
            base: base_url.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.api)
    }

    /// `POST /auth/github-oidc`: OIDC token → session.
    pub(crate) async fn exchange(
        &self,
        oidc_token: &SecretString,
        workspace: &str,
    ) -> Result<Session, ClientError> {
        let body = serde_json::json!({
            "token": oidc_token.expose_secret(),
            "workspaceId": workspace,
        });
        let (status, envelope) = self
            .send(self.http.post(self.url("auth/github-oidc")).json(&body))
            .await?;
        if !is_success(status, &envelope) {
            let message = error_message(status, &envelope);
            return Err(match status {
                401 => ClientError::Broker(format!(
                    "the broker refused the OIDC token ({message}); it may be expired, already \
                     used, for another audience (see --audience) or from an issuer the broker \
                     does not trust"
                )),
                403 => ClientError::NotEntitled {
                    workspace: workspace.to_owned(),
                },
                404 => ClientError::Broker(format!(
                    "workspace `{workspace}` does not exist at the broker ({message})"
                )),
                _ => ClientError::Broker(format!("exchange failed: {message}")),
            });
        }
        let token = envelope
            .pointer("/data/token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ClientError::Broker("the broker's exchange answer has no data.token".to_owned())
            })?;
        Ok(Session {
            expires_at: jwt_expiry(token),
            token: token.to_owned().into(),
        })
    }

    /// `POST /sts`: mint what the policy allows.
    pub(crate) async fn mint(
        &self,
        session: &Session,
        key: &crate::state::StateKey,
        policy: &str,
    ) -> Result<Minted, CallError> {
        let workspace = key.workspace.as_str();
        let mut body = serde_json::Map::new();
        if !key.sources.is_empty() {
            body.insert("sources".into(), serde_json::json!(key.sources));
        }
        if !key.permissions.is_empty() {
            body.insert("permissions".into(), serde_json::json!(key.permissions));
        }
        body.insert("policyName".into(), Value::String(policy.to_owned()));
        let request = self
            .http
            .post(self.url("sts"))
            .bearer_auth(session.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let (status, envelope) = self.send(request).await?;
        if !is_success(status, &envelope) {
            let message = error_message(status, &envelope);
            return Err(match status {
                400 => CallError::Other(ClientError::NotActionsSession),
                401 => CallError::SessionRefused(message),
                403 => CallError::Other(ClientError::NotEntitled {
                    workspace: workspace.to_owned(),
                }),
                _ => CallError::Other(ClientError::Broker(format!("mint failed: {message}"))),
            });
        }
        // `"data": null` (or none) is an empty grant, as Atmos decodes it.
        let data = match envelope.get("data") {
            None | Some(Value::Null) => return Ok(Minted::default()),
            Some(data) => data.clone(),
        };
        serde_json::from_value(data).map_err(|e| {
            CallError::Other(ClientError::Broker(format!(
                "the broker's mint answer is not what the contract says: {e}"
            )))
        })
    }

    /// `POST /sts/revoke`: revoke `ids` (or every token of the session when `None`).
    pub(crate) async fn revoke(
        &self,
        session: &Session,
        ids: Option<&[String]>,
    ) -> Result<u64, CallError> {
        let body = match ids {
            Some(ids) => serde_json::json!({ "ids": ids }),
            None => serde_json::json!({}),
        };
        let request = self
            .http
            .post(self.url("sts/revoke"))
            .bearer_auth(session.token.expose_secret())
            .json(&body);
        let (status, envelope) = self.send(request).await?;
        if !is_success(status, &envelope) {
            let message = error_message(status, &envelope);
            return Err(match status {
                401 => CallError::SessionRefused(message),
                _ => CallError::Other(ClientError::Broker(format!("revoke failed: {message}"))),
            });
        }
        Ok(envelope
            .pointer("/data/revoked")
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }

    /// `DELETE /auth/session`: end the session (and, at our broker, its tokens).
    pub(crate) async fn end_session(&self, session: &Session) -> Result<(), CallError> {
        let request = self
            .http
            .delete(self.url("auth/session"))
            .bearer_auth(session.token.expose_secret());
        let (status, envelope) = self.send(request).await?;
        if !is_success(status, &envelope) {
            let message = error_message(status, &envelope);
            return Err(match status {
                401 => CallError::SessionRefused(message),
                _ => CallError::Other(ClientError::Broker(format!(
                    "ending the session failed: {message}"
                ))),
            });
        }
        Ok(())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            detail: describe_reqwest(&e),
        })?;
        let status = response.status().as_u16();
        let body = read_capped(response, MAX_BROKER_BODY)
            .await
            .map_err(|detail| ClientError::Unreachable {
                url: self.base.clone(),
                detail,
            })?;
        // A non-JSON body (a proxy's HTML error page, say) still yields a status-based message.
        let envelope = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, envelope))
    }
}

/// Atmos's rule: 2xx *and* `success: true`; a 200 without `success` is a failure.
fn is_success(status: u16, envelope: &Value) -> bool {
    (200..300).contains(&status) && envelope.get("success") == Some(&Value::Bool(true))
}

/// `errorMessage`, else legacy `error`, with the tag, validation errors and trace id a user can
/// quote to the operator.
fn error_message(status: u16, envelope: &Value) -> String {
    let text = |key: &str| {
        envelope
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut message = text("errorMessage").or_else(|| text("error")).map_or_else(
        || format!("HTTP {status}"),
        |m| format!("{m} (HTTP {status})"),
    );
    if let Some(tag) = text("errorTag") {
        message.push_str(&format!(" [{tag}]"));
    }
    if let Some(errors) = envelope
        .pointer("/data/validationErrors")
        .and_then(Value::as_array)
    {
        for error in errors.iter().filter_map(Value::as_str) {
            message.push_str(&format!("\n  - {error}"));
        }
    }
    if let Some(trace) = text("traceId") {
        message.push_str(&format!(" (trace id {trace})"));
    }
    message
}

/// A JWT's `exp` read without verifying (the broker verifies; we only schedule re-auth), with
/// Atmos's rules: not a JWT, or no `exp` → `None` (non-expiring); a JWT whose payload cannot be
/// read → already expired (authenticate again rather than trust it).
pub(crate) fn jwt_expiry(jwt: &str) -> Option<OffsetDateTime> {
    use base64::Engine as _;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return None;
    };
    let claims: Option<Value> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let Some(claims) = claims else {
        return Some(OffsetDateTime::UNIX_EPOCH);
    };
    let exp = claims.get("exp")?.as_i64()?;
    OffsetDateTime::from_unix_timestamp(exp).ok()
}

/// Read at most `cap` bytes of a body; a larger one is an error, not a truncation.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe_reqwest(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("answer larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_built_like_atmos_builds_the_mint_url() {
        let http = reqwest::Client::new();
        for (base, endpoint) in [
            ("http://h:1", "api/v1"),
            ("http://h:1/", "api/v1"),
            ("http://h:1/", "/api/v1/"),
        ] {
            let broker = Broker::new(http.clone(), base, endpoint);
            assert_eq!(
                broker.url("sts"),
                "http://h:1/api/v1/sts",
                "{base} {endpoint}"
            );
        }
    }

    #[test]
    fn success_needs_both_status_and_flag() {
        assert!(is_success(200, &json!({"success": true})));
        assert!(is_success(201, &json!({"success": true})));
        assert!(!is_success(200, &json!({"data": {}})));
        assert!(!is_success(200, &json!({"success": false})));
        assert!(!is_success(500, &json!({"success": true})));
        assert!(!is_success(200, &Value::Null));
    }

    #[test]
    fn error_messages_prefer_error_message_and_keep_what_helps() {
        let envelope = json!({
            "success": false, "status": 400, "errorTag": "validation_failed",
            "errorMessage": "policy is invalid", "error": "legacy", "traceId": "abc",
            "data": {"validationErrors": ["rules[0]: bad"]}
        });
        let message = error_message(400, &envelope);
        assert!(message.starts_with("policy is invalid (HTTP 400) [validation_failed]"));
        assert!(message.contains("\n  - rules[0]: bad"));
        assert!(message.ends_with("(trace id abc)"));
        assert_eq!(
            error_message(502, &json!({"error": "legacy"})),
            "legacy (HTTP 502)"
        );
        assert_eq!(error_message(502, &Value::Null), "HTTP 502");
    }

    #[test]
    fn jwt_expiry_reads_unpadded_payloads_and_tolerates_junk() {
        use base64::Engine as _;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1900000000}"#);
        let jwt = format!("h.{payload}.s");
        assert_eq!(jwt_expiry(&jwt).unwrap().unix_timestamp(), 1_900_000_000);
        assert_eq!(jwt_expiry("opaque"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), Some(OffsetDateTime::UNIX_EPOCH));
        let no_exp = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(jwt_expiry(&format!("h.{no_exp}.s")), None);
    }

    #[test]
    fn mint_answers_decode_tolerantly() {
        let data = json!({"tokens": [{"host": "github.com", "owner": "o", "token": "t",
            "expiresAt": "2030-01-01T00:00:00Z", "repositories": ["o/r"],
            "permissions": {"contents": "read"}, "extra": 1}], "excluded": []});
        let minted: Minted = serde_json::from_value(data).unwrap();
        assert_eq!(minted.tokens.len(), 1);
        assert!(minted.tokens[0].is_usable());
        assert_eq!(minted.tokens[0].id, None);
        let minted: Minted = serde_json::from_value(json!({"tokens": []})).unwrap();
        assert!(minted.excluded.is_empty());
        // Go's decoder leaves zero values for nulls; so do we.
        let data = json!({"tokens": [{"host": "h", "owner": "o", "token": "t", "expiresAt": null,
            "permissions": null, "installationId": "12"}], "excluded": []});
        let minted: Minted = serde_json::from_value(data).unwrap();
        assert!(minted.tokens[0].permissions.is_empty());
        assert_eq!(minted.tokens[0].expires_at, "");
    }
}
