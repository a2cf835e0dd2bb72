//! Reading a token before its signature is checked: ONLY for issuer and `kid` lookup.
//!
//! NOTHING read here may be trusted. An attacker controls every byte of an unverified token, so
//! these values may only pick which configured issuer and which published key to verify against.
//! They must never reach a policy decision, an audit "actor" field or a log line as if verified:
//! use [`super::VerifiedToken`] for that.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::VerifyError;

/// Largest token we even try to parse. GitHub's tokens are about 1–2 KiB; the cap stops a
/// multi-megabyte "token" from costing base64 and JSON work before it is refused.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The JOSE header of an unverified token: only what key lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedHeader {
    /// `alg`, as written by the sender (checked against the allow-list by the caller).
    pub alg: String,
    /// `kid`, if any.
    pub kid: Option<String>,
}

/// The parts of an unverified token used to find the issuer and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedToken {
    /// The header.
    pub header: UnverifiedHeader,
    /// The payload's `iss`, if it is a string. UNVERIFIED: only for looking up the issuer config.
    pub issuer: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    // RFC 7515 §4.1.11: a recipient that does not understand a listed extension must refuse the
    // token. We understand none, so any `crit` is refused.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The payload as far as issuer lookup reads it: `iss` if it is a string. It must still be a JSON
/// object, but no other claim is kept: `jsonwebtoken::decode` parses them all again once the
/// signature is checked, and a map of every claim here was ~3 % of an exchange's CPU.
struct RawPayload {
    issuer: Option<String>,
}

impl<'de> Deserialize<'de> for RawPayload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawPayload;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawPayload, A::Error> {
                let mut issuer = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "iss" {
                        // As `serde_json::Map` would read a repeated key: the last one counts.
                        issuer = match map.next_value::<serde_json::Value>()? {
                            serde_json::Value::String(iss) => Some(iss),
                            _ => None,
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(RawPayload { issuer })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Split and decode `token` WITHOUT verifying it. Fails with [`VerifyError::Malformed`] unless
/// it is three base64url parts whose first two are JSON objects.
pub fn decode(token: &str) -> Result<UnverifiedToken, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };

    let header: RawHeader = decode_json_part(header)?;
    if header.crit.is_some() {
        return Err(VerifyError::Malformed);
    }
    let RawPayload { issuer } = decode_json_part(payload)?;

    Ok(UnverifiedToken {
        header: UnverifiedHeader {
            alg: header.alg,
            kid: header.kid,
        },
        issuer,
    })
}

fn decode_json_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn reads_alg_kid_and_issuer_without_verifying() {
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            b64(r#"{"iss":"https://issuer.example","sub":"x"}"#)
        );
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.header.alg, "RS256");
        assert_eq!(decoded.header.kid.as_deref(), Some("k1"));
        assert_eq!(decoded.issuer.as_deref(), Some("https://issuer.example"));
    }

    #[test]
    fn a_non_string_issuer_reads_as_absent() {
        let token = format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64(r#"{"iss":42}"#));
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.issuer, None);
        assert_eq!(decoded.header.kid, None);
    }

    #[test]
    fn a_repeated_issuer_reads_as_its_last_value_as_the_verified_claims_will() {
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"RS256"}"#),
            b64(
                r#"{"iss":"https://first.example","sub":{"nested":[1,"x"]},"iss":"https://last.example"}"#
            )
        );
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.issuer.as_deref(), Some("https://last.example"));
        let verified: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"iss":"https://first.example","iss":"https://last.example"}"#)
                .unwrap();
        assert_eq!(verified["iss"], "https://last.example");
    }

    #[test]
    fn refuses_malformed_tokens() {
        let header = b64(r#"{"alg":"RS256"}"#);
        let payload = b64(r#"{"iss":"x"}"#);
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("garbage", "not a token".into()),
            ("two parts", format!("{header}.{payload}")),
            ("four parts", format!("{header}.{payload}.sig.more")),
            ("non base64 header", format!("!!!.{payload}.sig")),
            ("non json payload", format!("{header}.{}.sig", b64("hello"))),
            (
                "payload not an object",
                format!("{header}.{}.sig", b64("[1,2]")),
            ),
            (
                "header without alg",
                format!("{}.{payload}.sig", b64(r#"{"kid":"a"}"#)),
            ),
            (
                "header with crit",
                format!("{}.{payload}.sig", b64(r#"{"alg":"RS256","crit":["exp"]}"#)),
            ),
            ("oversized", "a".repeat(MAX_TOKEN_BYTES + 1)),
        ];
        for (name, token) in cases {
            assert_eq!(decode(&token), Err(VerifyError::Malformed), "{name}");
        }
    }
}
