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
}

/// Seeding writes this many workspaces at a time.
const SEED_CONCURRENCY: usize = 32;

impl Curve<'_> {
    pub(crate) async fn run(
        &self,
        points: &[usize],
        mut tokens: Vec<String>,
        per_point: usize,
    ) -> anyhow::Result<()> {
        println!(
            "\n{:>10} {:>9} {:>12} {:>12} {:>9} {:>12} {:>12} {:>8} {:>9}",
            "workspaces",
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
        for &point in points {
            let started = Instant::now();
            self.seed(seeded, point).await?;
            let seeding = started.elapsed();
            seeded = seeded.max(point);
            let batch = tokens.split_off(tokens.len().saturating_sub(per_point));
            let exchanges = crate::drive_exchanges(
                self.http,
                self.base,
                batch,
                self.concurrency,
                self.duration,
            )
            .await;
            let mints =
                crate::drive_mints(self.http, self.base, self.sessions, self.duration).await;
            println!(
                "{:>10} {:>9.1} {:>12.2} {:>12.2} {:>9.1} {:>12.2} {:>12.2} {:>8.0} {:>9.1}",
                point,
                exchanges.ok_per_second(),
                exchanges.percentile_ms(50.0),
                exchanges.percentile_ms(99.0),
                mints.ok_per_second(),
                mints.percentile_ms(50.0),
                mints.percentile_ms(99.0),
                rss_mb().unwrap_or(f64::NAN),
                seeding.as_secs_f64(),
            );
            report_errors(&[&exchanges, &mints]);
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
