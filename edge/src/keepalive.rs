//! Server pings and the idle timeout of every connection of the node, kept
//! by one task of the node instead of two timers in each connection.
//!
//! A connection's writer used to keep an interval for its pings and its
//! reader a sleep for its idle deadline: two timers (112 bytes each, the
//! interval's boxed) in every connection, idle or not. Now a connection
//! keeps two clock readings beside its send queue ([`Liveness`]), and this
//! task looks at every connection each tick: it closes the ones that sent
//! nothing for the idle timeout (4001) and asks the writer of the ones not
//! pinged for the ping interval to send a ping. Either happens up to one
//! tick late; a tick is a twentieth of the shorter of the two (1 s by
//! default). The walk reads two atomics of each connection, in chunks so
//! that deliveries do not wait long for the hub's lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::outbox::CloseReason;

/// Ticks per the shorter of the ping interval and the idle timeout.
const TICKS_PER_PERIOD: u32 = 20;

/// The shortest tick, whatever the configuration (tests use short timeouts).
const MIN_TICK: Duration = Duration::from_millis(10);

/// Connections looked at per hold of the hub's lock: each costs a read of
/// its queue (most likely a cache miss, about 0.1 µs), so a chunk holds the
/// lock for about 0.4 ms however many connections the node has.
const SWEEP_CHUNK: usize = 4096;

/// The node's clock and the two durations; copied into the task.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    /// Zero of [`Keepalive::now`]: the node's start.
    started: Instant,
    ping_every: Duration,
    idle_timeout: Duration,
}

/// One connection's readings of [`Keepalive::now`].
#[derive(Debug, Default)]
pub struct Liveness {
    /// Its last frame from the client (any frame, a pong too), or its start.
    heard_at: AtomicU64,
    /// Its last ping, or its start: the first ping comes one interval after
    /// the connection opened.
    pinged_at: AtomicU64,
}

impl Liveness {
    /// The connection opened at `now`.
    pub fn open(&self, now: u64) {
        self.heard_at.store(now, Ordering::Relaxed);
        self.pinged_at.store(now, Ordering::Relaxed);
    }

    /// A frame came from the client at `now`, and is handled.
    pub fn heard(&self, now: u64) {
        self.heard_at.store(now, Ordering::Relaxed);
    }

    /// A frame is being handled: the connection is not idle meanwhile,
    /// however long that takes (waiting for Kafka's acks, or for a slow
    /// reader to take a join's replay), because nothing is read from it.
    /// [`Liveness::heard`] ends it.
    pub fn handling(&self) {
        self.heard_at.store(HANDLING, Ordering::Relaxed);
    }
}

/// `heard_at` while a frame is handled: a time that is never in the past.
const HANDLING: u64 = u64::MAX;

/// What a tick does to one connection.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Nothing,
    Ping,
    Close,
}

impl Keepalive {
    pub fn new(ping_every: Duration, idle_timeout: Duration) -> Self {
        Self { started: Instant::now(), ping_every, idle_timeout }
    }

    /// Milliseconds since the node started.
    pub fn now(&self) -> u64 {
        Instant::now().saturating_duration_since(self.started).as_millis() as u64
    }

    fn tick(&self) -> Duration {
        (self.ping_every.min(self.idle_timeout) / TICKS_PER_PERIOD).max(MIN_TICK)
    }

    /// What is due for a connection at `now`. The idle timeout wins: a
    /// connection about to close needs no ping.
    fn due(&self, liveness: &Liveness, now: u64) -> Due {
        let since = |at: &AtomicU64| Duration::from_millis(now.saturating_sub(at.load(Ordering::Relaxed)));
        if since(&liveness.heard_at) >= self.idle_timeout {
            Due::Close
        } else if since(&liveness.pinged_at) >= self.ping_every {
            liveness.pinged_at.store(now, Ordering::Relaxed);
            Due::Ping
        } else {
            Due::Nothing
        }
    }

    /// Looks at every connection of `hub` each tick until `stop`.
    pub async fn run(self, hub: Arc<Hub>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.tick());
        // A late tick (a busy node) is not made up with a burst of them.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.sweep(&hub).await;
        }
    }

    /// Looks at every connection, [`SWEEP_CHUNK`] at a time under the
    /// hub's lock, which deliveries wait for meanwhile.
    async fn sweep(&self, hub: &Hub) {
        let now = self.now();
        let mut from = 0;
        loop {
            let visited = hub.visit_outboxes(from, SWEEP_CHUNK, |outbox| match self.due(outbox.liveness(), now) {
                Due::Nothing => {}
                Due::Ping => outbox.ping(),
                // The reader ends on the close and the writer sends the
                // code; a second close of a closing connection does nothing.
                Due::Close => outbox.close(&CloseReason::IDLE),
            });
            if visited < SWEEP_CHUNK {
                return;
            }
            from += visited;
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use crate::presence::Presence;
    use axum::extract::ws::Message;
    use futures_util::FutureExt;

    #[test]
    fn a_tick_is_a_twentieth_of_the_shorter_period_and_never_below_ten_ms() {
        let tick = |ping, idle| Keepalive::new(Duration::from_secs(ping), Duration::from_secs(idle)).tick();
        assert_eq!(tick(20, 60), Duration::from_secs(1));
        assert_eq!(tick(30, 10), Duration::from_millis(500));
        let short = Keepalive::new(Duration::from_millis(50), Duration::from_millis(50));
        assert_eq!(short.tick(), MIN_TICK);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_come_every_interval_from_the_start_and_the_close_after_the_last_frame() {
        let keepalive = Keepalive::new(Duration::from_secs(20), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(5)).await;
        let (outbox, _writer) = Outbox::new(8, 1 << 16);
        outbox.liveness().open(keepalive.now());
        let (mut pings, mut closes) = (Vec::new(), Vec::new());
        for second in 1..=100 {
            tokio::time::advance(Duration::from_secs(1)).await;
            match keepalive.due(outbox.liveness(), keepalive.now()) {
                Due::Nothing => {}
                Due::Ping => pings.push(second),
                Due::Close => closes.push(second),
            }
            if second == 30 {
                // The client speaks (or answers a ping): the timeout counts from here.
                outbox.liveness().heard(keepalive.now());
            }
        }
        assert_eq!(pings, [20, 40, 60, 80], "every 20 s from the connection's start, none once it is due to close");
        assert_eq!(closes.first(), Some(&90), "60 s after its last frame");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_handling_a_frame_is_not_idle_however_long_that_takes() {
        let keepalive = Keepalive::new(Duration::from_secs(20), Duration::from_secs(60));
        let (outbox, _writer) = Outbox::new(8, 1 << 16);
        outbox.liveness().open(keepalive.now());
        outbox.liveness().handling();
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(keepalive.due(outbox.liveness(), keepalive.now()), Due::Ping, "pinged, not closed");
        outbox.liveness().heard(keepalive.now());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(keepalive.due(outbox.liveness(), keepalive.now()), Due::Ping, "59 s after it: not closed yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(keepalive.due(outbox.liveness(), keepalive.now()), Due::Close, "60 s after the frame was handled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_looks_at_every_connection_past_the_first_chunk() {
        let (hub, _routes) = Hub::new(Presence::new("n", Duration::from_secs(10)));
        let keepalive = Keepalive::new(Duration::from_secs(2), Duration::from_secs(5));
        let writers: Vec<_> = (0..SWEEP_CHUNK as u64 * 2 + 10)
            .map(|conn| {
                let (outbox, writer) = Outbox::new(8, 1 << 16);
                outbox.liveness().open(keepalive.now());
                hub.register(conn, outbox);
                writer
            })
            .collect();
        tokio::time::advance(Duration::from_secs(2)).await;
        keepalive.sweep(&hub).await;
        for writer in writers {
            assert!(matches!(writer.recv().now_or_never(), Some(Some(Message::Ping(_)))));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_pings_through_the_writer_and_closes_a_silent_connection_with_4001() {
        let (hub, _routes) = Hub::new(Presence::new("n", Duration::from_secs(10)));
        let keepalive = Keepalive::new(Duration::from_secs(2), Duration::from_secs(5));
        let (quiet, mut quiet_writer) = Outbox::new(8, 1 << 16);
        let (talking, mut talking_writer) = Outbox::new(8, 1 << 16);
        for (conn, outbox) in [(1, &quiet), (2, &talking)] {
            outbox.liveness().open(keepalive.now());
            hub.register(conn, outbox.clone());
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(keepalive.run(hub.clone(), stop.clone()));

        // The writers see a ping after one interval, and nothing before it.
        tokio::time::sleep(Duration::from_millis(1_950)).await;
        for writer in [&mut quiet_writer, &mut talking_writer] {
            assert!(writer.recv().now_or_never().is_none(), "no ping within the first interval");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for writer in [&mut quiet_writer, &mut talking_writer] {
            let ping = writer.recv().now_or_never();
            assert!(matches!(ping, Some(Some(Message::Ping(_)))), "{ping:?}");
        }
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            talking.liveness().heard(keepalive.now());
        }
        // 6 s in: the quiet one was closed after 5 s, the other is open.
        assert_eq!(quiet.closing().reason(), Some(CloseReason::IDLE));
        assert_eq!(talking.closing().reason(), None);
        stop.cancel();
        task.await.unwrap();
    }
}
