//! The soak: a long run at half the sustainable rate while connections
//! churn (a few per second connect, join a loaded room or a new one of
//! their own, stay a moment and go), with the RSS of every process of the system sampled over time.
//! Afterwards every send must have been delivered to every member and every
//! acked send stored, and each Switchboard process must end near the memory
//! it held once the load had settled: a leak is a defect even when every
//! other figure is met.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::churn::{self, Churn, ChurnReport};
use crate::driver::{self, Report};
use crate::scenarios::{Plan, count_messages};
use crate::{procstat, systems};

/// Processes that are not Switchboard's: a JVM's heap and PostgreSQL's
/// shared buffers grow towards their configured sizes whatever the load, so
/// they are plotted but not judged.
const NOT_JUDGED: [&str; 2] = ["kafka", "postgres"];

/// A process holds if it ends within this share of its settled RSS...
const MARGIN_SHARE: f64 = 0.05;
/// ...or within this many KiB (allocator noise on a small process).
const MARGIN_KIB: u64 = 4 * 1024;

#[derive(Clone, Debug, Serialize)]
pub struct Soak {
    pub rate: f64,
    pub churn_rate: f64,
    pub seconds: f64,
    /// The driver's figures over the whole run (no warm-up window: the
    /// system was warmed before).
    pub report: Report,
    pub churn: ChurnReport,
    /// Messages stored during the soak, counted once the store stopped growing.
    pub stored: Option<u64>,
    /// Resident KiB per process name, sampled from the soak's start (seconds).
    pub rss: Vec<(f64, BTreeMap<String, u64>)>,
    pub growth: BTreeMap<String, Growth>,
    /// What went wrong; empty when every check held.
    pub findings: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Growth {
    /// RSS at the first sample after `soak_settle`.
    pub settled_kib: u64,
    /// RSS at the last sample under load.
    pub end_kib: u64,
    /// Whether this process is Switchboard's and so held to the margin.
    pub judged: bool,
}

impl Soak {
    /// Each process's RSS at the settle point and at the end: `edge 63332 → 63864`.
    pub fn rss_line(&self) -> String {
        let parts: Vec<String> =
            self.growth.iter().map(|(name, g)| format!("{name} {} → {}", g.settled_kib, g.end_kib)).collect();
        parts.join(", ")
    }

    /// `clean`, or what went wrong.
    pub fn verdict(&self) -> String {
        if self.findings.is_empty() { "clean".to_owned() } else { self.findings.join("; ") }
    }
}

impl Growth {
    pub fn holds(&self) -> bool {
        let margin = ((self.settled_kib as f64 * MARGIN_SHARE) as u64).max(MARGIN_KIB);
        !self.judged || self.end_kib <= self.settled_kib + margin
    }
}

/// Runs the soak against a started, warmed system.
pub async fn run(plan: &Plan, system: &systems::System, rate: f64, label: &str) -> anyhow::Result<Soak> {
    let before = match &system.database {
        Some(url) => Some(settled_count(url).await?),
        None => None,
    };
    let mut load = plan.load(&system.targets, plan.fanout_connections, rate, plan.soak_run);
    load.warmup = Duration::ZERO;
    let rooms = plan.fanout_connections.div_ceil(plan.room_size);
    let churning = Churn {
        rooms: (0..rooms).map(|r| format!("room-{r}")).collect(),
        rate: plan.soak_churn,
        duration: plan.soak_run,
        stay: plan.soak_stay,
        half_alone: true,
    };
    // The driver's load starts once its connections are up, a few seconds
    // in, so every sample up to `soak_run` is taken under load.
    let (report, churned, rss) = tokio::join!(
        driver::run(system.codec.clone(), load.clone(), &system.pids, label),
        churn::run(system.codec.clone(), load, churning),
        sample_rss(&system.pids, plan.soak_sample, plan.soak_run),
    );
    let (report, churned) = (report?, churned?);
    let stored = match (&system.database, before) {
        (Some(url), Some(before)) => Some(settled_count(url).await?.saturating_sub(before)),
        _ => None,
    };
    let growth = growth(&rss, plan.soak_settle.as_secs_f64());
    let findings = findings(&report, &churned, stored, &growth);
    Ok(Soak {
        rate,
        churn_rate: plan.soak_churn,
        seconds: plan.soak_run.as_secs_f64(),
        report,
        churn: churned,
        stored,
        rss,
        growth,
        findings,
    })
}

/// Each process's RSS every `every` for `span`, and at its end.
async fn sample_rss(pids: &[u32], every: Duration, span: Duration) -> Vec<(f64, BTreeMap<String, u64>)> {
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        samples.push((started.elapsed().as_secs_f64(), procstat::rss_by_name(pids)));
        let left = span.saturating_sub(started.elapsed());
        if left.is_zero() {
            return samples;
        }
        tokio::time::sleep(every.min(left)).await;
    }
}

/// Each process's RSS at the first sample from `settle_secs` on and at the
/// last sample.
fn growth(rss: &[(f64, BTreeMap<String, u64>)], settle_secs: f64) -> BTreeMap<String, Growth> {
    let settled = rss.iter().find(|(t, _)| *t >= settle_secs);
    let (Some((_, settled)), Some((_, end))) = (settled, rss.last()) else { return BTreeMap::new() };
    settled
        .iter()
        .filter_map(|(name, &settled_kib)| {
            let end_kib = *end.get(name)?;
            Some((name.clone(), Growth { settled_kib, end_kib, judged: !NOT_JUDGED.contains(&name.as_str()) }))
        })
        .collect()
}

fn findings(
    report: &Report,
    churned: &ChurnReport,
    stored: Option<u64>,
    growth: &BTreeMap<String, Growth>,
) -> Vec<String> {
    let mut found = Vec::new();
    if report.connect_failures > 0 {
        found.push(format!("{} connections failed", report.connect_failures));
    }
    if report.errors > 0 {
        found.push(format!("{} sends refused", report.errors));
    }
    let missing = report.expected_deliveries.saturating_sub(report.delivered);
    if missing > 0 {
        found.push(format!("{missing} of {} deliveries missing", report.expected_deliveries));
    }
    if report.delivered > report.expected_deliveries {
        found.push(format!("{} deliveries more than sent", report.delivered - report.expected_deliveries));
    }
    if report.acked < report.sent {
        found.push(format!("{} of {} sends not acked", report.sent - report.acked, report.sent));
    }
    if let Some(stored) = stored
        && stored < report.acked
    {
        found.push(format!("{} acked sends not stored", report.acked - stored));
    }
    if churned.failed > 0 {
        found.push(format!("{} churning connections failed", churned.failed));
    }
    if growth.is_empty() {
        found.push("too few RSS samples to compare".into());
    }
    for (name, g) in growth.iter().filter(|(_, g)| !g.holds()) {
        found.push(format!("{name} grew from {} to {} KiB", g.settled_kib, g.end_kib));
    }
    found
}

/// The stored-message count once it stops rising (1 s apart, twice the
/// same), at most a minute after the load: the store may still be catching up.
async fn settled_count(url: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = count_messages(url).await?;
    let mut same = 0;
    while same < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = count_messages(url).await?;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, edge: u64, kafka: u64) -> (f64, BTreeMap<String, u64>) {
        (t, BTreeMap::from([("edge".to_owned(), edge), ("kafka".to_owned(), kafka)]))
    }

    #[test]
    fn a_switchboard_process_that_keeps_growing_is_a_finding_and_the_broker_is_not_judged() {
        let rss = [sample(0.0, 10_000, 300_000), sample(60.0, 50_000, 400_000), sample(600.0, 80_000, 900_000)];
        let growth = growth(&rss, 60.0);
        assert_eq!(growth["edge"].settled_kib, 50_000);
        assert_eq!(growth["edge"].end_kib, 80_000);
        assert!(!growth["edge"].holds());
        assert!(growth["kafka"].holds(), "the broker is plotted, not judged");
        let report = Report { sent: 10, acked: 10, expected_deliveries: 100, delivered: 100, ..Report::default() };
        let found = findings(&report, &ChurnReport::default(), Some(10), &growth);
        assert_eq!(found, ["edge grew from 50000 to 80000 KiB"]);
    }

    #[test]
    fn small_growth_holds_and_lost_messages_are_findings() {
        let rss = [sample(0.0, 10_000, 1), sample(60.0, 100_000, 1), sample(600.0, 104_000, 1)];
        let growth = growth(&rss, 60.0);
        assert!(growth["edge"].holds(), "4% of the settled RSS is within the margin");
        let report = Report { sent: 10, acked: 9, expected_deliveries: 100, delivered: 98, ..Report::default() };
        let found = findings(&report, &ChurnReport::default(), Some(8), &growth);
        assert_eq!(found, ["2 of 100 deliveries missing", "1 of 10 sends not acked", "1 acked sends not stored"]);
    }
}
