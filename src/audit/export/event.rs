//! The webhook body and its signature: a CloudEvents 1.0 event in structured JSON mode
//! (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md>), signed
//! with HMAC-SHA256 (RFC 2104) over the exact body bytes.

use crate::audit::view::AuditEventView;
use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use sha2::Sha256;

/// Media type of a structured-mode CloudEvent in JSON.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The header that carries `sha256=<hex HMAC of the body>`.
pub const SIGNATURE_HEADER: &str = "X-STS-Signature";
/// Prefix of every event `type`; the audit kind follows it.
pub const TYPE_PREFIX: &str = "dev.sts-broker.audit.";

/// A CloudEvent whose `data` is one audit event, as the audit API shows it.
#[derive(Debug, Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: String,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    datacontenttype: &'static str,
    data: &'a AuditEventView,
}

/// The JSON body for `view`, from the broker at `source` (its public URL).
pub fn body(view: &AuditEventView, source: &str) -> Result<Vec<u8>, serde_json::Error> {
    let event = view.event();
    let kind = match serde_json::to_value(event.kind)? {
        serde_json::Value::String(kind) => kind,
        other => other.to_string(),
    };
    serde_json::to_vec(&CloudEvent {
        specversion: "1.0",
        id: &event.id,
        source,
        kind: format!("{TYPE_PREFIX}{kind}"),
        time: crate::audit::format_time(event.time),
        subject: event.workspace_id.as_deref(),
        datacontenttype: "application/json",
        data: view,
    })
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::ChainLink;
    use crate::audit::{AuditEvent, AuditKind};

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        let secret = SecretString::from("Jefe");
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_is_a_cloudevent_with_the_api_view_as_data() {
        let mut event = AuditEvent::new(AuditKind::SessionRevoke, "logout");
        event.workspace_id = Some("acme".into());
        let link = ChainLink {
            sequence: 3,
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        };
        let view = AuditEventView::new(event.clone(), Some(link));
        let json: serde_json::Value =
            serde_json::from_slice(&body(&view, "https://sts.example.com").unwrap()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], event.id.as_str());
        assert_eq!(json["source"], "https://sts.example.com");
        assert_eq!(json["type"], "dev.sts-broker.audit.session_revoke");
        assert_eq!(json["subject"], "acme");
        assert_eq!(json["time"], crate::audit::format_time(event.time));
        assert_eq!(json["data"], serde_json::to_value(&view).unwrap());
        assert_eq!(json["data"]["sequence"], 3);
    }
}
