//! An audit event as the outside sees it: the admin audit API and the audit export (contract
//! §11: `data` is "the event as the audit API shows it") render this one shape.

use super::chain::ChainLink;
use super::AuditEvent;
use serde::Serialize;

/// One audit event on the wire: the event's own fields, and its place in the workspace's hash
/// chain (absent only for an event not linked yet).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    #[serde(flatten)]
    event: AuditEvent,
    /// `chain_seq`: 1, 2, 3… per workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<i64>,
    /// The hash of the event before in the chain (64 zeros for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<String>,
    /// SHA-256 over the event's stored columns and `prevHash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

impl AuditEventView {
    /// `event` with its chain `link`, if it has one yet.
    pub fn new(event: AuditEvent, link: Option<ChainLink>) -> Self {
        let (sequence, prev_hash, hash) = match link {
            Some(link) => (Some(link.sequence), Some(link.prev_hash), Some(link.hash)),
            None => (None, None, None),
        };
        Self {
            event,
            sequence,
            prev_hash,
            hash,
        }
    }

    /// The event.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }
}
