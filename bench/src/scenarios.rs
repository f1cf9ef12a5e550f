//! The benchmark's scenarios, run the same way against every system:
//!
//! 1. idle: many connected clients, no traffic; server RSS per connection;
//! 2. fan-out: rooms of 10, the send rate stepped up until p99 passes the
//!    limit, errors appear or deliveries go missing; the last good step is
//!    the system's sustainable rate;
//! 3. latency at 50% of that rate;
//! 4. persistence (Switchboard): messages stored per second at saturation.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Connection;

use crate::driver::{self, Load, Report};
use crate::systems::{self, Paths, SystemKind};

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub idle_connections: usize,
    pub fanout_connections: usize,
    pub room_size: usize,
    pub payload: usize,
    /// Messages per second, in order; stepping stops at the first failing one.
    pub rates: Vec<f64>,
    pub warmup: Duration,
    pub step: Duration,
    pub latency_run: Duration,
    pub p99_limit_ms: f64,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            // One process may hold 20,000 descriptors here (hard limit), and the
            // driver needs a few for itself and /proc: 19,500 is as far as one driver goes.
            idle_connections: 19_500,
            fanout_connections: 2_000,
            room_size: 10,
            payload: 128,
            rates: vec![250.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 6_000.0, 8_000.0, 12_000.0, 16_000.0, 24_000.0],
            warmup: Duration::from_secs(2),
            step: Duration::from_secs(5),
            latency_run: Duration::from_secs(10),
            p99_limit_ms: 100.0,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            idle_connections: 2_000,
            fanout_connections: 500,
            rates: vec![500.0, 1_000.0, 2_000.0],
            step: Duration::from_secs(3),
            latency_run: Duration::from_secs(3),
            ..Plan::full()
        }
    }

    fn load(&self, targets: &[String], connections: usize, rate: f64, duration: Duration) -> Load {
        Load {
            targets: targets.to_vec(),
            connections,
            room_size: self.room_size,
            rate,
            payload: self.payload,
            warmup: if rate > 0.0 { self.warmup } else { Duration::ZERO },
            duration,
            sources: 8,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub report: Report,
    pub passed: bool,
    pub why_not: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SystemResult {
    pub system: SystemKind,
    pub name: &'static str,
    pub idle: Option<Report>,
    pub steps: Vec<Step>,
    /// Deliveries/s of the best passing step, with its send rate.
    pub sustainable: Option<(f64, f64)>,
    pub latency: Option<Report>,
    pub persisted_per_sec: Option<f64>,
}

pub async fn run_system(kind: SystemKind, plan: &Plan, paths: &Paths) -> anyhow::Result<SystemResult> {
    let mut result = SystemResult {
        system: kind,
        name: kind.name(),
        idle: None,
        steps: Vec::new(),
        sustainable: None,
        latency: None,
        persisted_per_sec: None,
    };
    {
        let system = systems::start(kind, paths)?;
        let load = plan.load(&system.targets, plan.idle_connections, 0.0, Duration::ZERO);
        let report = driver::run(system.codec.clone(), load, &system.pids, &format!("{} idle", kind.name())).await?;
        println!(
            "  idle: {} connected ({} failed), {:.0} bytes RSS per connection",
            report.connections - report.connect_failures as usize,
            report.connect_failures,
            report.rss_bytes_per_connection
        );
        result.idle = Some(report);
    }
    // A fresh start, so idle connections' memory and state do not weigh on the rest.
    let system = systems::start(kind, paths)?;
    for &rate in &plan.rates {
        let load = plan.load(&system.targets, plan.fanout_connections, rate, plan.step);
        let report =
            driver::run(system.codec.clone(), load, &system.pids, &format!("{} {rate}/s", kind.name())).await?;
        let why_not = verdict(&report, plan.p99_limit_ms);
        println!(
            "  {rate:>6} msg/s: {:>9.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, errors {}, missing {}, cpu {:.2} cores{}",
            report.deliveries_per_sec,
            report.p50_ms,
            report.p99_ms,
            report.errors,
            report.expected_deliveries.saturating_sub(report.delivered),
            report.server_cpu_cores,
            why_not.as_ref().map(|w| format!("  -> stop: {w}")).unwrap_or_default()
        );
        let passed = why_not.is_none();
        if passed {
            result.sustainable = Some((report.deliveries_per_sec, rate));
        }
        result.steps.push(Step { report, passed, why_not });
        if !passed {
            break;
        }
    }
    if let Some((_, rate)) = result.sustainable {
        let load = plan.load(&system.targets, plan.fanout_connections, rate / 2.0, plan.latency_run);
        let report = driver::run(system.codec.clone(), load, &system.pids, &format!("{} latency", kind.name())).await?;
        println!(
            "  latency at {:.0} msg/s: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
            rate / 2.0,
            report.p50_ms,
            report.p99_ms,
            report.p999_ms
        );
        result.latency = Some(report);
    }
    if let Some(url) = system.database.clone() {
        // Saturate: the fastest step's rate (or the last tried), and count rows as they land.
        let rate = result.steps.last().map(|s| s.report.rate_target).unwrap_or(plan.rates[0]);
        let load = plan.load(&system.targets, plan.fanout_connections, rate, plan.step);
        let counting = tokio::spawn(count_rows(url, plan.warmup + plan.step + Duration::from_secs(8)));
        driver::run(system.codec.clone(), load, &system.pids, &format!("{} persist", kind.name())).await?;
        let per_sec = counting.await??;
        println!("  persisted at {rate:.0} msg/s offered: {per_sec:.0} messages/s stored (best 2 s)");
        result.persisted_per_sec = Some(per_sec);
    }
    Ok(result)
}

/// Why a step does not count as sustainable, if it does not.
fn verdict(report: &Report, p99_limit_ms: f64) -> Option<String> {
    let missing = report.expected_deliveries.saturating_sub(report.delivered);
    if report.connect_failures > 0 {
        Some(format!("{} connections failed", report.connect_failures))
    } else if report.errors > 0 {
        Some(format!("{} errors", report.errors))
    } else if report.p99_ms > p99_limit_ms {
        Some(format!("p99 {:.1} ms > {p99_limit_ms} ms", report.p99_ms))
    } else if missing as f64 > report.expected_deliveries as f64 * 0.001 {
        Some(format!("{missing} deliveries missing"))
    } else {
        None
    }
}

/// Samples the stored-message count every 250 ms for `span` and returns the
/// best rate over any 2 s stretch.
async fn count_rows(url: String, span: Duration) -> anyhow::Result<f64> {
    sqlx::any::install_default_drivers();
    let started = Instant::now();
    let mut samples: Vec<(Instant, i64)> = Vec::new();
    while started.elapsed() < span {
        if let Ok(mut db) = sqlx::AnyConnection::connect(&url).await {
            if let Ok((n,)) = sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM messages").fetch_one(&mut db).await {
                samples.push((Instant::now(), n));
            }
            let _ = db.close().await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut best = 0.0f64;
    for (i, &(t0, n0)) in samples.iter().enumerate() {
        if let Some(&(t1, n1)) = samples[i..].iter().find(|(t, _)| t.duration_since(t0) >= Duration::from_secs(2)) {
            best = best.max((n1 - n0) as f64 / t1.duration_since(t0).as_secs_f64());
        }
    }
    Ok(best)
}
