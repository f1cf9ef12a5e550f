//! The edge as a whole: starts its Kafka clients, announces the node, serves
//! HTTP (`/ws`, health), runs delivery, heartbeats, keepalive and route
//! writing, and drains on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rdkafka::Offset;
use rdkafka::error::KafkaError;
use switchboard_core::clock::now_ms;
use switchboard_core::dead_letter::DeadLetter;
use switchboard_core::kafka::{KafkaConfig, assign_all};
use switchboard_core::ops::{self, Readiness};
use switchboard_core::provision::{ProvisionError, TopicSpec, TopicStatus, provision};
use switchboard_core::store::Store;
use switchboard_core::topics::Topics;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::EdgeConfig;
use crate::delivery::Delivery;
use crate::events::EdgeEvents;
use crate::hub::{Hub, RouteChange};
use crate::jwks::JwksError;
use crate::keepalive::Keepalive;
use crate::node::{CatchUps, NodePresence};
use crate::outbox::CloseReason;
use crate::presence::{Presence, PresenceTask};
use crate::state::EdgeState;
use crate::{admin, demo, handshake, history, http};

#[derive(Debug, Error)]
pub enum EdgeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("delivery topic: {0}")]
    DeliveryTopic(#[from] ProvisionError),
    #[error("delivery topic {topic} unavailable: {source}")]
    DeliveryTopicUnavailable { topic: String, source: KafkaError },
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error("identity provider's key set: {0}")]
    Jwks(#[from] JwksError),
}

pub struct Edge {
    state: Arc<EdgeState>,
    delivery: Delivery,
    route_changes: mpsc::UnboundedReceiver<RouteChange>,
}

impl Edge {
    /// Fetches the identity provider's key set (when configured), connects
    /// to Kafka, makes sure the delivery topic exists and is assigned (from
    /// its end), and announces this node's new epoch.
    pub async fn start(
        config: EdgeConfig,
        kafka: &KafkaConfig,
        topics: Topics,
        store: Store,
        events: Arc<EdgeEvents>,
    ) -> Result<Self, EdgeError> {
        // First: a key set that cannot be fetched stops the start before
        // this node announces itself.
        let auth = Authenticator::from_config(&config, events.clone()).await?;
        let node = config.node_id.clone();
        let epoch = now_ms() as u64;
        let producer = kafka.producer()?;
        let deliver_topic = topics.deliver(&node);
        if config.create_delivery_topic {
            create_delivery_topic(kafka, &deliver_topic).await?;
        }
        let consumer = kafka.assigned_consumer()?;
        assign_all(&consumer, &[&deliver_topic], Offset::End)
            .await
            .map_err(|source| EdgeError::DeliveryTopicUnavailable { topic: deliver_topic.clone(), source })?;
        let room_presence = Presence::new(&node, config.presence_refresh);
        let (hub, route_changes) = Hub::new(room_presence.clone());
        let announce = NodePresence { node: node.clone(), epoch, producer: producer.clone(), topics: topics.clone() };
        announce.publish(false).await?;
        let delivery = Delivery {
            consumer,
            hub: hub.clone(),
            presence: room_presence.clone(),
            store: store.clone(),
            node: node.clone(),
            dead_letter: DeadLetter::new(producer.clone(), topics.dead_letter()),
            events: events.clone(),
        };
        let state = Arc::new(EdgeState {
            auth,
            keepalive: Keepalive::new(config.ping_interval, config.idle_timeout),
            config,
            node,
            epoch,
            hub,
            presence: room_presence,
            producer,
            topics,
            store,
            draining: AtomicBool::new(false),
            ready: Readiness::default(),
            tracker: TaskTracker::new(),
            events,
            // Random start, so a rejection meant for a previous life's connection finds nobody.
            conn_ids: AtomicU64::new(fastrand::u64(1..u64::MAX / 2)),
        });
        state.ready.set(true);
        tracing::info!(node = %state.node, epoch, topic = %deliver_topic, "edge started");
        Ok(Self { state, delivery, route_changes })
    }

    pub fn state(&self) -> &Arc<EdgeState> {
        &self.state
    }

    /// The HTTP routes of this node.
    pub fn router(&self) -> Router {
        let mut router =
            Router::new().route("/ws", get(handshake::upgrade)).merge(admin::routes()).merge(history::routes());
        if self.state.config.dev_mode {
            router = router.merge(demo::routes());
        }
        let ops = ops::routes(self.state.events.metrics().clone(), self.state.ready.clone());
        router.with_state(self.state.clone()).merge(ops)
    }

    /// Serves until `shutdown`, then drains: fail readiness, refuse new
    /// upgrades, announce draining, close clients with 1012 spread over part
    /// of the grace period, tombstone routes, flush the producer.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let app = self.router();
        let Edge { state, delivery, route_changes } = self;
        let background = CancellationToken::new();
        let (catch_up_tx, catch_up_rx) = mpsc::channel(1024);
        let announce = NodePresence {
            node: state.node.clone(),
            epoch: state.epoch,
            producer: state.producer.clone(),
            topics: state.topics.clone(),
        };
        let delivery_task = tokio::spawn(delivery.run(catch_up_rx, background.clone()));
        let heartbeat_task =
            tokio::spawn(announce.clone().run_heartbeats(state.config.heartbeat_interval, background.clone()));
        let presence_task = PresenceTask {
            presence: state.presence.clone(),
            hub: state.hub.clone(),
            producer: state.producer.clone(),
            topic: state.topics.ephemeral(),
            events: state.events.clone(),
            interval: state.config.presence_interval,
            refresh: state.config.presence_refresh,
        };
        let keepalive_task = tokio::spawn(state.keepalive.run(state.hub.clone(), background.clone()));
        let presence_done = CancellationToken::new();
        let presence_task = tokio::spawn(presence_task.run(presence_done.clone()));
        let routes_done = CancellationToken::new();
        let routes_task = tokio::spawn(announce.clone().run_routes(
            route_changes,
            CatchUps { commands: catch_up_tx, after: state.config.catch_up_after.clone() },
            routes_done.clone(),
        ));

        let stop_accepting = CancellationToken::new();
        let server = tokio::spawn(http::serve(
            listener,
            app,
            state.config.handshake_timeout,
            state.config.socket_send_buffer_bytes,
            stop_accepting.clone(),
        ));
        shutdown.cancelled().await;

        tracing::info!(node = %state.node, connections = state.hub.connection_count(), "draining");
        state.draining.store(true, Ordering::Relaxed);
        state.ready.set(false);
        heartbeat_task.abort();
        if let Err(e) = announce.publish(true).await {
            tracing::warn!(error = %e, "could not announce draining");
        }
        stop_accepting.cancel();
        let grace = state.config.drain_grace;
        close_with_jitter(&state, grace / 2).await;
        state.tracker.close();
        if tokio::time::timeout(grace / 2, state.tracker.wait()).await.is_err() {
            tracing::warn!("connections still open at the end of the grace period");
        }
        // The users of the connections just closed are told gone.
        presence_done.cancel();
        let _ = presence_task.await;
        routes_done.cancel();
        let _ = routes_task.await;
        background.cancel();
        let _ = delivery_task.await;
        let _ = keepalive_task.await;
        let producer = state.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
        tracing::info!(node = %state.node, "drained");
        Ok(())
    }
}

/// Closes every connection with 1012 at a random moment within `window`,
/// so clients do not all reconnect at once.
async fn close_with_jitter(state: &EdgeState, window: Duration) {
    let mut outboxes: Vec<_> = state
        .hub
        .outboxes()
        .into_iter()
        .map(|o| (Duration::from_millis(fastrand::u64(0..=window.as_millis().max(1) as u64)), o))
        .collect();
    outboxes.sort_by_key(|(at, _)| *at);
    let start = tokio::time::Instant::now();
    for (at, outbox) in outboxes {
        tokio::time::sleep_until(start + at).await;
        outbox.close(&CloseReason::RESTART);
    }
}

/// Creates this node's delivery topic on a real cluster (one partition,
/// short retention); an existing topic is fine, a different one is logged.
async fn create_delivery_topic(kafka: &KafkaConfig, topic: &str) -> Result<(), EdgeError> {
    let spec =
        TopicSpec { name: topic.to_owned(), partitions: 1, configs: vec![("retention.ms", "3600000".to_owned())] };
    for (topic, status) in provision(kafka, &[spec], -1).await? {
        if let TopicStatus::Differs(differences) = status {
            tracing::warn!(%topic, ?differences, "delivery topic differs from the default; using it as it is");
        }
    }
    Ok(())
}
