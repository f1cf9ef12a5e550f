//! Presence churn: connections that come into one room and go again at a
//! fixed rate, each a user of its own, while the room's other members are
//! held open elsewhere (`sbbench hold`, see bench/presence.sh). Each one
//! connects, joins, stays a moment and disconnects: one join and one leave
//! for everyone in the room to hear of. The soak scenario churns over many
//! rooms at once: connection i joins `rooms[i % rooms.len()]`, or, with
//! `half_alone`, every other one a room of its own that nobody uses again
//! (a new route for the edge and the routers, then a room abandoned).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::driver::{self, Load};
use crate::protocol::Codec;

/// Users of churning connections are numbered from here, clear of `hold`'s.
const FIRST_USER: usize = 10_000_000;

#[derive(Clone, Debug)]
pub struct Churn {
    pub rooms: Vec<String>,
    /// Connections coming (and going) per second.
    pub rate: f64,
    pub duration: Duration,
    /// How long each stays in the room.
    pub stay: Duration,
    /// Every other connection joins a new room of its own instead.
    pub half_alone: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnReport {
    pub came_and_went: usize,
    pub failed: usize,
}

pub async fn run(codec: Codec, load: Load, churn: Churn) -> anyhow::Result<ChurnReport> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    anyhow::ensure!(!churn.rooms.is_empty(), "churn needs a room");
    let (codec, load, rooms) = (Arc::new(codec), Arc::new(load), Arc::new(churn.rooms));
    let (stay, half_alone) = (churn.stay, churn.half_alone);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / churn.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + churn.duration;
    let mut running = JoinSet::new();
    let mut report = ChurnReport::default();
    let mut tally = |done: Result<bool, _>| match done {
        Ok(true) => report.came_and_went += 1,
        _ => report.failed += 1,
    };
    for i in FIRST_USER.. {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        let (codec, load, rooms) = (codec.clone(), load.clone(), rooms.clone());
        running.spawn(async move {
            let room = if half_alone && i % 2 == 1 { format!("alone-{i}") } else { rooms[i % rooms.len()].clone() };
            let Some(mut ws) = driver::open(i, &codec, &load, &room).await else { return false };
            tokio::time::sleep(stay).await;
            let _ = ws.close(None).await;
            true
        });
        while let Some(done) = running.try_join_next() {
            tally(done);
        }
    }
    while let Some(done) = running.join_next().await {
        tally(done);
    }
    Ok(report)
}
