//! `[limits]` and `[retention]`: what a caller may cost the broker, and how long it keeps rows.

use serde::Deserialize;

/// Largest `[limits]` timeout or grace, in seconds: an hour is past any use as a defence, and
/// keeps deadlines computed from it far from overflowing.
pub const MAX_LIMIT_SECONDS: u64 = 3600;

/// `[limits]`: what one caller, one workspace or one connection may cost the broker. Every
/// value is checked to be at least 1 (0 would refuse everything or disable the defence).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `/api/v1/sts` calls one session may make in any minute; beyond: `429 rate_limited`.
    pub session_mints_per_minute: u32,
    /// `/api/v1/sts` calls all sessions of one workspace may make in any minute: every tenant
    /// shares the GitHub App's rate limit, so one workspace must not spend all of it.
    pub workspace_mints_per_minute: u32,
    /// Connections held open at once; beyond it the broker stops accepting until one closes.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after it opened (or after
    /// its previous response) is closed.
    pub header_read_timeout_seconds: u64,
    /// On SIGTERM, in-flight requests get this long to finish; then the broker exits anyway.
    pub shutdown_grace_seconds: u64,
}

impl LimitsConfig {
    /// [`Self::header_read_timeout_seconds`] as a duration.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// [`Self::shutdown_grace_seconds`] as a duration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_seconds)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            // A CI job mints a handful of times; one a second is far above any honest loop.
            session_mints_per_minute: 60,
            // GitHub allows an App at least 5 000 requests an hour per installation; 1 200 mints a
            // minute across all of a workspace's jobs is generous for one tenant yet stops one
            // tenant from spending the budget all tenants share.
            workspace_mints_per_minute: 1200,
            // Each open connection costs a task, buffers and a file descriptor; 10 000 stays well
            // inside a default container's `ulimit -n` of 65 536 with room for database and GitHub
            // sockets.
            max_connections: 10_000,
            // A real client sends its request head in one packet; ten seconds covers slow networks
            // and still frees a slot held by a client that never finishes (slowloris).
            header_read_timeout_seconds: 10,
            // Below Kubernetes' default 30 s termination grace, so the broker exits on its own
            // before it is killed, and longer than any request but a stuck one.
            shutdown_grace_seconds: 20,
        }
    }
}
impl LimitsConfig {
    /// Each key at least 1: a zero quota would refuse every mint, zero connections would serve
    /// nothing, and a zero timeout or grace would drop every request. The upper bounds keep the
    /// values meaningful (a timer past [`MAX_LIMIT_SECONDS`] is no defence) and within what the
    /// server can hold (a semaphore has at most [`tokio::sync::Semaphore::MAX_PERMITS`]).
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let max_permits = u64::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u64::MAX);
        let keys = [
            (
                "session_mints_per_minute",
                u64::from(self.session_mints_per_minute),
                u64::from(u32::MAX),
            ),
            (
                "workspace_mints_per_minute",
                u64::from(self.workspace_mints_per_minute),
                u64::from(u32::MAX),
            ),
            (
                "max_connections",
                u64::try_from(self.max_connections).unwrap_or(u64::MAX),
                max_permits,
            ),
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                MAX_LIMIT_SECONDS,
            ),
            (
                "shutdown_grace_seconds",
                self.shutdown_grace_seconds,
                MAX_LIMIT_SECONDS,
            ),
        ];
        for (key, value, max) in keys {
            if !(1..=max).contains(&value) {
                errors.push(format!("limits.{key}: must be between 1 and {max}"));
            }
        }
    }
}

/// `[retention]`: how long housekeeping keeps rows that can no longer be used, counted from
/// their expiry. The audit log is never purged: it keeps, for good, what these rows said (token
/// ids, fingerprints, repositories, permissions, session ids and caller claims).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a session row is kept after its expiry; longer while a kept token row names it.
    pub sessions_days: u32,
    /// Days an issued-token row is kept after its expiry.
    pub tokens_days: u32,
}

/// Default `retention.sessions_days`. A session row is what an admin revocation by `sessionId`
/// and the token listing name; a month after the job ended covers the usual incident review,
/// and the audit log still holds the session's id and claims.
pub const DEFAULT_SESSION_RETENTION_DAYS: u32 = 30;
/// Default `retention.tokens_days`. A token row lets an operator match a fingerprint from a
/// leak report or GitHub's audit log to the job, policy and repositories through the admin API
/// (`GET .../tokens`); a quarter covers late reports. The audit event keeps the same facts.
pub const DEFAULT_TOKEN_RETENTION_DAYS: u32 = 90;
/// Shortest retention: a row outlives its expiry by at least a day, so the operator looking
/// into a job that just ended still finds it.
pub const MIN_RETENTION_DAYS: u32 = 1;
/// Longest retention, ten years: beyond it the value is a typo, and the day count must stay a
/// valid duration for the purge's arithmetic.
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sessions_days: DEFAULT_SESSION_RETENTION_DAYS,
            tokens_days: DEFAULT_TOKEN_RETENTION_DAYS,
        }
    }
}

impl RetentionConfig {
    /// One message per key out of range.
    pub(super) fn validate(&self) -> Vec<String> {
        [
            ("retention.sessions_days", self.sessions_days),
            ("retention.tokens_days", self.tokens_days),
        ]
        .into_iter()
        .filter(|(_, days)| !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(days))
        .map(|(key, _)| {
            format!("{key}: must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS} days")
        })
        .collect()
    }
}
