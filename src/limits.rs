//! What a caller may cost the broker, kept per process: how many mints a session and a
//! workspace may ask for ([`MintQuota`]), and how many refusal and failure lines reach the log
//! ([`LogBudget`]).
//!
//! Everything here is in memory and per replica: with N replicas behind a load balancer a
//! caller can get up to N times each limit. That still bounds a runaway job (the point of the
//! quotas), and keeps the database out of the hot path of every mint.

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The window of the mint quotas: `[limits]` states them per minute.
pub const MINT_QUOTA_WINDOW: Duration = Duration::from_secs(60);

/// Mints a session, and all sessions of a workspace, may ask for in any [`MINT_QUOTA_WINDOW`].
///
/// A sliding log: per key, the times of the mints admitted in the last window. A mint is
/// admitted when neither its session nor its workspace has reached its limit, and then counts
/// against both; a refused one counts against neither, so a client that backs off as told by
/// `Retry-After` gets its slot. `Retry-After` is when the oldest mint of the full key leaves the
/// window. Why not the `governor` crate: its keyed limiter is GCRA, which admits a burst of N
/// and then refills, so up to 2N-1 mints can pass in the first minute, not "N per minute" as
/// the contract says; and it brings several crates for what is sixty lines here.
///
/// Memory stays bounded: a key holds at most its limit of timestamps; keys are sessions that
/// authenticated (made by an OIDC exchange each) and their workspaces (which exist); and every
/// [`MINT_QUOTA_WINDOW`] the keys with no mint left in the window are dropped.
#[derive(Debug)]
pub struct MintQuota {
    per_session: usize,
    per_workspace: usize,
    metrics: Arc<Metrics>,
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    sessions: HashMap<String, VecDeque<Instant>>,
    workspaces: HashMap<String, VecDeque<Instant>>,
    last_sweep: Option<Instant>,
}

/// A mint refused by a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When a mint would be admitted again: whole seconds, at least one (`Retry-After` is in
    /// seconds, RFC 9110 §10.2.3, and rounding down would send the client back too early).
    pub retry_after: Duration,
}

impl MintQuota {
    /// The quotas of `limits`, counting refusals in `metrics`.
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            per_session: size(limits.session_mints_per_minute),
            per_workspace: size(limits.workspace_mints_per_minute),
            metrics,
            state: Mutex::new(QuotaState::default()),
        }
    }

    /// Admit one mint by `session` of `workspace`, or say when to come back. Call it for every
    /// authenticated attempt, before the request is validated, so malformed attempts count too.
    pub fn admit(&self, session: &str, workspace: &str) -> Result<(), Throttled> {
        self.admit_at(session, workspace, Instant::now())
            .inspect_err(|_| {
                // Not audited: the session's own loop would write a row per attempt, which is
                // what the quota is there to stop. Counted, and the 4xx is logged in budget.
                Metrics::outcome(&self.metrics.mints, "denied", "rate_limited");
                self.metrics.deny("rate_limited");
            })
    }

    fn admit_at(&self, session: &str, workspace: &str, now: Instant) -> Result<(), Throttled> {
        // A panic elsewhere while holding the lock leaves timestamps that are still valid.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.sweep(now);
        let QuotaState {
            sessions,
            workspaces,
            ..
        } = &mut *state;
        let session_log = sessions.entry(session.to_owned()).or_default();
        let workspace_log = workspaces.entry(workspace.to_owned()).or_default();
        let wait = [
            wait_for_slot(session_log, self.per_session, now),
            wait_for_slot(workspace_log, self.per_workspace, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(Throttled {
                retry_after: whole_seconds(wait),
            });
        }
        session_log.push_back(now);
        workspace_log.push_back(now);
        Ok(())
    }

    /// Keys tracked (sessions, workspaces), for tests of the eviction.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.sessions.len(), state.workspaces.len())
    }
}

impl QuotaState {
    /// Once a window, drop every key with no mint left in the window.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < MINT_QUOTA_WINDOW)
        {
            return;
        }
        self.last_sweep = Some(now);
        for logs in [&mut self.sessions, &mut self.workspaces] {
            logs.retain(|_, log| {
                forget_old(log, now);
                !log.is_empty()
            });
            logs.shrink_to_fit();
        }
    }
}

/// Drop the mints of `log` that left the window.
fn forget_old(log: &mut VecDeque<Instant>, now: Instant) {
    while log
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= MINT_QUOTA_WINDOW)
    {
        log.pop_front();
    }
}

/// `None` if `log` has room for another mint now; else how long until its oldest one leaves
/// the window.
fn wait_for_slot(log: &mut VecDeque<Instant>, limit: usize, now: Instant) -> Option<Duration> {
    forget_old(log, now);
    if log.len() < limit {
        return None;
    }
    let oldest = log.front().copied().unwrap_or(now);
    Some(MINT_QUOTA_WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
}

/// `wait` rounded up to whole seconds, at least one.
fn whole_seconds(wait: Duration) -> Duration {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Refusal log lines written per [`REFUSAL_LOG_INTERVAL`] at most. Anyone can make the broker
/// refuse (a garbage token, an unknown route), so a line per refusal would let any client grow
/// the log at its own request rate. Twenty lines per ten seconds still shows an operator every
/// refusal of a quiet day, and what a flood consists of; every refusal is counted in the
/// metrics regardless.
pub const REFUSAL_LOG_LINES: u32 = 20;
/// Access lines of requests answered 4xx or 5xx, per [`REFUSAL_LOG_INTERVAL`] at most. Anyone
/// can send requests that are refused, and one line per request would let a flood fill the
/// disk; successful requests, which a caller cannot make at will, are always logged, and
/// `sts_http_request_duration_seconds` counts every request either way.
pub const ACCESS_REFUSAL_LOG_LINES: u32 = 50;
/// The window [`REFUSAL_LOG_LINES`] and [`FAILURE_LOG_LINES`] apply to.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Failure log lines (5xx) written per [`REFUSAL_LOG_INTERVAL`] at most. Failures are ours, but
/// a caller can still repeat one at will while it lasts (every exchange while an issuer's keys
/// cannot be fetched, every request while the database is down). A separate, larger budget: a
/// flood of refusals cannot hide a failure, and a hundred lines in ten seconds is more than
/// anyone reads during an outage.
pub const FAILURE_LOG_LINES: u32 = 100;

/// At most `lines` log lines per `interval`; the first line written after some were suppressed
/// says how many. A fixed window: simple, and a burst at a window's edge costs at most twice
/// `lines`, which is still bounded.
#[derive(Debug)]
pub struct LogBudget {
    lines: u32,
    interval: Duration,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    window_start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    /// `lines` per `interval`.
    pub fn new(lines: u32, interval: Duration) -> Self {
        Self {
            lines,
            interval,
            state: Mutex::new(BudgetState {
                window_start: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// The budget of refusal lines: [`REFUSAL_LOG_LINES`] per [`REFUSAL_LOG_INTERVAL`].
    pub fn refusals() -> Self {
        Self::new(REFUSAL_LOG_LINES, REFUSAL_LOG_INTERVAL)
    }

    /// The budget of access lines for 4xx/5xx answers: [`ACCESS_REFUSAL_LOG_LINES`] per
    /// [`REFUSAL_LOG_INTERVAL`].
    pub fn refused_access() -> Self {
        Self::new(ACCESS_REFUSAL_LOG_LINES, REFUSAL_LOG_INTERVAL)
    }

    /// The budget of failure lines: [`FAILURE_LOG_LINES`] per [`REFUSAL_LOG_INTERVAL`].
    pub fn failures() -> Self {
        Self::new(FAILURE_LOG_LINES, REFUSAL_LOG_INTERVAL)
    }

    /// May a line be written now? `Some(n)`: yes, and `n` lines were suppressed since the last
    /// one written (log the count with the line). `None`: no; it is counted as suppressed.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        // A panic elsewhere while holding the lock leaves counters that are still valid numbers.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            state.window_start = Some(now);
            state.written = 0;
        }
        if state.written < self.lines {
            state.written += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_session: u32, per_workspace: u32) -> MintQuota {
        let limits = LimitsConfig {
            session_mints_per_minute: per_session,
            workspace_mints_per_minute: per_workspace,
            ..LimitsConfig::default()
        };
        MintQuota::new(&limits, Arc::new(Metrics::new()))
    }

    #[test]
    fn a_session_gets_its_limit_per_window_and_is_told_when_to_return() {
        let quota = quota(2, 100);
        let t0 = Instant::now();
        assert_eq!(quota.admit_at("s1", "w", t0), Ok(()));
        let t1 = t0 + Duration::from_millis(20_500);
        assert_eq!(quota.admit_at("s1", "w", t1), Ok(()));
        // Full: the oldest mint leaves the window at t0 + 60 s, 39.5 s after t1 → 40 s.
        let refused = quota.admit_at("s1", "w", t1);
        assert_eq!(
            refused,
            Err(Throttled {
                retry_after: Duration::from_secs(40)
            })
        );
        // Refusals take no slot: at t0 + 60 s exactly one slot is free again.
        let t2 = t0 + MINT_QUOTA_WINDOW;
        assert_eq!(quota.admit_at("s1", "w", t2), Ok(()));
        assert!(quota.admit_at("s1", "w", t2).is_err());
        // Another session of the workspace is not affected.
        assert_eq!(quota.admit_at("s2", "w", t2), Ok(()));
    }

    #[test]
    fn a_workspace_limit_spans_its_sessions_and_the_later_wait_wins() {
        let quota = quota(2, 3);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        for (secs, session) in [(0, "b"), (1, "c"), (2, "d")] {
            assert_eq!(quota.admit_at(session, "w", at(secs)), Ok(()), "{session}");
        }
        // Session `a` fills its own quota in another workspace.
        assert_eq!(quota.admit_at("a", "other", at(10)), Ok(()));
        assert_eq!(quota.admit_at("a", "other", at(20)), Ok(()));
        // A fourth session of the full workspace waits for the workspace's oldest mint.
        assert_eq!(
            quota.admit_at("e", "w", at(30)),
            Err(Throttled {
                retry_after: Duration::from_secs(30)
            })
        );
        // Another workspace has its own count.
        assert_eq!(quota.admit_at("e", "other", at(30)), Ok(()));
        // Asked in `w`, session `a` and `w` are both full; the later of the two slots is
        // reported: the session's, at 10 + 60 s.
        assert_eq!(
            quota.admit_at("a", "w", at(30)),
            Err(Throttled {
                retry_after: Duration::from_secs(40)
            })
        );
    }

    #[test]
    fn idle_keys_are_forgotten_after_a_window() {
        let quota = quota(5, 5);
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(quota
                .admit_at(&format!("s{i}"), &format!("w{i}"), t0)
                .is_ok());
        }
        assert_eq!(quota.tracked(), (100, 100));
        let later = t0 + MINT_QUOTA_WINDOW + Duration::from_secs(1);
        assert!(quota.admit_at("fresh", "w-fresh", later).is_ok());
        assert_eq!(quota.tracked(), (1, 1));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            whole_seconds(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(
            whole_seconds(Duration::from_millis(5_001)),
            Duration::from_secs(6)
        );
    }

    #[test]
    fn the_log_budget_writes_n_lines_per_window_then_reports_what_it_suppressed() {
        let budget = LogBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..10).map(|_| budget.admit_at(t0)).collect();
        assert_eq!(
            admitted,
            [
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert_eq!(budget.admit_at(t0 + Duration::from_secs(9)), None);
        // A new window: the first line carries the 8 suppressed since the last line written.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(budget.admit_at(t1), Some(8));
        assert_eq!(budget.admit_at(t1), Some(0));
    }
}
