//! Closed-loop drivers: N clients each send one request, wait for the answer, send the next,
//! until the time is up; every answer's latency is kept.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one request came to.
pub(crate) enum Outcome {
    /// The answer the operation expects.
    Ok,
    /// Anything else (status, body, transport).
    Failed,
    /// Nothing left to send (the single-use token pool is spent): this client stops.
    Exhausted,
}

/// What one operation's run measured.
pub(crate) struct Run {
    pub(crate) name: String,
    /// Latencies of the `Ok` answers, sorted.
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: usize,
    pub(crate) elapsed: Duration,
    /// Whether some client ran out of work before the time was up.
    pub(crate) exhausted: bool,
}

impl Run {
    pub(crate) fn ok_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        // Nearest rank: the smallest latency at or above which p% of samples lie.
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    pub(crate) fn header() -> String {
        format!(
            "{:<14} {:>8} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "operation", "ok", "errors", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )
    }

    pub(crate) fn row(&self) -> String {
        format!(
            "{:<14} {:>8} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            self.name,
            self.latencies.len(),
            self.errors,
            self.ok_per_second(),
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0),
        )
    }
}

/// Run `op(client)` in a loop on `concurrency` clients for `duration`.
pub(crate) async fn drive<F, Fut>(name: &str, concurrency: usize, duration: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut exhausted) = (0usize, false);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match op(client).await {
                        Outcome::Ok => latencies.push(sent.elapsed()),
                        Outcome::Failed => errors += 1,
                        Outcome::Exhausted => {
                            exhausted = true;
                            break;
                        }
                    }
                }
                (latencies, errors, exhausted)
            })
        })
        .collect();
    let mut run = Run {
        name: name.to_owned(),
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
        exhausted: false,
    };
    for client in clients {
        // A client task only ends by returning: its loop has no panicking step.
        if let Ok((latencies, errors, exhausted)) = client.await {
            run.latencies.extend(latencies);
            run.errors += errors;
            run.exhausted |= exhausted;
        }
    }
    run.elapsed = start.elapsed();
    run.latencies.sort_unstable();
    run
}

/// Resident set size of this process (broker, simulators and clients together), in MB.
pub(crate) fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
