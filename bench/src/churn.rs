//! Presence churn: connections that come into one room and go again at a
//! fixed rate, each a user of its own, while the room's other members are
//! held open elsewhere (`sbbench hold`, see bench/presence.sh). Each one
//! connects, joins, stays a moment and disconnects: one join and one leave
//! for everyone in the room to hear of.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::driver::{self, Load};
use crate::protocol::Codec;

/// Users of churning connections are numbered from here, clear of `hold`'s.
const FIRST_USER: usize = 10_000_000;

#[derive(Clone, Debug)]
pub struct Churn {
    pub room: String,
    /// Connections coming (and going) per second.
    pub rate: f64,
    pub duration: Duration,
    /// How long each stays in the room.
    pub stay: Duration,
}

#[derive(Debug, Default)]
pub struct ChurnReport {
    pub came_and_went: usize,
    pub failed: usize,
}

pub async fn run(codec: Codec, load: Load, churn: Churn) -> ChurnReport {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (codec, load, room) = (Arc::new(codec), Arc::new(load), Arc::new(churn.room));
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
        let (codec, load, room) = (codec.clone(), load.clone(), room.clone());
        running.spawn(async move {
            let Some(mut ws) = driver::open(i, &codec, &load, &room).await else { return false };
            tokio::time::sleep(churn.stay).await;
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
    report
}
