//! This node's presence in Kafka: its epoch and heartbeats in `sb.nodes`, and
//! a route record in `sb.routes` for each room with local members
//! (a tombstone when the last one leaves or the node drains).

use std::collections::HashSet;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use switchboard_core::clock::now_ms;
use switchboard_core::topics::Topics;
use switchboard_schemas::routing::{NodeRecord, RouteKey, RouteRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::delivery::DeliveryCommand;
use crate::hub::RouteChange;

/// Delays after a route is acknowledged at which the delivery task checks
/// SQL for messages routed before the route reached the routers.
const CATCH_UP_AFTER: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(2000)];

#[derive(Clone)]
pub struct NodePresence {
    pub node: String,
    pub epoch: u64,
    pub producer: FutureProducer,
    pub topics: Topics,
}

impl NodePresence {
    /// Writes this node's record and waits for Kafka's ack.
    pub async fn publish(&self, draining: bool) -> Result<(), KafkaError> {
        let record = NodeRecord { node: self.node.clone(), epoch: self.epoch, heartbeat_at: now_ms(), draining };
        let payload = serde_json::to_vec(&record).expect("node records serialize");
        let topic = self.topics.nodes();
        let out = FutureRecord::to(&topic).key(&self.node).payload(&payload);
        self.producer.send(out, Timeout::After(Duration::from_secs(10))).await.map(|_| ()).map_err(|(e, _)| e)
    }

    pub async fn run_heartbeats(self, interval: Duration, shutdown: CancellationToken) {
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
            self.producer.send(out, Timeout::After(Duration::from_secs(10))).await.map(|_| ()).map_err(|(e, _)| e)
        };
        attempt
            .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(10))
            .notify(|e, _| tracing::warn!(room, error = %e, "route write failed; retrying"))
            .await
    }

    /// Turns hub route changes into route records until shutdown, then
    /// tombstones every room still routed here.
    pub async fn run_routes(
        self,
        mut changes: mpsc::UnboundedReceiver<RouteChange>,
        catch_up: mpsc::Sender<DeliveryCommand>,
        shutdown: CancellationToken,
    ) {
        let mut routed: HashSet<String> = HashSet::new();
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => break,
                change = changes.recv() => match change { Some(c) => c, None => break },
            };
            self.apply(change, &mut routed, Some(&catch_up)).await;
        }
        while let Ok(change) = changes.try_recv() {
            self.apply(change, &mut routed, None).await;
        }
        for room in routed {
            if let Err(e) = self.write_route(&room, false).await {
                tracing::warn!(%room, error = %e, "could not tombstone route at drain");
            }
        }
    }

    async fn apply(
        &self,
        change: RouteChange,
        routed: &mut HashSet<String>,
        catch_up: Option<&mpsc::Sender<DeliveryCommand>>,
    ) {
        match change {
            RouteChange::Add(room) => {
                if let Err(e) = self.write_route(&room, true).await {
                    tracing::error!(%room, error = %e, "route not written; room gets no live messages");
                    return;
                }
                routed.insert(room.clone());
                if let Some(catch_up) = catch_up {
                    for delay in CATCH_UP_AFTER {
                        let (tx, room) = (catch_up.clone(), room.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(DeliveryCommand::CatchUp(room)).await;
                        });
                    }
                }
            }
            RouteChange::Remove(room) => {
                if let Err(e) = self.write_route(&room, false).await {
                    tracing::warn!(%room, error = %e, "route tombstone not written");
                }
                routed.remove(&room);
            }
        }
    }
}
