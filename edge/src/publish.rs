//! The edge's writes to Kafka: clients' sends and read markers to
//! `sb.inbound`, typing notices and presence to `sb.ephemeral`.
//!
//! A connection's sends are enqueued on the producer by the connection's
//! reader, one after another, in the order it read them. librdkafka keeps
//! the order of one partition's records (the producer is idempotent, so
//! retries cannot reorder them either) and a room is one partition, so the
//! log holds a connection's sends to a room in the order it sent them. Only
//! the wait for Kafka's acknowledgement runs beside the reader.

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use switchboard_core::kafka::record_headers;
use switchboard_core::producer::{DeliveryFuture, KafkaProducer};
use switchboard_core::traces::{self, Attribute, Hop, Kind};
use switchboard_schemas::envelope::{EVENT_V1, Event, INBOUND_V1, InboundSend};
use switchboard_schemas::headers::TraceParent;
use switchboard_schemas::read_marker::{READ_MARKER_V1, ReadMarker};

use crate::state::EdgeState;

/// A client's send on its way to `sb.inbound`, with its producer span (from
/// taking the send to Kafka's acknowledgement).
pub(crate) struct PendingSend {
    delivery: DeliveryFuture,
    hop: Hop,
    bytes: usize,
}

impl PendingSend {
    /// Waits for Kafka: the record's size once Kafka holds it, or what went wrong.
    pub(crate) async fn acknowledged(mut self) -> Result<usize, String> {
        let failure = match self.delivery.await {
            Ok(Ok(delivered)) => {
                let partition =
                    || Attribute::new("messaging.destination.partition.id", delivered.partition.to_string());
                self.hop.set(partition);
                self.hop.set(|| Attribute::new("messaging.kafka.offset", delivered.offset));
                return Ok(self.bytes);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the producer stopped".to_owned(),
        };
        self.hop.fail(failure.clone());
        Err(failure)
    }
}

/// Enqueues a client's send (key: its room), continuing the client's trace
/// when it gave one. Call it from the connection's reader, one send after
/// another (see the module's doc).
pub(crate) async fn send(
    state: &EdgeState,
    envelope: &InboundSend,
    id: &str,
    parent: Option<&TraceParent>,
) -> Result<PendingSend, KafkaError> {
    let payload = envelope.to_json();
    let topic = state.topics.inbound();
    let mut hop = Hop::start(Kind::Producer, parent, || {
        let mut attributes = traces::kafka_attributes("send", &topic, None);
        attributes.push(Attribute::new("messaging.message.id", id.to_owned()));
        attributes.push(Attribute::new("switchboard.room", envelope.room.clone()));
        (format!("send {topic}"), attributes)
    });
    let traceparent = hop.context().to_string();
    let record = FutureRecord::to(&topic)
        .key(envelope.room.as_str())
        .payload(payload.as_slice())
        .headers(record_headers(INBOUND_V1, Some(&traceparent)));
    match state.producer.enqueue(record, Timeout::After(state.config.produce_queue_timeout)).await {
        Ok(delivery) => Ok(PendingSend { delivery, hop, bytes: payload.len() }),
        Err(e) => {
            hop.fail(e.to_string());
            Err(e)
        }
    }
}

/// Publishes a typing notice. Ephemeral: a lost one is not worth an error to
/// the client, nor a task to wait for its acknowledgement.
pub(crate) fn typing(state: &EdgeState, event: Event) {
    if let Err(e) = ephemeral(&state.producer, &state.topics.ephemeral(), &event) {
        tracing::debug!(error = %e, "typing notice dropped");
    }
}

/// Hands a record of `sb.ephemeral` (typing, presence; key: its room) to the
/// producer without waiting for Kafka: what is lost there is made good by
/// the next one.
pub(crate) fn ephemeral(producer: &KafkaProducer, topic: &str, event: &Event) -> Result<(), KafkaError> {
    let payload = event.to_json();
    let record = FutureRecord::to(topic).key(event.room()).payload(&payload).headers(record_headers(EVENT_V1, None));
    producer.send_result(record).map(drop).map_err(|(e, _)| e)
}

/// Enqueues a read marker (key: its room), in the connection's order like
/// its sends. Nobody waits for Kafka's acknowledgement: the position coming
/// back as `read` confirms it, and a lost marker is superseded by the next.
pub(crate) async fn read_marker(state: &EdgeState, marker: &ReadMarker) -> Result<(), KafkaError> {
    let payload = marker.to_json();
    let topic = state.topics.inbound();
    let record = FutureRecord::to(&topic)
        .key(marker.room.as_str())
        .payload(payload.as_slice())
        .headers(record_headers(READ_MARKER_V1, None));
    state.producer.enqueue(record, Timeout::After(state.config.produce_queue_timeout)).await.map(drop)
}
