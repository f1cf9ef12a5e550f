//! The Kafka producer of every process: like rdkafka's `FutureProducer`, a
//! future per record that resolves with Kafka's acknowledgement (`send`,
//! `enqueue`, `send_result`, `flush`), on rdkafka's `BaseProducer` and a
//! polling thread of its own.
//!
//! Why not `FutureProducer` itself: its thread polls in rounds of exactly
//! 100 ms, and rdkafka hands librdkafka the time left in a round in whole
//! milliseconds, rounded down. librdkafka so wakes up just before the round
//! ends, and the fraction of a millisecond left is polled with a timeout of
//! 0 over and over: about 1 ms of busy CPU per round, 0.9% of a core per
//! producer whether anything is sent or not (perf: `clock_gettime` and the
//! queue's mutex). On a real cluster that was all of an idle edge's CPU
//! (0.009 of its 0.010 cores, like the persister's and the router's), and
//! 4 of the embedded default's 14%. Here a round is 100 ms and 50 µs: the
//! whole milliseconds handed to librdkafka then reach past the round's
//! end, and an idle round ends in one wait. (A round that served a delivery
//! report still rounds its rest down and spins its last fraction of a
//! millisecond, as before: under load this producer costs what rdkafka's
//! did.)

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, ToBytes};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureRecord, Producer, ProducerContext};
use rdkafka::util::Timeout;
use tokio::sync::oneshot;

/// Kafka's acknowledgement of a record: where it was stored, or why not.
pub type Acked = Result<Delivery, KafkaError>;

/// Resolves with a record's [`Acked`]; `Err` if the producer went away first.
pub type DeliveryFuture = oneshot::Receiver<Acked>;

/// One round of the polling thread: how often it looks at whether to stop
/// (so a dropped producer's thread ends within it), and 50 µs past the
/// millisecond so that librdkafka's wait, in whole milliseconds, ends after
/// the round does (see the module's doc).
const POLL_ROUND: Duration = Duration::from_micros(100_050);

/// Pause before trying again to enqueue on a full local queue. Only an
/// edge fills it in practice (many clients' sends while Kafka is away; a
/// worker waits for each batch's acks before the next), and its reader
/// waits here: a short pause resumes it soon after there is room.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Told of each record a producer enqueues. The embedded default's mock
/// brokers answer slowly while its process writes nothing, and at once again
/// from its next write (`switchboard::mock_brokers`).
pub trait WriteWatch: Send + Sync + Debug {
    fn enqueued(&self);
}

/// A producer; clones share it. Its polling thread stops with the last clone.
#[derive(Clone)]
pub struct KafkaProducer {
    inner: Arc<Inner>,
    watch: Option<Arc<dyn WriteWatch>>,
}

struct Inner {
    producer: Arc<BaseProducer<Acks>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

/// Completes each record's future from librdkafka's delivery report.
struct Acks;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<oneshot::Sender<Acked>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        let acked = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp(),
            }),
            Err((error, _)) => Err(error.clone()),
        };
        // Nobody waiting (the caller dropped the future) is fine.
        let _ = ack.send(acked);
    }
}

impl KafkaProducer {
    pub fn new(config: &ClientConfig, watch: Option<Arc<dyn WriteWatch>>) -> KafkaResult<Self> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, Acks)?);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (producer, stop) = (producer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("producer acks".into())
                .spawn(move || {
                    // Each round serves delivery reports as they come and returns at its end.
                    while !stop.load(Ordering::Acquire) {
                        producer.poll(POLL_ROUND);
                    }
                })
                .map_err(|e| KafkaError::ClientCreation(format!("cannot start the producer's polling thread: {e}")))?
        };
        Ok(Self { inner: Arc::new(Inner { producer, stop, poller: Some(poller) }), watch })
    }

    /// The same producer, whose writes do not end the embedded default's
    /// quiet (see [`WriteWatch`]): for periodic records that nobody waits
    /// for, such as an edge's heartbeat, which would otherwise wake an idle
    /// process every time.
    pub fn unwatched(&self) -> Self {
        Self { inner: self.inner.clone(), watch: None }
    }

    /// Enqueues `record`, retrying while the local queue is full for up to
    /// `queue_timeout`, and waits for Kafka's acknowledgement.
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>, queue_timeout: impl Into<Timeout>) -> Acked
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let delivery = self.enqueue(record, queue_timeout.into()).await?;
        // `self` is borrowed meanwhile, so the producer cannot go away first.
        delivery.await.expect("the producer outlives its sends")
    }

    /// Enqueues `record` and returns the future of Kafka's acknowledgement.
    /// While the local queue is full it waits (and so does its caller:
    /// backpressure, not buffering) for up to `queue_timeout`, then gives
    /// up with `QueueFull`. The caller's own future does the waiting, so
    /// records enqueued one after another by one caller keep their order
    /// (an edge enqueues a connection's sends from its reader this way).
    pub async fn enqueue<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: Timeout,
    ) -> Result<DeliveryFuture, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = tokio::time::Instant::now();
        loop {
            match self.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if queue_timeout == Timeout::Never
                        || matches!(queue_timeout, Timeout::After(t) if started.elapsed() < t) =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Enqueues `record` and returns the future of its acknowledgement, or
    /// the record back with why it could not be enqueued (a full local queue
    /// among others).
    #[allow(clippy::result_large_err)] // The record is handed back, as rdkafka's own producer does.
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (ack, delivery) = oneshot::channel();
        let FutureRecord { topic, partition, payload, key, timestamp, headers } = record;
        let mut base = BaseRecord::with_opaque_to(topic, Box::new(ack));
        base.partition = partition;
        base.payload = payload;
        base.key = key;
        base.timestamp = timestamp;
        base.headers = headers;
        match self.inner.producer.send(base) {
            Ok(()) => {
                if let Some(watch) = &self.watch {
                    watch.enqueued();
                }
                Ok(delivery)
            }
            Err((e, back)) => Err((
                e,
                FutureRecord {
                    topic: back.topic,
                    partition: back.partition,
                    payload: back.payload,
                    key: back.key,
                    timestamp: back.timestamp,
                    headers: back.headers,
                },
            )),
        }
    }

    /// Waits up to `timeout` for every enqueued record to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.inner.producer.flush(timeout)
    }
}

impl Drop for Inner {
    /// Stops the polling thread (within a round); the producer itself is
    /// dropped after it, as rdkafka's own producer does: pending records
    /// are purged and their futures fail.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    use super::*;
    use crate::kafka::KafkaConfig;

    #[tokio::test]
    async fn sends_are_acknowledged_in_order_and_a_refused_record_comes_back() {
        let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let producer = KafkaConfig::new(cluster.bootstrap_servers()).producer().unwrap();

        let first = producer.send(FutureRecord::to("t").key("k").payload("a"), Timeout::Never).await.unwrap();
        let pending: Vec<DeliveryFuture> = ["b", "c"]
            .iter()
            .map(|body| producer.send_result(FutureRecord::to("t").key("k").payload(*body)).ok().unwrap())
            .collect();
        let mut offsets = vec![first.offset];
        for delivery in pending {
            offsets.push(delivery.await.unwrap().unwrap().offset);
        }
        assert_eq!(offsets, [0, 1, 2]);

        // A partition the topic does not have is refused at once, with the record handed back.
        let refused = producer.send_result(FutureRecord::to("t").key("k").payload("d").partition(7));
        let Err((_, back)) = refused else { panic!("partition 7 of a 1-partition topic is refused") };
        assert_eq!(back.payload, Some("d"));
    }

    #[tokio::test]
    async fn a_dropped_producer_fails_what_it_still_held_instead_of_hanging() {
        let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let producer = KafkaConfig::new(cluster.bootstrap_servers()).producer().unwrap();
        // The broker is down, so the record stays queued until the producer goes.
        cluster.broker_down(1).unwrap();
        let delivery = producer.send_result(FutureRecord::to("t").key("k").payload("x")).ok().unwrap();
        drop(producer);
        let outcome = tokio::time::timeout(Duration::from_secs(10), delivery).await.expect("settled, not hanging");
        assert!(!matches!(outcome, Ok(Ok(_))), "not acknowledged: {outcome:?}");
    }
}
