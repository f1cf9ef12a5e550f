//! The store alone: the persister's batches written straight to a fresh
//! database, no Kafka, no edges, no load driver sharing the machine. The
//! persistence scenario measures the whole pipeline; this isolates the SQL
//! of one batch, so a change to it shows in figures that do not move with
//! the rest of the machine.
//!
//! The batches look like the persistence scenario's at saturation: full
//! batches spread over one room per connection, 128-byte bodies, senders
//! without a display name.

use std::time::{Duration, Instant};

use switchboard_core::store::Store;
use switchboard_schemas::envelope::{Inbound, InboundSend, Origin};
use switchboard_workers::inbound;

use crate::run_state::{create_database, drop_database};

#[derive(Debug, Clone)]
pub struct StoreLoad {
    pub batches: usize,
    pub batch_size: usize,
    pub rooms: usize,
    /// Transactions at once per batch (see `inbound::apply_in_lanes`).
    pub lanes: usize,
    /// Batches run first and left out of the figures (caches, plans).
    pub warmup: usize,
}

#[derive(Debug)]
pub struct StoreReport {
    pub median: Duration,
    pub p90: Duration,
    pub max: Duration,
    pub rows_per_sec: f64,
}

impl std::fmt::Display for StoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per batch: median {:.1} ms, p90 {:.1} ms, max {:.1} ms; {:.0} rows/s",
            self.median.as_secs_f64() * 1e3,
            self.p90.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.rows_per_sec
        )
    }
}

/// Runs `load` against a database of its own on the PostgreSQL server
/// `admin_url` names, or in a fresh SQLite file when `admin_url` is `None`;
/// the database is removed afterwards.
pub async fn run(admin_url: Option<&str>, load: &StoreLoad) -> anyhow::Result<StoreReport> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let name = format!("sbstore{stamp}");
    let sqlite_file = std::env::temp_dir().join(format!("{name}.db"));
    let url = match admin_url {
        Some(admin_url) => create_database(admin_url, &name)?,
        None => format!("sqlite://{}?mode=rwc", sqlite_file.display()),
    };
    let result = measure(&url, load).await;
    match admin_url {
        Some(admin_url) => drop_database(admin_url, &name)?,
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_file.display()));
            }
        }
    }
    result
}

async fn measure(url: &str, load: &StoreLoad) -> anyhow::Result<StoreReport> {
    anyhow::ensure!(load.batches > 0 && load.batch_size > 0 && load.rooms > 0, "nothing to measure");
    let store = &Store::connect(url, load.lanes.max(1) as u32).await?;
    store.migrate().await?;
    let lanes = store.concurrent_writers();
    let mut times = Vec::with_capacity(load.batches);
    let mut next = 0usize;
    for index in 0..load.warmup + load.batches {
        let sends: Vec<Inbound> = (0..load.batch_size)
            .map(|_| {
                next += 1;
                let user = next % load.rooms;
                Inbound::Send(InboundSend {
                    room: format!("room-{user}"),
                    sender: format!("u{user}"),
                    sender_name: None,
                    client_id: format!("c{next}"),
                    body: "x".repeat(128),
                    origin: Origin { node: "store-bench".into(), conn: user as u64, reference: next.to_string() },
                    received_at: 0,
                })
            })
            .collect();
        let started = Instant::now();
        let applied =
            inbound::apply_in_lanes(&sends, lanes, |lane| async move { Some(store.apply(&lane).await) }).await;
        for result in applied.expect("the store answers every lane") {
            result?;
        }
        if index >= load.warmup {
            times.push(started.elapsed());
        }
    }
    store.close().await;
    let measured: Duration = times.iter().sum();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Ok(StoreReport {
        median: at(0.5),
        p90: at(0.9),
        max: at(1.0),
        rows_per_sec: (load.batches * load.batch_size) as f64 / measured.as_secs_f64(),
    })
}
