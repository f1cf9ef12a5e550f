//! Reads a batch of records from a consumer: waits for the first one, then
//! takes what is already fetched and what arrives within the window (none by
//! default), up to a maximum. Batches amortize SQL transactions and producer
//! acknowledgements.

use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use switchboard_core::kafka::consume_error;
use tokio_util::sync::CancellationToken;

/// How often an idle wait checks whether the consumer has failed for good.
const FATAL_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Returns an empty batch only when `shutdown` is cancelled or the consumer
/// failed for good (the caller then joins again, see [`crate::membership`]).
pub async fn collect<'c, C: ConsumerContext + 'static>(
    consumer: &'c StreamConsumer<C>,
    max: usize,
    window: Duration,
    shutdown: &CancellationToken,
) -> Vec<BorrowedMessage<'c>> {
    let mut batch = Vec::new();
    let mut fatal_check = tokio::time::interval(FATAL_CHECK_EVERY);
    let first = loop {
        // librdkafka may mark the consumer failed long before the error
        // reaches `recv` (10-13 s after a broker restart, behind the notices
        // queued while the broker was down); a failed consumer gets no
        // records, so look on every turn and at least every second. The
        // interval is made once: a timer made afresh each turn never fired
        // while errors came less than a second apart.
        if consumer.client().fatal_error().is_some() {
            return batch;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return batch,
            _ = fatal_check.tick() => {}
            received = consumer.recv() => match received {
                Ok(message) => break message,
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                    consume_error("records", &e).await;
                    return batch;
                }
                Err(e) => consume_error("records", &e).await,
            },
        }
    };
    batch.push(first);
    let deadline = tokio::time::Instant::now() + window;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(message),
            // A fatal error is noticed before the next batch, once this one is handled.
            Ok(Err(e)) => {
                consume_error("records", &e).await;
                break;
            }
            Err(_) => break,
        }
    }
    batch
}
