//! The benchmark's scenarios, run the same way against every system:
//!
//! 1. idle: the CPU of the system with nothing connected, then many
//!    connected clients, no traffic; server RSS per connection;
//! 2. fan-out: rooms of 10, the send rate stepped up until p99 passes the
//!    limit, errors appear or deliveries go missing; the last good step is
//!    the system's sustainable rate;
//! 3. latency at 50% of that rate;
//! 4. persistence (Switchboard): messages stored per second at saturation:
//!    every connection in its own room (one delivery per message, so the
//!    edges' fan-out does not hide the store's limit), offered at rising
//!    rates, rows counted as they land;
//! 5. rooms: the room-size sweep;
//! 6. soak (Switchboard): minutes at half the sustainable rate with
//!    connections churning, RSS sampled over time (`soak.rs`).
//!
//! `sbbench all --scenarios ...` runs a subset; latency alone needs
//! `--latency-rate`, as it otherwise takes half of fan-out's sustainable rate.

use std::time::{Duration, Instant};

use anyhow::Context;

use serde::Serialize;
use sqlx::Connection;

use crate::driver::{self, Load, Report};
use crate::procstat;
use crate::soak::{self, Soak};
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
    pub persist_connections: usize,
    /// Offered messages/s of the persistence runs; the best stored rate of
    /// any counts. More than the system stores saturates it, but an offer far
    /// beyond it mostly loads the driver, which shares the cores, so the
    /// steps are close enough to find where storing levels off.
    pub persist_rates: Vec<f64>,
    pub persist_run: Duration,
    /// Before the fan-out steps, this send rate runs in windows of
    /// `warm_window` until the CPU per delivery of two windows in a row
    /// differs by at most [`WARM_SETTLED`] (a broker's JIT takes minutes), or
    /// for at most `warm_max`.
    pub warm_rate: f64,
    pub warm_window: Duration,
    pub warm_max: Duration,
    /// The room-size sweep: this many connections in rooms of each size,
    /// offered each of `room_deliveries` deliveries/s (the send rate is that
    /// over the room size) until a step fails.
    pub room_connections: usize,
    pub room_sizes: Vec<usize>,
    /// Edge processes of Switchboard on Kafka + PostgreSQL (the connections
    /// are spread over them; the embedded default always has two).
    pub edges: usize,
    pub room_deliveries: Vec<f64>,
    /// The soak: this long at half the sustainable rate (`soak_rate` when
    /// fan-out did not run), in rooms of `room_size` with
    /// `fanout_connections`, while `soak_churn` connections a second come
    /// into the loaded rooms and go again after `soak_stay`. RSS is sampled
    /// every `soak_sample`, and the sample at `soak_settle` is what the end
    /// is compared with.
    pub soak_run: Duration,
    pub soak_rate: f64,
    pub soak_churn: f64,
    pub soak_stay: Duration,
    pub soak_sample: Duration,
    pub soak_settle: Duration,
}

/// Two warm-up windows whose CPU per delivery differ by at most this share have settled.
pub const WARM_SETTLED: f64 = 0.10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Idle,
    Fanout,
    Latency,
    Persistence,
    Rooms,
    Soak,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            idle_connections: 24_000,
            fanout_connections: 2_000,
            room_size: 10,
            payload: 128,
            rates: vec![
                250.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 6_000.0, 8_000.0, 10_000.0, 12_000.0, 16_000.0, 24_000.0,
                32_000.0, 48_000.0,
            ],
            warmup: Duration::from_secs(2),
            step: Duration::from_secs(5),
            latency_run: Duration::from_secs(10),
            p99_limit_ms: 100.0,
            persist_connections: 2_000,
            persist_rates: vec![12_000.0, 16_000.0, 20_000.0, 24_000.0],
            persist_run: Duration::from_secs(10),
            warm_rate: 1_000.0,
            warm_window: Duration::from_secs(5),
            warm_max: Duration::from_secs(180),
            room_connections: 10_000,
            room_sizes: vec![2, 10, 100, 1_000, 5_000],
            edges: 2,
            room_deliveries: vec![
                2_500.0,
                5_000.0,
                10_000.0,
                20_000.0,
                40_000.0,
                80_000.0,
                160_000.0,
                320_000.0,
                640_000.0,
                960_000.0,
                1_280_000.0,
            ],
            soak_run: Duration::from_secs(600),
            soak_rate: 1_000.0,
            soak_churn: 5.0,
            soak_stay: Duration::from_secs(5),
            soak_sample: Duration::from_secs(10),
            soak_settle: Duration::from_secs(120),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            idle_connections: 2_000,
            fanout_connections: 500,
            rates: vec![500.0, 1_000.0, 2_000.0],
            step: Duration::from_secs(3),
            latency_run: Duration::from_secs(3),
            persist_rates: vec![6_000.0],
            persist_run: Duration::from_secs(5),
            warm_max: Duration::from_secs(20),
            room_connections: 1_000,
            room_sizes: vec![10, 100],
            room_deliveries: vec![5_000.0, 10_000.0],
            soak_run: Duration::from_secs(30),
            soak_sample: Duration::from_secs(2),
            soak_settle: Duration::from_secs(10),
            ..Plan::full()
        }
    }

    pub(crate) fn load(&self, targets: &[String], connections: usize, rate: f64, duration: Duration) -> Load {
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
    /// Cores the system's processes (broker, database and Redis included)
    /// spend with nothing connected, measured over [`IDLE_CPU_WINDOW`] after
    /// [`IDLE_CPU_SETTLE`] from its start.
    pub idle_cpu_cores: Option<f64>,
    pub idle: Option<Report>,
    pub warmup: Option<Warmup>,
    pub steps: Vec<Step>,
    /// Deliveries/s of the best passing step, with its send rate.
    pub sustainable: Option<(f64, f64)>,
    pub latency: Option<Report>,
    /// Best stored rate over the persistence runs.
    pub persisted_per_sec: Option<f64>,
    pub persistence: Vec<PersistRun>,
    pub rooms: Vec<RoomSweep>,
    pub soak: Option<Soak>,
}

/// One room size of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct RoomSweep {
    pub room_size: usize,
    pub steps: Vec<Step>,
    /// Deliveries/s of the best passing step, with its send rate.
    pub sustainable: Option<(f64, f64)>,
}

impl SystemResult {
    /// A system's result before any scenario has run.
    pub fn new(system: SystemKind) -> Self {
        SystemResult {
            system,
            name: system.name(),
            idle_cpu_cores: None,
            idle: None,
            warmup: None,
            steps: Vec::new(),
            sustainable: None,
            latency: None,
            persisted_per_sec: None,
            persistence: Vec::new(),
            rooms: Vec::new(),
            soak: None,
        }
    }
}

impl RoomSweep {
    /// The best passing step.
    pub fn best(&self) -> Option<&Report> {
        self.steps.iter().filter(|s| s.passed).map(|s| &s.report).next_back()
    }
}

/// How the system warmed up before its fan-out steps.
#[derive(Clone, Debug, Serialize)]
pub struct Warmup {
    pub rate: f64,
    /// CPU-seconds per 1,000 deliveries of each window, every process counted.
    pub windows: Vec<f64>,
    pub seconds: f64,
    /// Whether the last two windows agreed within [`WARM_SETTLED`] (else `warm_max` ran out).
    pub settled: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PersistRun {
    pub offered: f64,
    pub stored_per_sec: f64,
    pub report: Report,
}

/// Which scenarios to run, and the latency run's rate when fan-out does not
/// provide one.
#[derive(Clone, Debug)]
pub struct Selection {
    pub scenarios: Vec<Scenario>,
    pub latency_rate: Option<f64>,
    /// The soak's rate, instead of half the sustainable one.
    pub soak_rate: Option<f64>,
}

impl Selection {
    fn has(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }
}

pub async fn run_system(
    kind: SystemKind,
    plan: &Plan,
    selection: &Selection,
    paths: &Paths,
) -> anyhow::Result<SystemResult> {
    let mut result = SystemResult::new(kind);
    if selection.has(Scenario::Idle) {
        let system = start(kind, plan, paths).await?;
        let cores = idle_cpu(&system.pids).await;
        println!("  idle CPU with nothing connected: {cores:.3} cores");
        result.idle_cpu_cores = Some(cores);
        let report = idle(kind, plan, &system).await?;
        println!(
            "  idle: {} connected ({} failed), {:.0} bytes RSS per connection",
            report.connections - report.connect_failures as usize,
            report.connect_failures,
            report.rss_bytes_per_connection
        );
        result.idle = Some(report);
    }
    if selection.has(Scenario::Fanout) || selection.has(Scenario::Latency) {
        // A fresh start, so idle connections' memory and state do not weigh on the rest.
        let system = start(kind, plan, paths).await?;
        if selection.has(Scenario::Fanout) {
            fanout(kind, plan, &system, &mut result).await?;
        }
        let latency_rate = selection.latency_rate.or(result.sustainable.map(|(_, rate)| rate / 2.0));
        match latency_rate {
            Some(rate) if selection.has(Scenario::Latency) => {
                let load = plan.load(&system.targets, plan.fanout_connections, rate, plan.latency_run);
                let report =
                    driver::run(system.codec.clone(), load, &system.pids, &format!("{} latency", kind.name())).await?;
                println!(
                    "  latency at {rate:.0} msg/s: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms; cores: {}",
                    report.p50_ms,
                    report.p99_ms,
                    report.p999_ms,
                    crate::report::split(&report.server_cpu_split)
                );
                result.latency = Some(report);
            }
            None if selection.has(Scenario::Latency) => {
                println!("  latency: no rate (no fan-out step passed and no --latency-rate)")
            }
            _ => {}
        }
    }
    if selection.has(Scenario::Rooms) {
        // A fresh start is warmed up again (a just-started broker costs
        // seconds of CPU and latency): without it the first room size, rooms
        // of 2, was measured on a cold system.
        let system = start(kind, plan, paths).await?;
        let warmup = warm_up(kind, plan, &system).await?;
        result.warmup.get_or_insert(warmup);
        for &room_size in &plan.room_sizes {
            result.rooms.push(room_sweep(kind, plan, &system, room_size).await?);
        }
    }
    if selection.has(Scenario::Persistence) && kind.persists() {
        for &rate in &plan.persist_rates {
            // A fresh start each time: an earlier run's backlog would count as this one's.
            let system = start(kind, plan, paths).await?;
            let url = system.database.clone().expect("a persisting system names its database");
            let mut load = plan.load(&system.targets, plan.persist_connections, rate, plan.persist_run);
            load.room_size = 1;
            let counting = tokio::spawn(count_rows(url, plan.warmup + plan.persist_run + Duration::from_secs(8)));
            let report =
                driver::run(system.codec.clone(), load, &system.pids, &format!("{} persist {rate}/s", kind.name()))
                    .await?;
            let per_sec = counting.await??;
            println!(
                "  persisted at {rate:.0} msg/s offered: {per_sec:.0} messages/s stored (best 2 s), \
                 {:.0}/s accepted, {} refused",
                report.accepted_per_sec, report.errors
            );
            result.persisted_per_sec = Some(result.persisted_per_sec.unwrap_or(0.0).max(per_sec));
            result.persistence.push(PersistRun { offered: rate, stored_per_sec: per_sec, report });
        }
    }
    if selection.has(Scenario::Soak) && kind.persists() {
        let rate = selection.soak_rate.or(result.sustainable.map(|(_, rate)| rate / 2.0)).unwrap_or(plan.soak_rate);
        // A fresh start, warmed, so the memory compared is this load's alone.
        let system = start(kind, plan, paths).await?;
        warm_up(kind, plan, &system).await?;
        let soak = soak::run(plan, &system, rate, &format!("{} soak", kind.name())).await?;
        println!(
            "  soak at {rate:.0} msg/s for {:.0} s: {} acked, {} of {} delivered, stored {}, churned {}; RSS KiB {}; {}",
            soak.seconds,
            soak.report.acked,
            soak.report.delivered,
            soak.report.expected_deliveries,
            soak.stored.map_or("-".into(), |n| n.to_string()),
            soak.churn.came_and_went,
            soak.rss_line(),
            soak.verdict()
        );
        result.soak = Some(soak);
    }
    Ok(result)
}

/// How long a system is left alone after its start before its idle CPU is measured.
pub const IDLE_CPU_SETTLE: Duration = Duration::from_secs(5);
/// How long its idle CPU is measured.
pub const IDLE_CPU_WINDOW: Duration = Duration::from_secs(10);

/// Cores the processes (and their children) spend while nothing is
/// connected: what a deployment costs when nobody chats.
async fn idle_cpu(pids: &[u32]) -> f64 {
    tokio::time::sleep(IDLE_CPU_SETTLE).await;
    let before = procstat::total(pids).cpu_seconds;
    tokio::time::sleep(IDLE_CPU_WINDOW).await;
    (procstat::total(pids).cpu_seconds - before) / IDLE_CPU_WINDOW.as_secs_f64()
}

/// Connections one driver process holds: one process may have 20,000
/// descriptors here, and needs a few for itself.
const PER_DRIVER: usize = 12_000;

/// Idle connections from several `sbbench hold` processes at once; the
/// memory of the processes clients connect to is read once they are all up. A system served by one process is
/// held to what one process can accept here (its `max_connections`).
async fn idle(kind: SystemKind, plan: &Plan, system: &systems::System) -> anyhow::Result<Report> {
    use tokio::io::AsyncBufReadExt;
    let connections = plan.idle_connections.min(system.max_connections);
    if connections < plan.idle_connections {
        println!(
            "  idle: {connections} connections, not {}: {} runs as one process",
            plan.idle_connections,
            kind.name()
        );
    }
    let before = crate::procstat::total(&system.front_pids);
    let exe = std::env::current_exe()?;
    let mut drivers = Vec::new();
    for first in (0..connections).step_by(PER_DRIVER) {
        let mut child = tokio::process::Command::new(&exe)
            .arg("hold")
            .arg(format!("--protocol={}", protocol_name(system.codec.protocol)))
            .arg(format!("--targets={}", system.targets.join(",")))
            .arg(format!("--first={first}"))
            .arg(format!("--connections={}", PER_DRIVER.min(connections - first)))
            .arg(format!("--room-size={}", plan.room_size))
            .env("SB_JWT_SECRET", &system.codec.secret)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        drivers.push((child, lines));
    }
    let (mut ok, mut failed) = (0, 0);
    for (_, lines) in &mut drivers {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .context("a hold driver did not connect within 5 minutes")??
            .context("a hold driver exited before connecting")?;
        let counts: Vec<usize> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
        let [o, f] = counts[..] else { anyhow::bail!("hold driver said {line:?}") };
        (ok, failed) = (ok + o, failed + f);
    }
    let at_connect = crate::procstat::total(&system.front_pids).rss_kib;
    // Hold a moment so memory settles; the larger of the two readings counts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = crate::procstat::total(&system.front_pids).rss_kib;
    for (mut child, _) in drivers {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let rss_connected = at_connect.max(settled);
    Ok(Report {
        connections,
        connect_failures: failed as u64,
        rooms: connections.div_ceil(plan.room_size),
        server_rss_kib_before: before.rss_kib,
        server_rss_kib_connected: rss_connected,
        rss_bytes_per_connection: (rss_connected.saturating_sub(before.rss_kib) * 1024) as f64 / ok.max(1) as f64,
        ..Report::default()
    })
}

/// Starts a system and, for Switchboard, waits until a message comes
/// through: a broker that has just started takes a while to elect its
/// group coordinators, and that would count against the first step.
async fn start(kind: SystemKind, plan: &Plan, paths: &Paths) -> anyhow::Result<systems::System> {
    let system = systems::start(kind, plan.edges, paths)?;
    if kind.persists() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let probe = Load {
                targets: system.targets.clone(),
                connections: 2,
                room_size: 2,
                rate: 4.0,
                payload: 16,
                warmup: Duration::ZERO,
                duration: Duration::from_secs(2),
                sources: 1,
            };
            if driver::run(system.codec.clone(), probe, &[], "first message").await?.delivered > 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no message came through {} within 90 s", kind.name());
        }
    }
    Ok(system)
}

fn protocol_name(protocol: crate::protocol::Protocol) -> String {
    use clap::ValueEnum;
    protocol.to_possible_value().expect("every protocol has a name").get_name().to_owned()
}

/// Runs the warm-up rate until the system's CPU per delivery settles: a
/// system measured cold (a broker's JIT above all) costs more per message
/// than it will a few minutes later, and its figures would not reproduce.
async fn warm_up(kind: SystemKind, plan: &Plan, system: &systems::System) -> anyhow::Result<Warmup> {
    let started = Instant::now();
    let mut windows: Vec<f64> = Vec::new();
    let settled = |w: &[f64]| match w {
        [.., a, b] => (a - b).abs() <= WARM_SETTLED * a.max(*b),
        _ => false,
    };
    while !settled(&windows) && started.elapsed() < plan.warm_max {
        let load = plan.load(&system.targets, plan.fanout_connections, plan.warm_rate, plan.warm_window);
        let report = driver::run(system.codec.clone(), load, &system.pids, &format!("{} warm-up", kind.name())).await?;
        windows.push(report.server_cpu_seconds * 1000.0 / report.delivered.max(1) as f64);
    }
    let warmup =
        Warmup { rate: plan.warm_rate, settled: settled(&windows), windows, seconds: started.elapsed().as_secs_f64() };
    println!(
        "  warm-up at {:.0} msg/s: {:.0} s, CPU-s per 1,000 deliveries {} ({})",
        warmup.rate,
        warmup.seconds,
        warmup.windows.iter().map(|w| format!("{w:.3}")).collect::<Vec<_>>().join(" -> "),
        if warmup.settled { "settled" } else { "not settled: the time ran out" }
    );
    Ok(warmup)
}

/// Warms the system up, then steps the send rate up until a step fails;
/// the last good one is sustainable.
async fn fanout(
    kind: SystemKind,
    plan: &Plan,
    system: &systems::System,
    result: &mut SystemResult,
) -> anyhow::Result<()> {
    result.warmup = Some(warm_up(kind, plan, system).await?);
    let loads = plan.rates.iter().map(|&rate| {
        (format!("{rate:>6} msg/s"), plan.load(&system.targets, plan.fanout_connections, rate, plan.step))
    });
    (result.steps, result.sustainable) = step_up(kind, plan, system, loads).await?;
    Ok(())
}

/// Steps the deliveries/s up in rooms of `room_size` (the same connections
/// throughout) until a step fails.
async fn room_sweep(
    kind: SystemKind,
    plan: &Plan,
    system: &systems::System,
    room_size: usize,
) -> anyhow::Result<RoomSweep> {
    let connections = plan.room_connections.min(system.max_connections);
    let loads = plan.room_deliveries.iter().map(|&deliveries| {
        let rate = deliveries / room_size as f64;
        let mut load = plan.load(&system.targets, connections, rate, plan.step);
        load.room_size = room_size;
        (format!("rooms of {room_size:>5}, {rate:>8.1} msg/s"), load)
    });
    let (steps, sustainable) = step_up(kind, plan, system, loads).await?;
    Ok(RoomSweep { room_size, steps, sustainable })
}

/// Runs the loads in turn until one fails; returns the steps run and the
/// deliveries/s of the last passing one, with its send rate.
async fn step_up(
    kind: SystemKind,
    plan: &Plan,
    system: &systems::System,
    loads: impl Iterator<Item = (String, Load)>,
) -> anyhow::Result<(Vec<Step>, Option<(f64, f64)>)> {
    let (mut steps, mut sustainable) = (Vec::new(), None);
    for (label, load) in loads {
        let rate = load.rate;
        let report = driver::run(system.codec.clone(), load, &system.pids, &format!("{} {label}", kind.name())).await?;
        let why_not = verdict(&report, plan.p99_limit_ms);
        println!(
            "  {label}: {:>9.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, errors {}, missing {}, cpu {:.2} cores{}",
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
            sustainable = Some((report.deliveries_per_sec, rate));
        }
        steps.push(Step { report, passed, why_not });
        if !passed {
            break;
        }
    }
    Ok((steps, sustainable))
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
    let started = Instant::now();
    let mut samples: Vec<(Instant, i64)> = Vec::new();
    while started.elapsed() < span {
        if let Ok(n) = count_messages(&url).await {
            samples.push((Instant::now(), n as i64));
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

/// Messages in a Switchboard store (SQLite or PostgreSQL URL).
pub(crate) async fn count_messages(url: &str) -> anyhow::Result<u64> {
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(url).await.with_context(|| format!("connect to {url}"))?;
    let (n,) = sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM messages").fetch_one(&mut db).await?;
    let _ = db.close().await;
    Ok(n as u64)
}
