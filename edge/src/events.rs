//! The edge's named events. Each event moves its metric and, where an
//! operator wants a line, writes its log line, here and nowhere else, so a
//! count and its log never disagree.
//!
//! Metrics are `prometheus-client` handles registered once, at start, in the
//! process's registry (`switchboard_core::metrics`); the embedded default's
//! two edges share one set. The per-frame and per-delivery paths increment a
//! counter they already hold and never look a label up. Labels come from
//! small fixed sets, never a room, user or connection id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use switchboard_core::metrics::{Metrics, seconds_buckets};
use switchboard_schemas::protocol::{CLIENT_FRAME_TYPES, ErrorCode};
use switchboard_schemas::room_command::RoomCommand;

use crate::jwks::{JwksError, KeySet};
use crate::outbox::CloseReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameType {
    r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminRequest {
    action: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// How a `/ws` handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    Unauthorized,
    OriginNotAllowed,
    TooManyConnections,
    Draining,
}

impl Handshake {
    const ALL: [Handshake; 5] =
        [Self::Ok, Self::Unauthorized, Self::OriginNotAllowed, Self::TooManyConnections, Self::Draining];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unauthorized => "unauthorized",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::TooManyConnections => "too_many_connections",
            Self::Draining => "draining",
        }
    }
}

/// Label of a frame that could not be parsed.
const INVALID_FRAME: &str = "invalid";

/// Why a connection ended, as a label: the close code's reason, or `peer`
/// when the client closed or went away.
fn disconnect_label(reason: Option<CloseReason>) -> &'static str {
    match reason {
        None => "peer",
        Some(CloseReason::SLOW_CONSUMER) => "slow_consumer",
        Some(CloseReason::IDLE) => "idle",
        Some(CloseReason::TOO_BIG) => "too_big",
        Some(CloseReason::INVALID_UTF8) => "invalid_utf8",
        Some(CloseReason::PROTOCOL_ERROR) => "protocol_error",
        Some(CloseReason::RESTART) => "draining",
        Some(_) => "other",
    }
}

/// The edge's events and their metrics.
pub struct EdgeEvents {
    metrics: Metrics,
    connections: Gauge,
    handshakes: [Counter; 5],
    /// By the index of the type in [`CLIENT_FRAME_TYPES`]; the last one counts unparsable frames.
    frames_in: Vec<Counter>,
    errors_sent: Family<Code, Counter>,
    sends_accepted: Counter,
    sends_failed: Counter,
    deliveries: Counter,
    end_to_end: Histogram,
    disconnects: Family<Reason, Counter>,
    frames_dropped: Counter,
    backfills: Counter,
    backfilled_messages: Counter,
    admin_requests: Family<AdminRequest, Counter>,
    removals: Counter,
    /// By outcome: `ok`, `failed`.
    jwks_fetches: [Counter; 2],
    jwks_refreshes_too_soon: Counter,
    /// By outcome: `ok` (handed to the producer), `dropped`.
    presence_records: [Counter; 2],
    presence_frames: Counter,
    presence_expired: Counter,
}

impl EdgeEvents {
    /// Registers the edge's series in `metrics` (once per process).
    pub fn new(metrics: &Metrics) -> Self {
        let mut events = None;
        metrics.register("edge", |registry| events = Some(Self::register(metrics.clone(), registry)));
        events.expect("register calls back once")
    }

    fn register(metrics: Metrics, registry: &mut prometheus_client::registry::Registry) -> Self {
        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let handshake_family = Family::<Outcome, Counter>::default();
        registry.register("handshakes", "WebSocket handshakes by outcome", handshake_family.clone());
        let handshakes =
            Handshake::ALL.map(|h| handshake_family.get_or_create(&Outcome { outcome: h.label() }).clone());
        let frame_family = Family::<FrameType, Counter>::default();
        registry.register("frames_in", "Client frames by type (`invalid`: not parsable)", frame_family.clone());
        let frames_in = CLIENT_FRAME_TYPES
            .iter()
            .chain(std::iter::once(&INVALID_FRAME))
            .map(|t| frame_family.get_or_create(&FrameType { r#type: t }).clone())
            .collect();
        let errors_sent = Family::<Code, Counter>::default();
        registry.register("errors_sent", "Error frames sent to clients, by code", errors_sent.clone());
        let sends_accepted = Counter::default();
        registry.register("sends_accepted", "Client sends acknowledged by Kafka", sends_accepted.clone());
        let sends_failed = Counter::default();
        registry.register(
            "sends_failed",
            "Client sends Kafka did not take (answered unavailable)",
            sends_failed.clone(),
        );
        let deliveries = Counter::default();
        registry.register("deliveries", "Messages queued to local connections", deliveries.clone());
        let end_to_end = Histogram::new(seconds_buckets());
        registry.register_with_unit(
            "end_to_end",
            "From an edge accepting a send (the message's sent_at) to the message queued to this node's \
             connections, live or filled from SQL, once per message and node",
            prometheus_client::registry::Unit::Seconds,
            end_to_end.clone(),
        );
        let disconnects = Family::<Reason, Counter>::default();
        registry.register("disconnects", "Closed connections, by reason", disconnects.clone());
        let frames_dropped = Counter::default();
        registry.register(
            "frames_dropped",
            "Frames still queued for a connection when it closed, dropped unsent (a slow consumer's, mostly)",
            frames_dropped.clone(),
        );
        let backfills = Counter::default();
        registry.register("backfills", "Gaps filled from SQL before a newer message", backfills.clone());
        let backfilled_messages = Counter::default();
        registry.register("backfilled_messages", "Messages read from SQL to fill gaps", backfilled_messages.clone());
        let admin_requests = Family::<AdminRequest, Counter>::default();
        registry.register(
            "admin_requests",
            "Admin API requests, by room action and HTTP status",
            admin_requests.clone(),
        );
        let removals = Counter::default();
        registry.register(
            "room_removals",
            "Connections taken out of a private room because their user was removed from it",
            removals.clone(),
        );
        let jwks_family = Family::<Outcome, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Fetches of the identity provider's key set (SB_JWKS_URL), by outcome",
            jwks_family.clone(),
        );
        let jwks_fetches = ["ok", "failed"].map(|outcome| jwks_family.get_or_create(&Outcome { outcome }).clone());
        let jwks_refreshes_too_soon = Counter::default();
        registry.register(
            "jwks_refreshes_too_soon",
            "Lookups of a key id the held key set lacked that did not fetch the set again, the last fetch \
             having started less than SB_JWKS_REFRESH_MIN_INTERVAL before",
            jwks_refreshes_too_soon.clone(),
        );
        let presence_family = Family::<Outcome, Counter>::default();
        registry.register(
            "presence_records",
            "Presence records for the other edges (one per room and presence interval at most, plus refreshes), \
             by outcome: ok, or dropped by the producer (the next refresh makes it good)",
            presence_family.clone(),
        );
        let presence_records =
            ["ok", "dropped"].map(|outcome| presence_family.get_or_create(&Outcome { outcome }).clone());
        let presence_frames = Counter::default();
        registry.register("presence_frames", "`presence` frames queued to local connections", presence_frames.clone());
        let presence_expired = Counter::default();
        registry.register(
            "presence_expired",
            "Users in a room that another edge stopped naming, dropped after SB_PRESENCE_REFRESH x 3 \
             (that edge died or lost Kafka)",
            presence_expired.clone(),
        );
        Self {
            metrics,
            connections,
            handshakes,
            frames_in,
            errors_sent,
            sends_accepted,
            sends_failed,
            deliveries,
            end_to_end,
            disconnects,
            frames_dropped,
            backfills,
            backfilled_messages,
            admin_requests,
            removals,
            jwks_fetches,
            jwks_refreshes_too_soon,
            presence_records,
            presence_frames,
            presence_expired,
        }
    }

    /// The process's metrics, which these are part of.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn handshake(&self, outcome: Handshake) {
        self.handshakes[Handshake::ALL.iter().position(|h| *h == outcome).unwrap_or(0)].inc();
    }

    pub(crate) fn connected(&self) {
        self.connections.inc();
    }

    pub(crate) fn disconnected(&self, reason: Option<CloseReason>) {
        self.connections.dec();
        let label = disconnect_label(reason);
        self.disconnects.get_or_create(&Reason { reason: label }).inc();
        if reason == Some(CloseReason::SLOW_CONSUMER) {
            tracing::debug!("closed a slow consumer (4008)");
        }
    }

    pub(crate) fn frames_dropped(&self, frames: usize) {
        self.frames_dropped.inc_by(frames as u64);
    }

    /// A client frame was read; `kind` is its `type`, `None` if it did not parse.
    pub(crate) fn frame_in(&self, kind: Option<&str>) {
        let index = kind.and_then(|k| CLIENT_FRAME_TYPES.iter().position(|t| *t == k));
        self.frames_in[index.unwrap_or(CLIENT_FRAME_TYPES.len())].inc();
    }

    pub(crate) fn error_sent(&self, code: ErrorCode) {
        self.errors_sent.get_or_create(&Code { code: code.as_str() }).inc();
    }

    pub(crate) fn send_accepted(&self) {
        self.sends_accepted.inc();
    }

    pub(crate) fn send_failed(&self, error: &dyn std::fmt::Display) {
        self.sends_failed.inc();
        tracing::warn!(%error, "send not accepted by kafka");
    }

    /// A message reached this node's connections, live or filled from SQL
    /// (a gap or a new route's catch-up: the clients waited for it just the
    /// same); `sent_at` is when an edge accepted it (milliseconds since the
    /// epoch, that edge's clock, so a skewed clock can read below zero:
    /// counted as zero).
    pub(crate) fn delivered(&self, sent_at: i64, connections: usize) {
        self.deliveries.inc_by(connections as u64);
        let millis = (switchboard_core::clock::now_ms() - sent_at).max(0);
        self.end_to_end.observe(millis as f64 / 1000.0);
    }

    pub(crate) fn backfilled(&self, messages: usize) {
        self.backfills.inc();
        self.backfilled_messages.inc_by(messages as u64);
    }

    /// An admin API request was answered; `action` is the room action
    /// (`create`, `add_member`, ...), `issued` the command when one was issued.
    pub(crate) fn admin_request(&self, action: &'static str, status: u16, issued: Option<&RoomCommand>) {
        self.admin_requests.get_or_create(&AdminRequest { action, status }).inc();
        match issued {
            Some(c) => {
                tracing::info!(room = %c.room, action, id = %c.id, issued_by = %c.issued_by, "room command issued")
            }
            None => tracing::info!(action, status, "admin request refused"),
        }
    }

    /// `connections` of a removed user were taken out of a private room.
    pub(crate) fn removed_from_room(&self, connections: usize) {
        self.removals.inc_by(connections as u64);
    }

    /// The identity provider's key set was fetched and is now held.
    pub(crate) fn jwks_fetched(&self, set: &KeySet) {
        self.jwks_fetches[0].inc();
        let mut kids: Vec<&str> = set.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        tracing::info!(?kids, skipped = ?set.skipped, "fetched the identity provider's key set");
    }

    /// A fetch of the key set failed; `retry_in` when it is tried again at
    /// start. At run time the keys already held stay in use.
    pub(crate) fn jwks_fetch_failed(&self, error: &JwksError, retry_in: Option<std::time::Duration>) {
        self.jwks_fetches[1].inc();
        match retry_in {
            Some(after) => tracing::warn!(%error, ?after, "could not fetch the identity provider's key set; retrying"),
            None => tracing::warn!(%error, "could not fetch the identity provider's key set"),
        }
    }

    /// A presence record was handed to the producer, or not.
    pub(crate) fn presence_published(&self, sent: Result<(), rdkafka::error::KafkaError>) {
        match sent {
            Ok(()) => {
                self.presence_records[0].inc();
            }
            Err(e) => {
                self.presence_records[1].inc();
                tracing::debug!(error = %e, "presence record dropped; the next refresh makes it good");
            }
        }
    }

    pub(crate) fn presence_frames(&self, connections: usize) {
        self.presence_frames.inc_by(connections as u64);
    }

    /// `users` another edge stopped naming were dropped from rooms.
    pub(crate) fn presence_expired(&self, users: usize) {
        if users > 0 {
            self.presence_expired.inc_by(users as u64);
            tracing::info!(users, "presence: users no edge named for three refreshes are gone");
        }
    }

    /// A token named a key id the held set lacked, and the last fetch (or
    /// the one the lookup waited for) started within the refresh interval:
    /// the set was not fetched again for it.
    pub(crate) fn jwks_refresh_too_soon(&self) {
        self.jwks_refreshes_too_soon.inc();
        tracing::debug!("unknown key id within SB_JWKS_REFRESH_MIN_INTERVAL of the last fetch; not fetching again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_show_in_the_text_format_with_fixed_labels() {
        let events = EdgeEvents::new(&Metrics::default());
        events.handshake(Handshake::Ok);
        events.handshake(Handshake::OriginNotAllowed);
        events.connected();
        events.frame_in(Some("send"));
        events.frame_in(Some("send"));
        events.frame_in(None);
        events.error_sent(ErrorCode::RateLimited);
        events.send_accepted();
        events.delivered(switchboard_core::clock::now_ms(), 7);
        events.disconnected(Some(CloseReason::SLOW_CONSUMER));
        events.backfilled(3);
        let text = events.metrics().render();
        for line in [
            "switchboard_edge_connections 0",
            r#"switchboard_edge_handshakes_total{outcome="ok"} 1"#,
            r#"switchboard_edge_handshakes_total{outcome="origin_not_allowed"} 1"#,
            r#"switchboard_edge_handshakes_total{outcome="draining"} 0"#,
            r#"switchboard_edge_frames_in_total{type="send"} 2"#,
            r#"switchboard_edge_frames_in_total{type="invalid"} 1"#,
            r#"switchboard_edge_errors_sent_total{code="rate_limited"} 1"#,
            "switchboard_edge_sends_accepted_total 1",
            "switchboard_edge_deliveries_total 7",
            r#"switchboard_edge_disconnects_total{reason="slow_consumer"} 1"#,
            "switchboard_edge_backfills_total 1",
            "switchboard_edge_backfilled_messages_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
