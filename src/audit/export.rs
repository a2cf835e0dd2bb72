//! Audit export to a SIEM (contract §11): every audit event, queued in the database's outbox in
//! the transaction that stores it (`store::outbox`), is POSTed to `[audit] webhook_url` as a
//! CloudEvent ([`event`]) signed with HMAC-SHA256, until the receiver answers 2xx.
//!
//! Delivery is at least once and in order per workspace: the task claims only the oldest pending
//! event of each workspace, with a lease, and the next one becomes claimable once that one is
//! acknowledged. Replicas on one PostgreSQL database share the work without reordering a
//! workspace (see `store::outbox`). A refused or failed delivery is retried after a wait that
//! doubles per failure, up to `webhook_max_backoff_seconds`; only that workspace waits.

pub mod event;

use crate::audit::view::AuditEventView;
use crate::config::{Config, USER_AGENT};
use crate::metrics::Metrics;
use crate::store::{Claim, OutboxEntry, Retry, Store};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How long the task rests when nothing is due: the delay of an event's export when the
/// receiver is up, traded against one small query per second per replica.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Whole-request timeout of one delivery: a receiver that hangs is a failed delivery.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout of one delivery.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claim holds a workspace's head event. Well above [`REQUEST_TIMEOUT`], so a lease
/// never runs out while its delivery is still in flight (another replica would then send the
/// workspace's next event alongside it); a replica that dies frees its claims after this.
pub const LEASE: Duration = Duration::from_secs(60);
/// Events claimed at once (each the head of a different workspace), delivered concurrently.
pub const BATCH: u32 = 32;
/// The first wait after a failed delivery; it doubles per further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// While no webhook is configured, outbox rows older than this are dropped (so the outbox does
/// not grow without end). A day, not at once: during a rolling deploy that turns the export on,
/// replicas still without the webhook must not empty the outbox under the ones that have it.
pub const UNEXPORTED_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often that sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Where and how events go.
#[derive(Clone)]
pub struct ExportSettings {
    /// The receiver.
    pub url: url::Url,
    /// HMAC key of the signature header.
    pub secret: SecretString,
    /// CloudEvents `source`: the broker's public URL.
    pub source: String,
    /// Longest wait between two attempts at one event.
    pub max_backoff: Duration,
}

debug_showing!(ExportSettings {
    source,
    max_backoff
});

impl ExportSettings {
    /// From `[audit]`; `None` when no webhook is configured.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(url) = &config.audit.webhook_url else {
            return Ok(None);
        };
        Ok(Some(Self {
            url: url
                .parse()
                .map_err(|_| anyhow::anyhow!("audit.webhook_url: not a URL"))?,
            secret: config.webhook_secret()?,
            source: config.server.public_url.trim_end_matches('/').to_owned(),
            max_backoff: Duration::from_secs(config.audit.webhook_max_backoff_seconds),
        }))
    }
}

/// The wait before the next attempt at an event that has failed `failures` times before this
/// failure: [`FIRST_BACKOFF`] doubled per earlier failure, at most `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(max)
}

/// Run the export for as long as the task lives: deliver with `settings`, or, without, keep the
/// outbox from growing.
pub async fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, settings: Option<ExportSettings>) {
    match settings {
        Some(settings) => Exporter::new(store, metrics, settings).run().await,
        None => sweep_unexported(store).await,
    }
}

async fn sweep_unexported(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let before = OffsetDateTime::now_utc() - UNEXPORTED_RETENTION;
        if let Err(e) = store.drop_outbox_before(before).await {
            tracing::warn!(error = %e, "could not trim the audit export outbox: {e}");
        }
    }
}

/// The delivering task of one replica.
struct Exporter {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    settings: ExportSettings,
    client: reqwest::Client,
}

/// How one delivery attempt ended.
enum Delivery {
    Acknowledged,
    Failed(String),
}

impl Exporter {
    fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, settings: ExportSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            // A redirect would re-send the audit trail somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            store,
            metrics,
            settings,
            client,
        }
    }

    async fn run(self) {
        // Origin and path only: receivers may take a credential in the query.
        let url = &self.settings.url;
        let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        tracing::info!(audit.webhook = %shown, "exporting audit events to {shown}");
        loop {
            let claimed = self.claim().await;
            if claimed.is_empty() {
                self.report_backlog().await;
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            let this = &self;
            futures::future::join_all(
                claimed
                    .into_iter()
                    .map(|(owner, entry)| async move { this.deliver(&owner, entry).await }),
            )
            .await;
        }
    }

    /// The heads due now, leased to a fresh claim id; none after a store error (logged).
    async fn claim(&self) -> Vec<(Arc<String>, OutboxEntry)> {
        let owner = Arc::new(uuid::Uuid::new_v4().to_string());
        let now = OffsetDateTime::now_utc();
        let claim = Claim {
            owner: &owner,
            now,
            lease_until: now + LEASE,
            limit: BATCH,
        };
        match self.store.claim_outbox(claim).await {
            Ok(entries) => entries
                .into_iter()
                .map(|e| (Arc::clone(&owner), e))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not claim audit events for export: {e}");
                Vec::new()
            }
        }
    }

    async fn deliver(&self, owner: &str, entry: OutboxEntry) {
        let id = entry.chained.event.id.clone();
        let view = AuditEventView::new(entry.chained.event, entry.chained.link);
        let outcome = self.post(&view).await;
        let stored = match outcome {
            Delivery::Acknowledged => {
                self.metrics.audit_export.delivered.inc();
                self.store.ack_outbox(entry.seq, owner).await
            }
            Delivery::Failed(reason) => {
                self.metrics.audit_export.failures.inc();
                let wait = backoff(entry.attempts, self.settings.max_backoff);
                tracing::warn!(
                    audit.event_id = %id,
                    audit.export_attempts = entry.attempts + 1,
                    "audit event {id} not exported ({reason}); retrying in {}s",
                    wait.as_secs()
                );
                let retry = Retry {
                    seq: entry.seq,
                    owner,
                    next_attempt: OffsetDateTime::now_utc() + wait,
                    error: &reason,
                };
                self.store.retry_outbox(retry).await
            }
        };
        if let Err(e) = stored {
            // The lease runs out and the event is claimed again: sent twice, never lost.
            tracing::warn!(error = %e, audit.event_id = %id, "could not record the export of audit event {id}: {e}");
        }
    }

    async fn post(&self, view: &AuditEventView) -> Delivery {
        let body = match event::body(view, &self.settings.source) {
            Ok(body) => body,
            Err(e) => return Delivery::Failed(format!("cannot encode: {e}")),
        };
        let signature = event::signature(&self.settings.secret, &body);
        let sent = self
            .client
            .post(self.settings.url.clone())
            .header(http::header::CONTENT_TYPE, event::CLOUDEVENTS_CONTENT_TYPE)
            .header(event::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Delivery::Acknowledged,
            Ok(response) => Delivery::Failed(format!("receiver answered {}", response.status())),
            // The URL may hold a credential (some receivers take one in the query): not shown.
            Err(e) => Delivery::Failed(format!("cannot reach the receiver: {}", e.without_url())),
        }
    }

    async fn report_backlog(&self) {
        let Ok(backlog) = self.store.outbox_backlog().await else {
            return;
        };
        let metrics = &self.metrics.audit_export;
        metrics
            .backlog
            .set(i64::try_from(backlog.pending).unwrap_or(i64::MAX));
        let age = backlog.oldest.map_or(0, |t| {
            (OffsetDateTime::now_utc() - t).whole_seconds().max(0)
        });
        metrics.oldest_age_seconds.set(age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_one_second_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (0..12).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX, max), max);
    }
}
