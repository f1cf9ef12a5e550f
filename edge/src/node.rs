//! This node's presence in Kafka: its epoch and heartbeats in `sb.nodes`, and
//! a route record in `sb.routes` for each room with local members
//! (a tombstone when the last one leaves or the node drains).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use switchboard_core::clock::now_ms;
use switchboard_core::producer::KafkaProducer;
use switchboard_core::topics::Topics;
use switchboard_schemas::routing::{NodeRecord, RouteKey, RouteRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::DeliveryCommand;
use crate::hub::RouteChange;

#[derive(Clone)]
pub struct NodePresence {
    pub node: String,
    pub epoch: u64,
    pub producer: KafkaProducer,
    pub topics: Topics,
}

impl NodePresence {
    /// Writes this node's record and waits for Kafka's ack.
    pub async fn publish(&self, draining: bool) -> Result<(), KafkaError> {
        let record = NodeRecord { node: self.node.clone(), epoch: self.epoch, heartbeat_at: now_ms(), draining };
        let payload = serde_json::to_vec(&record).expect("node records serialize");
        let topic = self.topics.nodes();
        let out = FutureRecord::to(&topic).key(&self.node).payload(&payload);
        self.producer.send(out, Timeout::After(Duration::from_secs(10))).await.map(drop)
    }

    pub async fn run_heartbeats(mut self, interval: Duration, shutdown: CancellationToken) {
        // Nobody waits for a heartbeat (the routers read them within a few
        // intervals): it does not wake the embedded default's idle brokers.
        self.producer = self.producer.unwatched();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.publish(false).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
    }

    /// Writes a route record (`Some`) or tombstone (`None`), retrying until
    /// Kafka takes it: a lost route would silently stop delivery.
    async fn write_route(&self, room: &str, live: bool) -> Result<(), KafkaError> {
        let key = RouteKey::new(room, &self.node).encode();
        let topic = self.topics.routes();
        let payload = live.then(|| {
            serde_json::to_vec(&RouteRecord { room: room.to_owned(), node: self.node.clone(), epoch: self.epoch })
                .expect("route records serialize")
        });
        let attempt = || async {
            let mut out: FutureRecord<'_, str, Vec<u8>> = FutureRecord::to(&topic).key(&key);
            if let Some(payload) = &payload {
                out = out.payload(payload);
            }
            self.producer.send(out, Timeout::After(Duration::from_secs(10))).await.map(drop)
        };
        attempt
            .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(10))
            .notify(|e, _| tracing::warn!(room, error = %e, "route write failed; retrying"))
            .await
    }

    /// Turns hub route changes into route records until shutdown, then
    /// tombstones every room still routed here.
    ///
    /// The changes waiting at each turn go out together, each room's last
    /// one only, all at once: a join storm (a reconnect wave after a deploy,
    /// thousands of direct-message rooms) had one route written per ack, ~3 ms
    /// each, so the last rooms' routes reached the routers seconds late and
    /// every message meanwhile was a gap filled from SQL. One room's records
    /// stay in order: a turn writes at most one per room, and the next turn
    /// starts once Kafka has taken them all.
    pub async fn run_routes(
        self,
        mut changes: mpsc::UnboundedReceiver<RouteChange>,
        catch_up: CatchUps,
        shutdown: CancellationToken,
    ) {
        let mut routed: HashSet<String> = HashSet::new();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                change = changes.recv() => match change { Some(c) => c, None => break },
            };
            let mut waiting = vec![first];
            while waiting.len() < ROUTES_PER_TURN
                && let Ok(change) = changes.try_recv()
            {
                waiting.push(change);
            }
            self.apply(waiting, &mut routed, Some(&catch_up)).await;
        }
        let mut waiting = Vec::new();
        while let Ok(change) = changes.try_recv() {
            waiting.push(change);
        }
        self.apply(waiting, &mut routed, None).await;
        let this = &self;
        let tombstones = join_all(routed.iter().map(|room| async move { (room, this.write_route(room, false).await) }));
        for (room, result) in tombstones.await {
            if let Err(e) = result {
                tracing::warn!(%room, error = %e, "could not tombstone route at drain");
            }
        }
    }

    /// Writes what `changes` change, all at once, and waits for every write.
    async fn apply(&self, changes: Vec<RouteChange>, routed: &mut HashSet<String>, catch_up: Option<&CatchUps>) {
        let writes = route_writes(changes, routed);
        let written = join_all(writes.into_iter().map(|(room, live)| async move {
            let result = self.write_route(&room, live).await;
            (room, live, result)
        }));
        for (room, live, result) in written.await {
            match (live, result) {
                (true, Err(e)) => tracing::error!(%room, error = %e, "route not written; room gets no live messages"),
                (true, Ok(())) => {
                    if let Some(catch_up) = catch_up {
                        for &delay in &catch_up.after {
                            let (tx, room) = (catch_up.commands.clone(), room.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = tx.send(DeliveryCommand::CatchUp(room)).await;
                            });
                        }
                    }
                    routed.insert(room);
                }
                (false, result) => {
                    if let Err(e) = result {
                        tracing::warn!(%room, error = %e, "route tombstone not written");
                    }
                    routed.remove(&room);
                }
            }
        }
    }
}

/// Where a new route's catch-up checks go, and when (from the route's
/// write; `--catch-up-after`).
pub struct CatchUps {
    pub commands: mpsc::Sender<DeliveryCommand>,
    pub after: Vec<Duration>,
}

/// Most route changes written in one turn.
const ROUTES_PER_TURN: usize = 10_000;

/// The records `changes` call for, given the rooms `routed` here now: each
/// room's last change, where it differs from what the routers were told
/// (a room whose last member left and another came within one turn needs
/// no record). `true` is a route, `false` a tombstone.
fn route_writes(changes: Vec<RouteChange>, routed: &HashSet<String>) -> Vec<(String, bool)> {
    let mut last: HashMap<String, bool> = HashMap::new();
    for change in changes {
        match change {
            RouteChange::Add(room) => last.insert(room, true),
            RouteChange::Remove(room) => last.insert(room, false),
        };
    }
    let mut writes: Vec<(String, bool)> =
        last.into_iter().filter(|(room, live)| routed.contains(room) != *live).collect();
    writes.sort_unstable();
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_writes_each_rooms_last_change_where_it_changes_anything() {
        let routed: HashSet<String> = ["kept", "left", "back"].map(String::from).into();
        let add = |r: &str| RouteChange::Add(r.into());
        let remove = |r: &str| RouteChange::Remove(r.into());
        let changes = vec![
            add("new"),
            remove("left"),
            add("came-and-went"),
            remove("came-and-went"),
            remove("back"),
            add("back"),
            add("new-2"),
        ];
        assert_eq!(
            route_writes(changes, &routed),
            [("left".to_string(), false), ("new".to_string(), true), ("new-2".to_string(), true)]
        );
    }
}
