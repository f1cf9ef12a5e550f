//! The workers' named events. Each event moves its metric and, where an
//! operator wants a line, writes its log line, here and nowhere else.
//! Handles are made once, at start (see `switchboard_core::metrics`); labels
//! come from small fixed sets, never a room or user id.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::statistics::Statistics;
use switchboard_core::kafka::StatsHandler;
use switchboard_core::metrics::{Metrics, seconds_buckets};
use switchboard_schemas::room_command::RoomCommand;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Partition {
    topic: String,
    partition: i32,
}

/// How far a worker is behind on each partition it owns, from librdkafka's
/// statistics (every few seconds, no extra request to the broker): the end of
/// the partition minus the offset stored for the next commit, which the
/// workers store only once a record's work is durable. So it counts the
/// records not yet safely handled. A partition the worker no longer owns
/// loses its series.
#[derive(Clone, Default)]
pub struct ConsumerLag(Family<Partition, Gauge>);

impl ConsumerLag {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "consumer_lag",
            "Records not yet durably handled, per partition this worker owns (librdkafka statistics)",
            self.0.clone(),
        );
    }

    /// The handler for the worker's group consumer.
    pub(crate) fn handler(&self) -> StatsHandler {
        let family = self.0.clone();
        Arc::new(move |stats: &Statistics| {
            for topic in stats.topics.values() {
                for p in topic.partitions.values() {
                    if p.partition < 0 {
                        continue; // librdkafka's internal "unassigned" partition
                    }
                    let labels = Partition { topic: topic.topic.clone(), partition: p.partition };
                    if p.consumer_lag_stored >= 0 {
                        family.get_or_create(&labels).set(p.consumer_lag_stored);
                    } else {
                        family.remove(&labels); // not owned (any more): unknown
                    }
                }
            }
        })
    }
}

/// What the persister did.
pub struct PersisterEvents {
    batches: Counter,
    batch_seconds: Histogram,
    stored: Counter,
    repeats: Counter,
    refused: Counter,
    dead_lettered: Counter,
    batch_retries: Counter,
    room_commands: Family<Action, Counter>,
    pub(crate) lag: ConsumerLag,
}

impl PersisterEvents {
    pub fn new(metrics: &Metrics) -> Self {
        let events = Self {
            batches: Counter::default(),
            batch_seconds: Histogram::new(seconds_buckets()),
            stored: Counter::default(),
            repeats: Counter::default(),
            refused: Counter::default(),
            dead_lettered: Counter::default(),
            batch_retries: Counter::default(),
            room_commands: Family::default(),
            lag: ConsumerLag::default(),
        };
        metrics.register("persister", |r| {
            r.register("batches", "Batches stored and published", events.batches.clone());
            r.register(
                "batch_duration_seconds",
                "Time to store a batch in SQL and have Kafka acknowledge its events",
                events.batch_seconds.clone(),
            );
            r.register("messages_stored", "Sends stored as new messages", events.stored.clone());
            r.register("repeats", "Sends found already stored (a resend or a replay)", events.repeats.clone());
            r.register("refusals", "Sends refused (e.g. not a member), answered to the sender", events.refused.clone());
            r.register("dead_letters", "Records sent to the dead-letter topic", events.dead_lettered.clone());
            r.register(
                "batch_retries",
                "Batches redone because Kafka did not acknowledge their events",
                events.batch_retries.clone(),
            );
            r.register(
                "room_commands",
                "Room commands applied (create, add_member, remove_member, reset_history)",
                events.room_commands.clone(),
            );
            events.lag.register(r);
        });
        events
    }

    /// A room command was applied for the first time.
    pub(crate) fn room_command_applied(&self, command: &RoomCommand) {
        self.room_commands.get_or_create(&Action { action: command.action_name() }).inc();
        tracing::info!(room = %command.room, action = command.action_name(), id = %command.id,
            issued_by = %command.issued_by, "room command applied");
    }

    /// A batch is durable: stored, and its events acknowledged.
    pub(crate) fn batch_done(&self, took: Duration, stored: u64, repeats: u64, refused: u64) {
        self.batches.inc();
        self.batch_seconds.observe(took.as_secs_f64());
        self.stored.inc_by(stored);
        self.repeats.inc_by(repeats);
        self.refused.inc_by(refused);
        tracing::debug!(stored, repeats, refused, ?took, "batch");
    }

    pub(crate) fn batch_retried(&self, wait: Duration) {
        self.batch_retries.inc();
        tracing::warn!(?wait, "events not acknowledged; redoing the batch");
    }

    /// A record went to the dead-letter topic (`DeadLetter` logs it).
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }
}

/// What the router did.
pub struct RouterEvents {
    routed: Counter,
    unrouted: Counter,
    forwarded: Counter,
    /// Typing and presence records, apart: their volume is not the events'.
    ephemeral_routed: Counter,
    ephemeral_forwarded: Counter,
    forward_failed: Counter,
    fanout: Histogram,
    dead_lettered: Counter,
    pub(crate) lag: ConsumerLag,
}

impl RouterEvents {
    pub fn new(metrics: &Metrics) -> Self {
        let events = Self {
            routed: Counter::default(),
            unrouted: Counter::default(),
            forwarded: Counter::default(),
            ephemeral_routed: Counter::default(),
            ephemeral_forwarded: Counter::default(),
            forward_failed: Counter::default(),
            // Nodes per event: 1, 2, 4, ... 512.
            fanout: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            dead_lettered: Counter::default(),
            lag: ConsumerLag::default(),
        };
        metrics.register("router", |r| {
            r.register("events_routed", "Events sent to at least one node", events.routed.clone());
            r.register("events_without_target", "Events no live node wanted", events.unrouted.clone());
            r.register("deliveries_produced", "Events produced to delivery topics", events.forwarded.clone());
            r.register(
                "ephemeral_routed",
                "Records of sb.ephemeral (typing, presence) sent to at least one node",
                events.ephemeral_routed.clone(),
            );
            r.register(
                "ephemeral_deliveries_produced",
                "Records of sb.ephemeral produced to delivery topics",
                events.ephemeral_forwarded.clone(),
            );
            r.register(
                "delivery_produce_failures",
                "Records Kafka did not take for a delivery topic (the edge backfills from SQL)",
                events.forward_failed.clone(),
            );
            r.register("fanout_nodes", "Delivery topics each routed event went to", events.fanout.clone());
            r.register("dead_letters", "Records sent to the dead-letter topic", events.dead_lettered.clone());
            events.lag.register(r);
        });
        events
    }

    /// An event goes to `nodes` delivery topics (0: nobody wants it).
    pub(crate) fn routed(&self, nodes: usize) {
        if nodes == 0 {
            self.unrouted.inc();
        } else {
            self.routed.inc();
            self.forwarded.inc_by(nodes as u64);
            self.fanout.observe(nodes as f64);
        }
    }

    /// A typing or presence record goes to `nodes` delivery topics.
    pub(crate) fn routed_ephemeral(&self, nodes: usize) {
        if nodes > 0 {
            self.ephemeral_routed.inc();
            self.ephemeral_forwarded.inc_by(nodes as u64);
        }
    }

    pub(crate) fn forward_failed(&self, topic: &str, error: &dyn std::fmt::Display) {
        self.forward_failed.inc();
        tracing::warn!(%topic, %error, "delivery produce failed");
    }

    /// A record went to the dead-letter topic (`DeadLetter` logs it).
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// Counts since start, for the periodic routing line.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.routed.get(), self.unrouted.get())
    }
}

/// What the notifier did.
pub struct NotifierEvents {
    requests: Counter,
    recipients_notified: Counter,
    /// By reason: `online`, `rate_limited`.
    recipients_skipped: [Counter; 2],
    retries: Counter,
    failed: Counter,
    dead_lettered: Counter,
    too_old: Counter,
    presence_applied: Counter,
    pub(crate) lag: ConsumerLag,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipReason {
    reason: &'static str,
}

impl NotifierEvents {
    pub fn new(metrics: &Metrics) -> Self {
        let skipped = Family::<SkipReason, Counter>::default();
        let events = Self {
            requests: Counter::default(),
            recipients_notified: Counter::default(),
            recipients_skipped: ["online", "rate_limited"]
                .map(|reason| skipped.get_or_create(&SkipReason { reason }).clone()),
            retries: Counter::default(),
            failed: Counter::default(),
            dead_lettered: Counter::default(),
            too_old: Counter::default(),
            presence_applied: Counter::default(),
            lag: ConsumerLag::default(),
        };
        metrics.register("notifier", |r| {
            r.register(
                "messages_too_old",
                "Messages not notified, older than SB_NOTIFY_MAX_AGE",
                events.too_old.clone(),
            );
            r.register(
                "presence_records",
                "Presence records of sb.ephemeral applied to the notifier's table",
                events.presence_applied.clone(),
            );
            r.register("webhook_requests", "Notifications the webhook answered 2xx", events.requests.clone());
            r.register("recipients_notified", "Recipients in those notifications", events.recipients_notified.clone());
            r.register(
                "recipients_skipped",
                "Members not notified of a message, by reason: online (present in the room), rate_limited",
                skipped,
            );
            r.register(
                "webhook_retries",
                "Requests tried again (timeout, connection, 408, 429, 5xx)",
                events.retries.clone(),
            );
            r.register(
                "notifications_dead_lettered",
                "Notifications refused (4xx) or failing every try, written to the dead-letter topic",
                events.failed.clone(),
            );
            r.register(
                "dead_letters",
                "Event records that could not be handled, dead-lettered",
                events.dead_lettered.clone(),
            );
            events.lag.register(r);
        });
        events
    }

    /// Members of a message's audience not told: `online`, or over their rate (`limited`).
    pub(crate) fn recipients_skipped(&self, online: usize, limited: usize) {
        self.recipients_skipped[0].inc_by(online as u64);
        self.recipients_skipped[1].inc_by(limited as u64);
    }

    /// A request for `recipients` was answered 2xx.
    pub(crate) fn notified(&self, recipients: usize) {
        self.requests.inc();
        self.recipients_notified.inc_by(recipients as u64);
    }

    pub(crate) fn webhook_retry(&self, error: &dyn std::fmt::Display, after: Duration) {
        self.retries.inc();
        tracing::warn!(%error, ?after, "webhook request failed; trying again");
    }

    /// A notification went to the dead-letter topic (`DeadLetter` logs it).
    pub(crate) fn notification_failed(&self) {
        self.failed.inc();
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    pub(crate) fn too_old(&self) {
        self.too_old.inc();
    }

    pub(crate) fn presence_applied(&self) {
        self.presence_applied.inc();
    }
}
