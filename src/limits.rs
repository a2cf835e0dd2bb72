//! What a caller may cost the broker, kept per process: how many refusal lines reach the log.
//!
//! Everything here is in memory and per replica; see each item for what that means.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Refusal log lines written per [`REFUSAL_LOG_INTERVAL`] at most. Anyone can make the broker
/// refuse (a garbage token, an unknown route), so a line per refusal would let any client grow
/// the log at its own request rate. Twenty lines per ten seconds still shows an operator every
/// refusal of a quiet day, and what a flood consists of; every refusal is counted in the
/// metrics regardless.
pub const REFUSAL_LOG_LINES: u32 = 20;
/// The window [`REFUSAL_LOG_LINES`] applies to.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
