//! Scale mode: the same exchange and mint runs while the database grows to N workspaces with a
//! policy each. Flat p50 from 1 to N means the hot paths use indexes, not scans, and that no
//! cache grows with the tenants.

use crate::drive::{rss_mb, Run};
use futures::StreamExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_broker::dev::DEV_POLICY;
use sts_broker::policy::PolicyFormat;
use sts_broker::store::{NewPolicy, Store, Workspace};

/// Workspace counts to measure at: 1 (the dev world's own), then powers of ten up to `max`,
/// and `max` itself.
pub(crate) fn points(max: usize) -> Vec<usize> {
    if max == 0 {
        return Vec::new();
    }
    let mut points: Vec<usize> = std::iter::successors(Some(1), |n| Some(n * 10))
        .take_while(|&n| n < max)
        .collect();
    points.push(max);
    points
}

/// What a curve runs against.
pub(crate) struct Curve<'a> {
    pub(crate) store: &'a Arc<dyn Store>,
    pub(crate) http: &'a reqwest::Client,
    pub(crate) base: &'a str,
    pub(crate) sessions: &'a Arc<Vec<String>>,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    /// Exchange and mint runs at each point; the point shows their medians.
    pub(crate) rounds: usize,
}

/// Seeding writes this many workspaces at a time.
const SEED_CONCURRENCY: usize = 32;

/// The middle value (the upper one of an even count); NaN when there is none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The rounds' values of `f`, as `median (min–max)`.
fn spread(runs: &[Run], f: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
    let values: Vec<f64> = runs.iter().map(f).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(values), min, max)
}

impl Curve<'_> {
    pub(crate) async fn run(
        &self,
        points: &[usize],
        mut tokens: Vec<String>,
        per_run: usize,
    ) -> anyhow::Result<()> {
        println!(
            "\n{} rounds of {} s per operation at each point; medians of the rounds, and the \
             p50s' range (min-max)",
            self.rounds,
            self.duration.as_secs()
        );
        println!(
            "{:>10} {:>9} {:>9} {:>20} {:>12} {:>9} {:>20} {:>12} {:>8} {:>9}",
            "workspaces",
            "healthz/s",
            "exch ok/s",
            "exch p50 ms",
            "exch p99 ms",
            "mint ok/s",
            "mint p50 ms",
            "mint p99 ms",
            "RSS MB",
            "seeded s"
        );
        // The dev world's workspace is the first.
        let mut seeded = 1;
        let mut first: Option<(f64, f64)> = None;
        for &point in points {
            let started = Instant::now();
            self.seed(seeded, point).await?;
            let seeding = started.elapsed();
            seeded = seeded.max(point);
            // Exchange and mint rounds alternate, so that a slow spell of the machine lands on
            // both, and the tables grow between the rounds as they do between the points. Each
            // round also measures `/healthz`: on a shared machine the bare request rate shows
            // whether a point was slower for the broker or for the machine.
            let (mut healthz, mut exchanges, mut mints) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..self.rounds {
                healthz.push(
                    crate::drive_healthz(self.http, self.base, self.concurrency, self.duration)
                        .await,
                );
                let batch = tokens.split_off(tokens.len().saturating_sub(per_run));
                exchanges.push(
                    crate::drive_exchanges(
                        self.http,
                        self.base,
                        batch,
                        self.concurrency,
                        self.duration,
                    )
                    .await,
                );
                mints.push(
                    crate::drive_mints(self.http, self.base, self.sessions, self.duration).await,
                );
            }
            let (e50, e50_min, e50_max) = spread(&exchanges, |r| r.percentile_ms(50.0));
            let (m50, m50_min, m50_max) = spread(&mints, |r| r.percentile_ms(50.0));
            println!(
                "{:>10} {:>9.0} {:>9.1} {:>20} {:>12.2} {:>9.1} {:>20} {:>12.2} {:>8.0} {:>9.1}",
                point,
                spread(&healthz, Run::ok_per_second).0,
                spread(&exchanges, Run::ok_per_second).0,
                format!("{e50:.2} ({e50_min:.2}-{e50_max:.2})"),
                spread(&exchanges, |r| r.percentile_ms(99.0)).0,
                spread(&mints, Run::ok_per_second).0,
                format!("{m50:.2} ({m50_min:.2}-{m50_max:.2})"),
                spread(&mints, |r| r.percentile_ms(99.0)).0,
                rss_mb().unwrap_or(f64::NAN),
                seeding.as_secs_f64(),
            );
            for (exchange, mint) in exchanges.iter().zip(&mints) {
                report_errors(&[exchange, mint]);
            }
            let (e1, m1) = *first.get_or_insert((e50, m50));
            if point == *points.last().unwrap_or(&point) && points.len() > 1 {
                println!(
                    "\nmedian p50 at {point} workspaces vs 1: exchange {:+.0} %, mint {:+.0} % \
                     (goal: within 20 %)",
                    (e50 / e1 - 1.0) * 100.0,
                    (m50 / m1 - 1.0) * 100.0,
                );
            }
        }
        Ok(())
    }

    /// Workspaces `from..to` (`scale-00001`, …), each with one policy, written straight to the
    /// store: the admin API would time itself, not the growth.
    async fn seed(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let now = time::OffsetDateTime::now_utc();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(from..to)
            .map(|n| async move {
                let id = format!("scale-{n:05}");
                let workspace = Workspace {
                    id: id.clone(),
                    name: id.clone(),
                    sts_enabled: true,
                    created_at: now,
                    updated_at: now,
                };
                self.store.create_workspace(&workspace).await?;
                let policy = NewPolicy {
                    workspace_id: id,
                    name: "default".to_owned(),
                    source: DEV_POLICY.to_owned(),
                    format: PolicyFormat::Yaml,
                    created_at: now,
                };
                self.store.put_policy(&policy).await?;
                Ok(())
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

fn report_errors(runs: &[&Run]) {
    for run in runs {
        if run.errors > 0 || run.exhausted {
            println!(
                "{:>10} {}: {} errors{}",
                "",
                run.name,
                run.errors,
                if run.exhausted {
                    ", tokens ran out"
                } else {
                    ""
                }
            );
        }
    }
}
