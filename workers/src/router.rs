//! The router: holds the room → nodes table (from `sb.routes` and `sb.nodes`,
//! read in full before anything is routed, then followed), consumes
//! `sb.events` and `sb.ephemeral` in a consumer group, and copies each record
//! unchanged to `sb.deliver.<node>` for every node with members in its room.
//! Records keep their room key, so order within a room holds end to end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset};
use switchboard_core::clock::now_ms;
use switchboard_core::dead_letter::DeadLetter;
use switchboard_core::kafka::{
    KafkaConfig, METADATA_TIMEOUT, assign_all, consume_error, header_str, record_headers, trace_of,
};
use switchboard_core::metrics::Metrics;
use switchboard_core::ops::Readiness;
use switchboard_core::producer::KafkaProducer;
use switchboard_core::topics::Topics;
use switchboard_core::traces::{self, Attribute};
use switchboard_schemas::envelope::EVENT_V1;
use switchboard_schemas::headers::SCHEMA;
use switchboard_schemas::ids::validate_id;
use switchboard_schemas::routing::{NodeRecord, RouteKey, RouteRecord};
use tokio_util::sync::CancellationToken;

use crate::batch;
use crate::error::WorkerError;
use crate::events::RouterEvents;
use crate::membership::GroupMember;
use crate::routing_table::RoutingTable;

#[derive(Debug, Clone, clap::Args)]
pub struct RouterConfig {
    /// Consumer group shared by all router instances [default: <topic-prefix>-router].
    #[arg(long = "router-group", env = "SB_ROUTER_GROUP")]
    pub group: Option<String>,
    /// Stable id of this instance in the group (e.g. the StatefulSet pod
    /// name): a restart with the same id resumes its partitions at once.
    #[arg(long = "router-instance-id", env = "SB_ROUTER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// A node whose last heartbeat is this much older than the newest
    /// heartbeat read from any node gets nothing.
    #[arg(long = "node-stale-after", env = "SB_NODE_STALE_AFTER", default_value = "15s",
          value_parser = switchboard_core::config::parse_duration)]
    pub stale_after: Duration,
    #[arg(long = "router-batch-max", env = "SB_ROUTER_BATCH_MAX", default_value_t = 1000)]
    pub batch_max: usize,
    /// How long a batch waits for more records (see `SB_PERSISTER_BATCH_WINDOW`).
    #[arg(long = "router-batch-window", env = "SB_ROUTER_BATCH_WINDOW", default_value = "0ms",
          value_parser = switchboard_core::config::parse_duration)]
    pub batch_window: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            group: None,
            instance_id: None,
            stale_after: Duration::from_secs(15),
            batch_max: 1000,
            batch_window: Duration::ZERO,
        }
    }
}

pub struct Router {
    kafka: KafkaConfig,
    state: StreamConsumer,
    producer: KafkaProducer,
    dead_letter: DeadLetter,
    topics: Topics,
    table: Arc<RwLock<RoutingTable>>,
    config: RouterConfig,
    events: RouterEvents,
    ready: Readiness,
}

impl Router {
    pub fn new(
        kafka: &KafkaConfig,
        topics: Topics,
        config: RouterConfig,
        metrics: &Metrics,
    ) -> Result<Self, WorkerError> {
        let producer = kafka.batch_producer()?;
        Ok(Self {
            kafka: kafka.clone(),
            state: kafka.assigned_consumer()?,
            dead_letter: DeadLetter::new(producer.clone(), topics.dead_letter()),
            producer,
            table: Arc::new(RwLock::new(RoutingTable::new(config.stale_after.as_millis() as i64))),
            topics,
            config,
            events: RouterEvents::new(metrics),
            ready: Readiness::default(),
        })
    }

    /// Ready once the routing table is loaded and the group joined.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Router { kafka, state, producer, dead_letter, topics, table, config, events, ready } = self;
        load_table(&state, &topics, &table, &shutdown).await?;
        let follow = tokio::spawn(follow_table(state, topics.clone(), table.clone(), shutdown.clone()));
        // Join the group only once the table is loaded, so nothing is routed on a partial table.
        let group = config.group.clone().unwrap_or_else(|| topics.group("router"));
        let instance = config.instance_id.clone();
        let ephemeral = topics.ephemeral();
        let topics_read = vec![topics.events(), ephemeral.clone()];
        let mut member = GroupMember::join(&kafka, group, instance, topics_read, events.lag.handler())?;
        tracing::info!(group = %member.group(), "router started");
        ready.set(true);
        let mut progress = Progress::new(&events);
        loop {
            member.rejoin_if_failed()?;
            let records = batch::collect(member.consumer(), config.batch_max, config.batch_window, &shutdown).await;
            if records.is_empty() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            let now = now_ms();
            let mut pending = Vec::with_capacity(records.len());
            // Each routed event's span ends once its records are acknowledged.
            let mut hops = Vec::new();
            let mut last_offsets: BTreeMap<(&str, i32), i64> = BTreeMap::new();
            // Partitions whose offset must not move: a record there could not be dead-lettered.
            let mut held: HashSet<(&str, i32)> = HashSet::new();
            for record in &records {
                let position = (record.topic(), record.partition());
                if !held.contains(&position) {
                    last_offsets.insert(position, record.offset());
                }
                let room = match check(record) {
                    Ok(room) => room,
                    Err(reason) => {
                        match dead_letter.send(record, &reason).await {
                            Ok(()) => events.dead_lettered(),
                            Err(e) => {
                                tracing::error!(error = %e, "could not dead-letter; will retry on replay");
                                let position = (record.topic(), record.partition());
                                last_offsets.remove(&position);
                                held.insert(position);
                            }
                        }
                        continue;
                    }
                };
                let targets = table.read().expect("routing table lock poisoned").targets(room, now);
                if record.topic() == ephemeral {
                    events.routed_ephemeral(targets.len());
                } else {
                    events.routed(targets.len());
                }
                // A span per traced event (messages; typing notices carry no trace).
                let hop = trace_of(record).map(|parent| {
                    traces::consumer_hop("route", record, Some(&parent), |attributes| {
                        attributes.push(Attribute::new("switchboard.room", room.to_owned()));
                        attributes.push(traces::string_list("switchboard.nodes", targets.iter().cloned()));
                    })
                });
                let traceparent = hop.as_ref().map(|h| h.context().to_string());
                for node in targets {
                    pending.push(forward(&producer, topics.deliver(&node), record, traceparent.clone()));
                }
                hops.extend(hop);
            }
            for result in join_all(pending).await {
                if let Err((topic, e)) = result {
                    // Not retried: the edge backfills what it missed from SQL.
                    events.forward_failed(&topic, &e);
                }
            }
            drop(hops);
            member.store_offsets(last_offsets);
            progress.report_every(&events, PROGRESS_EVERY, || {
                table.read().expect("routing table lock poisoned").live_nodes(now).len()
            });
        }
        follow.abort();
        ready.set(false);
        tracing::info!("router stopped");
        Ok(())
    }
}

/// How often the router logs what it routed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The routing line, logged after the first batch that ends an interval,
/// from the router's counters: a router whose table sends events nowhere (no
/// live nodes) shows as `without_target`.
struct Progress {
    since: std::time::Instant,
    /// Counters (routed, without target) at the last line.
    at_last: (u64, u64),
}

impl Progress {
    fn new(events: &RouterEvents) -> Self {
        Self { since: std::time::Instant::now(), at_last: events.totals() }
    }

    fn report_every(&mut self, events: &RouterEvents, every: Duration, live_nodes: impl FnOnce() -> usize) {
        if self.since.elapsed() >= every {
            let (routed, unrouted) = events.totals();
            let (routed, unrouted) = (routed - self.at_last.0, unrouted - self.at_last.1);
            tracing::info!(routed, without_target = unrouted, live_nodes = live_nodes(), "routing");
            *self = Self::new(events);
        }
    }
}

/// Checks an event record before forwarding; the error is the dead-letter reason.
pub fn check<'m>(record: &'m BorrowedMessage<'_>) -> Result<&'m str, String> {
    match header_str(record, SCHEMA) {
        Some(EVENT_V1) => {}
        Some(other) => return Err(format!("unknown schema {other:?}")),
        None => return Err(format!("missing {SCHEMA} header")),
    }
    let key = record.key().ok_or("record has no key")?;
    let room = std::str::from_utf8(key).map_err(|_| "key is not UTF-8")?;
    validate_id(room).map_err(|e| format!("key: {e}"))?;
    if record.payload().is_none() {
        return Err("empty payload".into());
    }
    Ok(room)
}

/// Copies one record to a delivery topic, with the router's trace context.
/// Key and payload are borrowed from the consumed record, not copied per
/// target.
pub async fn forward(
    producer: &KafkaProducer,
    topic: String,
    record: &BorrowedMessage<'_>,
    traceparent: Option<String>,
) -> Result<(), (String, rdkafka::error::KafkaError)> {
    let key = record.key().unwrap_or_default();
    let payload = record.payload().unwrap_or_default();
    let out =
        FutureRecord::to(&topic).key(key).payload(payload).headers(record_headers(EVENT_V1, traceparent.as_deref()));
    let result = producer.send(out, Timeout::Never).await;
    result.map(drop).map_err(|e| (topic, e))
}

/// Reads `sb.routes` and `sb.nodes` from the beginning up to the high
/// watermarks seen at start, so no event is routed from a partial table.
pub async fn load_table(
    state: &StreamConsumer,
    topics: &Topics,
    table: &RwLock<RoutingTable>,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let routes = topics.routes();
    let nodes = topics.nodes();
    let assigned = assign_all(state, &[&routes, &nodes], Offset::Beginning)
        .await
        .map_err(|source| WorkerError::TopicsUnavailable { topics: vec![routes.clone(), nodes.clone()], source })?;
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for (topic, partition) in assigned {
        let (low, high) = state.fetch_watermarks(&topic, partition, METADATA_TIMEOUT)?;
        if high > low {
            remaining.insert((topic, partition), high);
        }
    }
    let total = remaining.len();
    while !remaining.is_empty() {
        let record = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = state.recv() => r,
        };
        match record {
            Ok(record) => {
                apply(&mut table.write().expect("routing table lock poisoned"), topics, &record);
                let key = (record.topic().to_owned(), record.partition());
                if remaining.get(&key).is_some_and(|high| record.offset() + 1 >= *high) {
                    remaining.remove(&key);
                }
            }
            Err(e) => consume_error("routing state", &e).await,
        }
    }
    tracing::info!(partitions = total, "routing table loaded");
    Ok(())
}

/// Keeps applying new route and node records until shutdown.
async fn follow_table(
    state: StreamConsumer,
    topics: Topics,
    table: Arc<RwLock<RoutingTable>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            record = state.recv() => match record {
                Ok(record) => apply(&mut table.write().expect("routing table lock poisoned"), &topics, &record),
                Err(e) => consume_error("routing state", &e).await,
            },
        }
    }
}

/// Applies one state record. A malformed one is logged and skipped: these
/// topics are compacted state, read by every router, and a later record for
/// the same key supersedes it.
fn apply(table: &mut RoutingTable, topics: &Topics, record: &BorrowedMessage<'_>) {
    let Some(key) = record.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        tracing::warn!(topic = record.topic(), offset = record.offset(), "state record without a key");
        return;
    };
    if record.topic() == topics.routes() {
        let Ok(route_key) = RouteKey::parse(key) else {
            tracing::warn!(key, "malformed route key");
            return;
        };
        match record.payload().map(serde_json::from_slice::<RouteRecord>) {
            None => table.apply_route(&route_key, None),
            Some(Ok(route)) => table.apply_route(&route_key, Some(&route)),
            Some(Err(e)) => tracing::warn!(key, error = %e, "malformed route record"),
        }
    } else {
        match record.payload().map(serde_json::from_slice::<NodeRecord>) {
            None => table.apply_node(key, None),
            Some(Ok(node)) => table.apply_node(key, Some(&node)),
            Some(Err(e)) => tracing::warn!(key, error = %e, "malformed node record"),
        }
    }
}
