//! The side-by-side summary (markdown) with the ratios the targets are about.

use std::fmt::Write;
use std::time::Duration;

use crate::scenarios::{Plan, SystemResult};
use crate::systems::SystemKind;

pub fn summary(plan: &Plan, results: &[SystemResult], took: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark summary\n");
    let _ = writeln!(
        s,
        "Plan: {} idle connections; fan-out with {} connections in rooms of {}, {} B payloads, steps of {:?} \
         after {:?} warm-up, p99 limit {} ms; latency run {:?} at half the sustainable rate; \
         persistence with {} connections in rooms of 1 offered {:?} msg/s for {:?} each. \
         Idle CPU: every process of the system with nothing connected, over {:?} after {:?} from its start. \
         Before the fan-out steps each system runs {:.0} msg/s in {:?} windows until its CPU per delivery \
         settles (two windows within {:.0}%, at most {:?}). \
         Switchboard on Kafka + PostgreSQL runs {} edge processes. \
         Driver and servers share this machine. Took {:.0?}.\n",
        plan.idle_connections,
        plan.fanout_connections,
        plan.room_size,
        plan.payload,
        plan.step,
        plan.warmup,
        plan.p99_limit_ms,
        plan.latency_run,
        plan.persist_connections,
        plan.persist_rates,
        plan.persist_run,
        crate::scenarios::IDLE_CPU_WINDOW,
        crate::scenarios::IDLE_CPU_SETTLE,
        plan.warm_rate,
        plan.warm_window,
        crate::scenarios::WARM_SETTLED * 100.0,
        plan.warm_max,
        plan.edges,
        took
    );
    let _ = writeln!(
        s,
        "| system | idle CPU | RSS per idle conn | sustainable deliveries/s (at msg/s) | p50 / p99 / p99.9 at 50% | server CPU at 50% | CPU-s per 1,000 deliveries at 50% | persisted msg/s |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in results {
        let idle = r.idle.as_ref().map_or("-".into(), |i| {
            let ok = i.connections as u64 - i.connect_failures;
            format!("{:.1} KiB ({ok} conns)", i.rss_bytes_per_connection / 1024.0)
        });
        let sustainable = r.sustainable.map_or("none passed".into(), |(d, rate)| format!("{d:.0} ({rate:.0})"));
        let latency = r
            .latency
            .as_ref()
            .map_or("-".into(), |l| format!("{:.1} / {:.1} / {:.1} ms", l.p50_ms, l.p99_ms, l.p999_ms));
        let cpu = r.latency.as_ref().map_or("-".into(), |l| format!("{:.2} cores", l.server_cpu_cores));
        // Every process of the system counts (broker, database, Redis), so
        // this says which system is cheaper, not only which is faster.
        let per_thousand = r
            .latency
            .as_ref()
            .filter(|l| l.deliveries_per_sec > 0.0)
            .map_or("-".into(), |l| format!("{:.3}", l.server_cpu_cores * 1000.0 / l.deliveries_per_sec));
        let idle_cpu = r.idle_cpu_cores.map_or("-".into(), |c| format!("{c:.3} cores"));
        let persisted = r.persisted_per_sec.map_or("-".into(), |p| format!("{p:.0}"));
        let _ = writeln!(
            s,
            "| {} | {idle_cpu} | {idle} | {sustainable} | {latency} | {cpu} | {per_thousand} | {persisted} |",
            r.name
        );
    }
    let find = |kind: SystemKind| results.iter().find(|r| r.system == kind);
    let (sio, ceiling) = (find(SystemKind::Socketio), find(SystemKind::Ceiling));
    let deliveries = |r: Option<&SystemResult>| r.and_then(|r| r.sustainable).map(|(d, _)| d);
    fn latency(r: Option<&SystemResult>) -> Option<&crate::driver::Report> {
        r.and_then(|r| r.latency.as_ref())
    }
    let per_thousand = |r: Option<&SystemResult>| {
        latency(r).filter(|l| l.deliveries_per_sec > 0.0).map(|l| l.server_cpu_cores * 1000.0 / l.deliveries_per_sec)
    };
    let rss = |r: Option<&SystemResult>| r.and_then(|r| r.idle.as_ref()).map(|i| i.rss_bytes_per_connection / 1024.0);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!(" ({:.2}× the ceiling's)", a / b),
        _ => String::new(),
    };
    // The targets of the scale issue, for rooms of 10; the benchmark reports
    // where each system stands and never fails on them.
    let _ = writeln!(s, "\n## Targets\n");
    for sb in [find(SystemKind::Switchboard), find(SystemKind::SwitchboardKafka)].into_iter().flatten() {
        let embedded = sb.system == SystemKind::Switchboard;
        let _ = writeln!(s, "{}:\n", sb.name);
        if let (Some(a), Some(b)) = (deliveries(Some(sb)), deliveries(sio)) {
            let target = if embedded { "≥ 1×" } else { "≥ 2×" };
            let _ = writeln!(s, "- deliveries/s vs Socket.IO: {:.2}× (target {target})", a / b);
        }
        if let (Some(a), Some(c)) = (deliveries(Some(sb)), deliveries(ceiling)) {
            let target = if embedded { "" } else { " (target ≥ 0.75×)" };
            let _ = writeln!(s, "- deliveries/s vs the bare ceiling: {:.2}×{target}", a / c);
        }
        if let Some(l) = latency(Some(sb)) {
            let _ = writeln!(
                s,
                "- p50 / p99 at 50%: {:.1} / {:.1} ms (target ≤ 5 / ≤ 25 ms){}",
                l.p50_ms,
                l.p99_ms,
                latency(sio).map(|b| format!("; Socket.IO {:.1} / {:.1} ms", b.p50_ms, b.p99_ms)).unwrap_or_default()
            );
        }
        if let Some(c) = per_thousand(Some(sb)) {
            let _ = writeln!(s, "- CPU-s per 1,000 deliveries at 50%: {c:.3}{}", ratio(Some(c), per_thousand(ceiling)));
        }
        if let Some(kib) = rss(Some(sb)) {
            let _ = writeln!(
                s,
                "- RSS per idle connection: {kib:.1} KiB{} (target ≤ 4 KiB)",
                ratio(Some(kib), rss(ceiling))
            );
        }
        if let Some(c) = sb.idle_cpu_cores {
            let target = if embedded { " (target < 0.02 cores)" } else { "" };
            let _ = writeln!(s, "- idle CPU: {c:.3} cores{target}");
        }
        if let Some(p) = sb.persisted_per_sec {
            let target = if embedded { "" } else { " (target ≥ 50,000)" };
            let _ = writeln!(s, "- persisted: {p:.0} messages/s{target}");
        }
        let _ = writeln!(s);
    }
    if results.iter().any(|r| !r.rooms.is_empty()) {
        let _ = writeln!(
            s,
            "## Room sizes\n\n{} connections in rooms of each size; the best passing step of deliveries/s \
             (p99 ≤ {} ms, nothing missing), and its ratio to Socket.IO + Redis and to the bare ceiling.\n",
            plan.room_connections, plan.p99_limit_ms
        );
        let _ = writeln!(
            s,
            "| system | room size | sustainable deliveries/s (at msg/s) | p50 / p99 | server CPU | vs Socket.IO | vs ceiling |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |");
        let sweep_of = |kind: SystemKind, size: usize| {
            find(kind)
                .and_then(|r| r.rooms.iter().find(|w| w.room_size == size))
                .and_then(|w| w.sustainable)
                .map(|(d, _)| d)
        };
        for r in results {
            for sweep in &r.rooms {
                let best = sweep.best();
                let sustainable =
                    sweep.sustainable.map_or("none passed".into(), |(d, rate)| format!("{d:.0} ({rate:.1})"));
                let latency = best.map_or("-".into(), |b| format!("{:.1} / {:.1} ms", b.p50_ms, b.p99_ms));
                let cpu = best.map_or("-".into(), |b| format!("{:.2} cores", b.server_cpu_cores));
                let d = sweep.sustainable.map(|(d, _)| d);
                let vs = |other: Option<f64>| match (d, other) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {sustainable} | {latency} | {cpu} | {} | {} |",
                    r.name,
                    sweep.room_size,
                    vs(sweep_of(SystemKind::Socketio, sweep.room_size)),
                    vs(sweep_of(SystemKind::Ceiling, sweep.room_size))
                );
            }
        }
        let _ = writeln!(s);
    }
    if results.iter().any(|r| r.latency.is_some()) {
        let _ = writeln!(
            s,
            "## Where the CPU goes\n\nCores per process at the latency run (half the sustainable rate; processes \
             of one name summed, e.g. two edges), and CPU-s per 1,000 deliveries of each.\n"
        );
        for r in results {
            if let Some(l) = &r.latency {
                let per_thousand = |cores: f64| cores * 1000.0 / l.deliveries_per_sec.max(1.0);
                let parts: Vec<String> = l
                    .server_cpu_split
                    .iter()
                    .map(|(name, cores)| format!("{name} {cores:.2} ({:.3})", per_thousand(*cores)))
                    .collect();
                let _ = writeln!(s, "- {} at {:.0} msg/s: {}", r.name, l.rate_target, parts.join(", "));
            }
        }
        let _ = writeln!(s);
    }
    // The sections below are of the scenarios that ran: a run of some
    // scenarios (`--scenarios soak`) prints no empty tables for the others.
    if results.iter().any(|r| r.warmup.is_some()) {
        let _ = writeln!(s, "## Warm-up\n");
    }
    for r in results {
        if let Some(w) = &r.warmup {
            let windows: Vec<String> = w.windows.iter().map(|x| format!("{x:.3}")).collect();
            let _ = writeln!(
                s,
                "- {}: {:.0} s at {:.0} msg/s, CPU-s per 1,000 deliveries {}{}",
                r.name,
                w.seconds,
                w.rate,
                windows.join(" → "),
                if w.settled { "" } else { " (not settled)" }
            );
        }
    }
    if results.iter().any(|r| !r.steps.is_empty()) {
        let _ = writeln!(s, "\n## Steps\n");
    }
    for r in results.iter().filter(|r| !r.steps.is_empty()) {
        let _ = writeln!(s, "{}:\n", r.name);
        let _ = writeln!(
            s,
            "| msg/s | deliveries/s | acked/s | p50 | p99 | p99.9 | max | errors | missing | CPU | verdict |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for step in &r.steps {
            let x = &step.report;
            let _ = writeln!(
                s,
                "| {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} | {} |",
                x.rate_target,
                x.deliveries_per_sec,
                x.accepted_per_sec,
                x.p50_ms,
                x.p99_ms,
                x.p999_ms,
                x.max_ms,
                x.errors,
                x.expected_deliveries.saturating_sub(x.delivered),
                x.server_cpu_cores,
                step.why_not.as_deref().unwrap_or("ok")
            );
        }
        let _ = writeln!(s);
    }
    if results.iter().any(|r| !r.persistence.is_empty()) {
        let _ = writeln!(s, "## Persistence\n");
        let _ = writeln!(s, "| system | offered msg/s | accepted/s | refused | stored/s (best 2 s) | server CPU |");
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
    }
    for r in results {
        for run in &r.persistence {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {} | {:.0} | {:.2} |",
                r.name,
                run.offered,
                run.report.accepted_per_sec,
                run.report.errors,
                run.stored_per_sec,
                run.report.server_cpu_cores
            );
        }
    }
    if results.iter().any(|r| r.soak.is_some()) {
        let _ = writeln!(
            s,
            "\n## Soak\n\n{:?} at half the sustainable rate (or the rate given) in rooms of {} ({} connections) while {} connections \
             a second come into the loaded rooms and go again after {:?}; the RSS of every process sampled every \
             {:?} (`soak_rss.png`), the last sample under load compared with the one at {:?}. Switchboard's \
             processes must end within 5% or 4 MiB of it; the broker's and PostgreSQL's memory grows towards \
             their configured sizes, so they are plotted, not judged.\n",
            plan.soak_run,
            plan.room_size,
            plan.fanout_connections,
            plan.soak_churn,
            plan.soak_stay,
            plan.soak_sample,
            plan.soak_settle
        );
        let _ = writeln!(
            s,
            "| system | msg/s | acked | delivered / expected | stored | p50 / p99 | churned (failed) | RSS KiB, settled → end | verdict |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for r in results {
            let Some(soak) = &r.soak else { continue };
            let x = &soak.report;
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {} / {} | {} | {:.1} / {:.1} ms | {} ({}) | {} | {} |",
                r.name,
                soak.rate,
                x.acked,
                x.delivered,
                x.expected_deliveries,
                soak.stored.map_or("-".into(), |n| n.to_string()),
                x.p50_ms,
                x.p99_ms,
                soak.churn.came_and_went,
                soak.churn.failed,
                soak.rss_line(),
                soak.verdict()
            );
        }
    }
    s
}

/// Cores per process name, for a line of output: `edge 0.41, kafka 0.30`.
pub fn split(cores: &std::collections::BTreeMap<String, f64>) -> String {
    cores.iter().map(|(name, c)| format!("{name} {c:.2}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Report;
    use crate::scenarios::Step;
    use crate::soak::Soak;

    fn soak_only() -> SystemResult {
        SystemResult {
            soak: Some(Soak {
                rate: 2000.0,
                churn_rate: 5.0,
                seconds: 240.0,
                report: Report::default(),
                churn: Default::default(),
                stored: Some(480_000),
                rss: Vec::new(),
                growth: Default::default(),
                findings: Vec::new(),
            }),
            ..SystemResult::new(SystemKind::SwitchboardKafka)
        }
    }

    #[test]
    fn prints_the_sections_of_the_scenarios_that_ran() {
        let text = summary(&Plan::quick(), &[soak_only()], Duration::from_secs(1));
        assert!(text.contains("## Soak"), "{text}");
        for absent in ["## Steps", "## Persistence", "## Warm-up", "## Room sizes", "## Where the CPU goes"] {
            assert!(!text.contains(absent), "{absent} printed with nothing in it:\n{text}");
        }

        let mut fanout = soak_only();
        fanout.steps = vec![Step { report: Report::default(), passed: true, why_not: None }];
        let text = summary(&Plan::quick(), &[fanout], Duration::from_secs(1));
        assert!(text.contains("## Steps"), "{text}");
    }
}
