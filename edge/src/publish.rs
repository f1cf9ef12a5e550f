//! The edge's writes to Kafka.
//!
//! A connection's sends are enqueued on the producer by the connection's
//! reader, one after another, in the order it read them. librdkafka keeps
//! the order of one partition's records (the producer is idempotent, so
//! retries cannot reorder them either) and a room is one partition, so the
//! log holds a connection's sends to a room in the order it sent them. Only
//! the wait for Kafka's acknowledgement runs beside the reader.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::time::Instant;

/// Pause before trying again to enqueue on a full local producer queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Enqueues `record` and returns the future of Kafka's acknowledgement.
/// While the producer's local queue is full it waits (and so does the
/// reader calling it: backpressure, not buffering) for up to
/// `queue_timeout`, then gives up with `QueueFull`.
///
/// `FutureProducer::send` would also retry a full queue, but from inside a
/// future of its own: two sends awaited side by side could then enqueue in
/// either order, which is how one connection's sends used to be stored out
/// of order.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, str, [u8]>,
    queue_timeout: Duration,
) -> Result<DeliveryFuture, KafkaError> {
    let deadline = Instant::now() + queue_timeout;
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < deadline => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
