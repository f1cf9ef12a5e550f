//! CPU time and resident memory of server processes, read from /proc.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(Sample { cpu_seconds: ticks / TICKS_PER_SECOND, rss_kib })
}

/// Sum over several processes and their children (a system may be more than
/// one process; PostgreSQL serves each connection from a child process).
pub fn total(pids: &[u32]) -> Sample {
    let mut all = pids.to_vec();
    all.extend(children(pids));
    all.iter().filter_map(|&pid| sample(pid)).fold(Sample::default(), |a, b| Sample {
        cpu_seconds: a.cpu_seconds + b.cpu_seconds,
        rss_kib: a.rss_kib + b.rss_kib,
    })
}

/// CPU seconds of each process in `pids` (with its children), summed by
/// the process's name: the split of a system's CPU between its parts
/// (edges, persister, router, broker, database), for the capacity model.
pub fn by_name(pids: &[u32]) -> BTreeMap<String, f64> {
    samples_by_name(pids).into_iter().map(|(name, s)| (name, s.cpu_seconds)).collect()
}

/// Resident KiB of each process in `pids` (with its children), summed by
/// name: what the soak plots over time.
pub fn rss_by_name(pids: &[u32]) -> BTreeMap<String, u64> {
    samples_by_name(pids).into_iter().map(|(name, s)| (name, s.rss_kib)).collect()
}

fn samples_by_name(pids: &[u32]) -> BTreeMap<String, Sample> {
    let mut split: BTreeMap<String, Sample> = BTreeMap::new();
    for &pid in pids {
        let mut tree = vec![pid];
        tree.extend(children(&[pid]));
        let entry = split.entry(name(pid)).or_default();
        for sample in tree.iter().filter_map(|&p| sample(p)) {
            entry.cpu_seconds += sample.cpu_seconds;
            entry.rss_kib += sample.rss_kib;
        }
    }
    split
}

/// What a process is called in reports: its command name, and the main
/// class for a Java process (the Kafka broker is `java`).
fn name(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
    if comm == "java" {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("kafka.Kafka") {
            return "kafka".into();
        }
    }
    if comm.is_empty() { format!("pid {pid}") } else { comm }
}

/// Processes whose parent is one of `pids`.
fn children(pids: &[u32]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent(pid).is_some_and(|ppid| pids.contains(&ppid)))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(super::children(&[std::process::id()]).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn splits_by_name_with_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let split = super::by_name(&[std::process::id(), child.id()]);
        assert_eq!(split.len(), 2, "{split:?}");
        assert!(split.contains_key("sleep"), "{split:?}");
        let rss = super::rss_by_name(&[std::process::id(), child.id()]);
        assert!(rss.values().all(|&kib| kib > 0), "{rss:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn reads_this_process() {
        let s = super::sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
    }
}
