//! The one audit event of a flow run, and its metrics, written in one place.
//!
//! Every audited flow has the same shape: an outer function that starts an [`Audited`], runs an
//! inner function returning `FlowResult<T>` that fills the event in as it learns things (who
//! the caller is, which policy, which tokens), and hands that result to [`Audited::finish`],
//! which writes exactly one event and counts the outcome. A new `?` or `return Err` in the inner
//! function therefore cannot skip the audit: there is no exit that bypasses `finish`.
//!
//! A flow whose success must be recorded atomically with its change (the exchange's session,
//! the mint's token rows) writes the event in that transaction and says so with
//! [`Audited::written_as`]; `finish` then only counts.

use super::{FlowError, FlowResult};
use crate::app::App;
use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::ids::WorkspaceId;
use crate::metrics::Metrics;

/// Which outcome counter a flow feeds, besides `denials`, which counts every refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// `sts_exchanges`.
    Exchanges,
    /// `sts_mints`.
    Mints,
    /// Only `denials` (revocations and admin changes have no counter of their own).
    Nothing,
}

/// A flow's audit event while the flow runs. Built up by the flow, written once by
/// [`finish`](Self::finish).
#[derive(Debug)]
#[must_use = "an audited flow must end in `finish`, or its event is never written"]
pub(crate) struct Audited {
    /// The event as known so far. Outcome and reason are set by `finish` from the result.
    pub(crate) event: AuditEvent,
    counted: Counted,
    /// The flow wrote the event in the transaction of its change.
    written: bool,
    /// The mint intent this event closes: written together with the intent's resolution.
    intent: Option<String>,
    /// A finer reason for a refusal than the error's code (the OIDC verifier's), for the event
    /// and the counters.
    reason: Option<&'static str>,
}

impl Audited {
    /// An event of `kind`/`action` for request `request_id`.
    pub(crate) fn new(kind: AuditKind, action: &str, request_id: &str, counted: Counted) -> Self {
        let mut event = AuditEvent::new(kind, action);
        event.request_id = Some(request_id.to_owned());
        Self {
            event,
            counted,
            written: false,
            intent: None,
            reason: None,
        }
    }

    /// The event belongs to `workspace`.
    pub(crate) fn in_workspace(mut self, workspace: &WorkspaceId) -> Self {
        self.event.workspace_id = Some(workspace.as_str().to_owned());
        self
    }

    /// The flow committed `event` (its success) in the transaction of its change; `finish`
    /// writes nothing more.
    pub(crate) fn written_as(&mut self, event: AuditEvent) {
        self.event = event;
        self.written = true;
    }

    /// The event closes the mint intent `id`: whichever way the flow ends, the event and the
    /// intent's resolution are written in one transaction.
    pub(crate) fn resolves(&mut self, id: String) {
        self.intent = Some(id);
    }

    /// Should the flow fail, say `reason` instead of the error's code: a finer cause that the
    /// wire's `errorTag` must not reveal (why an OIDC token was refused).
    pub(crate) fn because(&mut self, reason: &'static str) {
        self.reason = Some(reason);
    }

    /// The mint intent this event closes, if any.
    pub(crate) fn intent(&self) -> Option<&str> {
        self.intent.as_deref()
    }

    /// Write the event for `result` (unless the flow wrote it already) and count the outcome.
    ///
    /// A refusal or failure whose event cannot be written keeps its own error (the write is
    /// logged loudly): nothing was handed out or changed. A success whose event cannot be
    /// written becomes a database error: a change must not look unaudited-but-fine.
    pub(crate) async fn finish<T>(mut self, app: &App, result: FlowResult<T>) -> FlowResult<T> {
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Success, ""),
            Err(e) => (e.outcome(), self.reason.unwrap_or_else(|| e.code())),
        };
        if !self.written {
            self.event.outcome = outcome;
            self.event.reason = (!reason.is_empty()).then(|| reason.to_owned());
            if let Err(FlowError::InvalidRequest(errors) | FlowError::PolicyInvalid(errors)) =
                &result
            {
                detail(&mut self.event, "validationErrors", errors);
            }
            if let Err(e) = self.write(app).await {
                tracing::error!(
                    audit.id = %self.event.id,
                    audit.action = %self.event.action,
                    error = %e,
                    "could not write audit event {}", self.event.id
                );
                if result.is_ok() {
                    count(app, self.counted, Outcome::Failure, "database_error");
                    return Err(e.into());
                }
            }
        }
        count(app, self.counted, outcome, reason);
        result
    }

    async fn write(&self, app: &App) -> crate::store::StoreResult<()> {
        if let Some(intent) = &self.intent {
            if app.store.resolve_mint_intent(intent, &self.event).await? {
                return Ok(());
            }
            // Resolved already (a sweep took it for a crash's): the event still stands alone.
        }
        app.store.append_audit(&self.event).await
    }
}

/// Add `key: value` to the event's details (an object, created if the details are empty).
pub(crate) fn detail(event: &mut AuditEvent, key: &str, value: impl serde::Serialize) {
    if !event.details.is_object() {
        event.details = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(details) = event.details.as_object_mut() {
        details.insert(key.to_owned(), serde_json::json!(value));
    }
}

/// Count one outcome of a flow: its own counter, and `denials` for a refusal.
fn count(app: &App, counted: Counted, outcome: Outcome, reason: &'static str) {
    let label = match outcome {
        Outcome::Success => "success",
        Outcome::Denied => "denied",
        Outcome::Failure => "failure",
    };
    match counted {
        Counted::Exchanges => Metrics::outcome(&app.metrics.exchanges, label, reason),
        Counted::Mints => Metrics::outcome(&app.metrics.mints, label, reason),
        Counted::Nothing => {}
    }
    if outcome == Outcome::Denied {
        app.metrics.deny(reason);
    }
}
