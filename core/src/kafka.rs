//! Kafka clients with Switchboard's settings: an idempotent `acks=all`
//! producer, group consumers that store offsets only when told (at-least-once),
//! and assigned consumers for per-node and compacted topics.
//!
//! The same code talks to librdkafka's mock cluster (embedded default) and to
//! a real cluster (production).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::headers::TraceParent;

use crate::config::Secret;
use crate::producer::{KafkaProducer, WriteWatch};

/// Timeout for metadata and watermark queries.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a consume error before reading on (see [`consume_error`]).
const CONSUME_ERROR_PAUSE: Duration = Duration::from_millis(5);

/// Linger of [`KafkaConfig::batch_producer`]: long enough for a batch queued
/// in one loop (microseconds) to leave as one request per partition, where 0
/// sent its first records alone.
const BATCH_LINGER: Duration = Duration::from_micros(200);

/// How clients reach the brokers: `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// `sasl.mechanism`: the ones managed clusters offer that need no extra
/// library (GSSAPI/Kerberos would need Cyrus SASL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials.
#[derive(Debug, Clone)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// TLS and SASL settings, applied to every client (broker certificates are
/// checked against the CA and the broker's host name).
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl: Option<Sasl>,
    /// PEM CA bundle; `None`: the system's store.
    pub ca_location: Option<PathBuf>,
}

/// Connection settings for every Kafka client of a process.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub security: KafkaSecurity,
    /// Pass-through librdkafka settings (security, tuning); applied last.
    pub options: Vec<(String, String)>,
    pub linger: Duration,
    /// How long a consumer's fetch waits at the broker for records to arrive.
    /// A real broker answers a waiting fetch as soon as a record arrives, so
    /// this bounds only how often an idle consumer asks: at 10 ms every
    /// consumer fetched 100 times a second, and an idle deployment (edge,
    /// persister, router, broker) cost 0.17-0.25 cores; at 500 ms
    /// (librdkafka's default) 0.05-0.06, with p50/p99 at 250 msg/s
    /// unchanged within run-to-run noise (10.5-12.2/16.7-18.1 ms and
    /// 10.9-13.1/15.1-20.8 ms, three runs each). The mock cluster is another
    /// matter (see `switchboard::embedded::MOCK_FETCH_WAIT`).
    pub fetch_wait: Duration,
    /// Told of every record this process's producers enqueue (but those of
    /// `KafkaProducer::unwatched`): set by the embedded default, whose mock
    /// brokers idle while nothing is written (`switchboard::mock_brokers`).
    pub write_watch: Option<Arc<dyn WriteWatch>>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            security: KafkaSecurity::default(),
            options: Vec::new(),
            linger: Duration::from_millis(2),
            fetch_wait: Duration::from_millis(500),
            write_watch: None,
        }
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        // librdkafka doubles the wait between attempts to reach a broker up
        // to 10 s by default, so after a broker restart each client came
        // back at its own time within those 10 s: one edge's producer
        // several seconds after the other edges heard again, long enough for
        // them to drop its users from presence (the outage test with 1 s
        // refreshes). At most 1 s (+50% jitter) between attempts, every
        // client is back within about a second of the broker; an attempt a
        // second per broker during an outage costs nothing.
        config.set("reconnect.backoff.max.ms", "1000");
        let security = &self.security;
        config.set("security.protocol", security.protocol.name());
        if let Some(sasl) = &security.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.name())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        match &security.ca_location {
            Some(ca) => {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
            // OpenSSL is built into the binaries (rdkafka's ssl-vendored),
            // so its default CA path is not the system's: look for the
            // system's store in the usual places.
            None if security.protocol.tls() => {
                config.set("ssl.ca.location", "probe");
            }
            None => {}
        }
        config
    }

    /// What every consumer shares: how long its fetches wait at the broker.
    fn consumer_base(&self) -> ClientConfig {
        let mut config = self.base();
        config.set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string());
        config
    }

    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    /// Admin client (topic creation and inspection; real clusters only).
    pub fn admin(&self) -> KafkaResult<AdminClient<DefaultClientContext>> {
        self.finish(self.base()).create()
    }

    /// Idempotent producer, acks from all in-sync replicas; order per
    /// partition is kept even across retries. Waits up to `linger` to batch
    /// records that are sent one by one (the edge's client sends).
    pub fn producer(&self) -> KafkaResult<KafkaProducer> {
        self.producer_with_linger(self.linger)
    }

    /// The same producer with a linger of only 0.2 ms, for a worker that
    /// queues a whole batch and then waits for its acks: everything there is
    /// to send is queued already, so the edge's linger only delayed the acks
    /// (2 ms of a ~4.5 ms persister cycle at 2,000 msg/s).
    pub fn batch_producer(&self) -> KafkaResult<KafkaProducer> {
        self.producer_with_linger(BATCH_LINGER)
    }

    fn producer_with_linger(&self, linger: Duration) -> KafkaResult<KafkaProducer> {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // librdkafka takes fractions of a millisecond.
            .set("linger.ms", (linger.as_secs_f64() * 1000.0).to_string())
            // A record not acknowledged within this time fails its delivery
            // future, which the edge turns into a typed `unavailable` error.
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.messages", "200000");
        KafkaProducer::new(&self.finish(config), self.write_watch.clone())
    }

    /// Consumer in `group`; offsets are committed in the background but only
    /// those passed to `store_offset` after the work is durable.
    ///
    /// `instance` turns on static membership: a member restarted with the
    /// same instance id takes its partitions back at once, instead of the
    /// group waiting out the dead member's session first.
    ///
    /// librdkafka's statistics (every [`STATS_INTERVAL_MS`]) go to `on_stats`.
    pub fn group_consumer(
        &self,
        group: &str,
        instance: Option<&str>,
        on_stats: StatsHandler,
    ) -> KafkaResult<GroupConsumer> {
        let mut config = self.consumer_base();
        if let Some(instance) = instance {
            config.set("group.instance.id", instance);
        }
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Long enough for a broker restart (9-14 s in the fault suite)
            // to pass inside the session: a session that expired during an
            // outage once left a static member with no partitions and no
            // error (the workers' restarts reuse their instance id, so they
            // take their partitions back at once whatever this is).
            .set("session.timeout.ms", "30000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", STATS_INTERVAL_MS);
        self.finish(config).create_with_context(GroupContext { on_stats })
    }

    /// A consumer for operator tools (`sbctl replay`, `sbctl groups`): in
    /// `group` for its committed offsets, but it commits only when told,
    /// joins nothing (assignments are explicit) and reports each partition's
    /// end, so a bounded read knows when it is done.
    pub fn tool_consumer<C: FromClientConfigAndContext<ToolContext>>(&self, group: &str) -> KafkaResult<C> {
        let mut config = self.manual_consumer(group);
        config.set("enable.partition.eof", "true").set("auto.offset.reset", "error");
        // A tool reads a backlog as fast as it can, so its queue of fetched
        // records fills (64 MiB by default), and librdkafka then waits this
        // long before it fetches again: 1 s by default, in which the tool
        // emptied the queue and sat idle. `sbctl replay store --count-only`
        // over 244,000 records (120 MB): 1.7 s with the default, 0.8 s with 10 ms.
        config.set("fetch.queue.backoff.ms", "10");
        self.finish(config).create_with_context(ToolContext)
    }

    /// Consumer without a group, driven by explicit assignment.
    ///
    /// A position past the log's end (the topic was deleted and created
    /// again) or before its start (retention) restarts from the earliest
    /// record still held: for an edge's delivery topic, everything a new
    /// topic holds was written after the loss, which `sbctl replay deliver`
    /// relies on.
    pub fn assigned_consumer(&self) -> KafkaResult<StreamConsumer> {
        // librdkafka wants a group id even when only assign() is used; it is never joined.
        let mut config = self.manual_consumer("sb-unused");
        config.set("auto.offset.reset", "earliest");
        self.finish(config).create()
    }

    /// Settings of a consumer that is assigned its partitions and stores
    /// and commits nothing by itself.
    fn manual_consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.consumer_base();
        config.set("group.id", group).set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        config
    }
}

/// How often a group consumer hands librdkafka's statistics to its handler.
pub const STATS_INTERVAL_MS: &str = "5000";

/// What a group consumer does with librdkafka's statistics (the workers set
/// their consumer-lag gauges from them).
pub type StatsHandler = Arc<dyn Fn(&Statistics) + Send + Sync>;

/// Context of group consumers: librdkafka's defaults, and its statistics
/// handed to a handler. Statistics are the one way to a partition's lag that
/// asks the broker nothing extra (rdkafka's `fetch_watermarks` is a request).
pub struct GroupContext {
    on_stats: StatsHandler,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        (self.on_stats)(&statistics);
    }
}

impl ConsumerContext for GroupContext {}

/// A consumer in a group, made by [`KafkaConfig::group_consumer`].
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Context of the operator tools' consumers. They ask for a notice at each
/// partition's end (a bounded read knows it is done from it), and
/// librdkafka also hands that notice to the error callback, which would log
/// it as an error once per partition; everything else is logged as by
/// default.
pub struct ToolContext;

impl ClientContext for ToolContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF) | KafkaError::PartitionEOF(_)) {
            tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ToolContext {}

/// A tool consumer polled by hand, made by [`KafkaConfig::tool_consumer`].
pub type ToolConsumer = BaseConsumer<ToolContext>;

/// A tool consumer read as a stream, made by [`KafkaConfig::tool_consumer`].
pub type ToolStreamConsumer = StreamConsumer<ToolContext>;

/// Logs an error a consumer returned instead of a record, then pauses
/// briefly. librdkafka queues its notices (broker down, reconnecting) among
/// the records and paces them by its reconnect backoff, so these are
/// transient; the pause only keeps a consumer that returns nothing but
/// errors from spinning. At 200 ms a notice, the ~55 notices queued during a
/// broker restart held back the records behind them for 11 s.
pub async fn consume_error(reading: &'static str, e: &KafkaError) {
    tracing::warn!(reading, error = %e, "kafka consume error");
    tokio::time::sleep(CONSUME_ERROR_PAUSE).await;
}

/// Partition numbers of `topic`, from the cluster's metadata; an error while
/// the cluster does not know the topic. Takes any client (`consumer.client()`).
pub fn partitions<C: ClientContext>(client: &Client<C>, topic: &str) -> KafkaResult<Vec<i32>> {
    let metadata = client.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let unknown = KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition);
    let found = metadata.topics().iter().find(|t| t.name() == topic).ok_or_else(|| unknown.clone())?;
    if let Some(code) = found.error() {
        return Err(KafkaError::MetadataFetch(code.into()));
    }
    if found.partitions().is_empty() {
        return Err(unknown);
    }
    Ok(found.partitions().iter().map(|p| p.id()).collect())
}

/// How often, and how many times, an assignment asks again for topics the
/// cluster does not know yet (about 30 s in all).
const TOPIC_RETRY_DELAY: Duration = Duration::from_millis(500);
const TOPIC_RETRIES: usize = 60;

/// Assigns every partition of `topics` to `consumer`, starting at `offset`,
/// once the cluster knows all of them. Returns the (topic, partition) pairs
/// assigned, or the metadata error after about 30 s.
///
/// A broker that has just started answers "unknown topic" for a while, and
/// a topic just created takes a moment to appear. Assigning only what is
/// known would leave the consumer reading nothing, silently and for good
/// (a router started with a just-restarted broker routed no event at all).
pub async fn assign_all(consumer: &StreamConsumer, topics: &[&str], offset: Offset) -> KafkaResult<Vec<(String, i32)>> {
    let (list, assigned) = every_partition(consumer, topics, offset).await?;
    consumer.assign(&list)?;
    Ok(assigned)
}

/// Assigns every partition of `topics` from its first record written at
/// or after `since` (ms since the Unix epoch), or from its end where none
/// was: the state of a topic of short-lived records, rebuilt from the
/// window that still counts. Returns each partition with the offset it
/// starts at (`None`: its end).
pub async fn assign_all_since(
    consumer: &StreamConsumer,
    topics: &[&str],
    since: i64,
) -> KafkaResult<Vec<(String, i32, Option<i64>)>> {
    let (list, _) = every_partition(consumer, topics, Offset::Offset(since)).await?;
    let found = consumer.offsets_for_times(list, METADATA_TIMEOUT)?;
    consumer.assign(&found)?;
    Ok(found
        .elements()
        .iter()
        .map(|p| (p.topic().to_owned(), p.partition(), p.offset().to_raw().filter(|o| *o >= 0)))
        .collect())
}

/// Every partition of `topics` at `offset`, waiting briefly for a cluster
/// that does not know the topics yet.
async fn every_partition(
    consumer: &StreamConsumer,
    topics: &[&str],
    offset: Offset,
) -> KafkaResult<(TopicPartitionList, Vec<(String, i32)>)> {
    let lookup = || async {
        topics.iter().map(|topic| Ok((*topic, partitions(consumer.client(), topic)?))).collect::<KafkaResult<Vec<_>>>()
    };
    let found = lookup
        .retry(ConstantBuilder::new().with_delay(TOPIC_RETRY_DELAY).with_max_times(TOPIC_RETRIES))
        .notify(|e, _| tracing::warn!(?topics, error = %e, "waiting for the cluster to know the topics"))
        .await?;
    let mut list = TopicPartitionList::new();
    let mut assigned = Vec::new();
    for (topic, partitions) in found {
        for partition in partitions {
            list.add_partition_offset(topic, partition, offset)?;
            assigned.push((topic.to_string(), partition));
        }
    }
    Ok((list, assigned))
}

/// Reads a header as UTF-8 text.
pub fn header_str<'a, M: Message>(message: &'a M, name: &str) -> Option<&'a str>
where
    M::Headers: 'a,
{
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// The trace context a record carries (its `traceparent` header), if valid.
pub fn trace_of<M: Message>(message: &M) -> Option<TraceParent> {
    header_str(message, switchboard_schemas::headers::TRACEPARENT).and_then(|v| TraceParent::parse(v).ok())
}

/// Headers for a new record: schema version and trace context.
pub fn record_headers(schema: &str, traceparent: Option<&str>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(2)
        .insert(Header { key: switchboard_schemas::headers::SCHEMA, value: Some(schema) });
    if let Some(tp) = traceparent {
        headers = headers.insert(Header { key: switchboard_schemas::headers::TRACEPARENT, value: Some(tp) });
    }
    headers
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    use super::*;

    #[tokio::test]
    async fn an_assignment_waits_for_a_topic_the_cluster_does_not_know_yet() {
        let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
        cluster.create_topic("known", 2, 1).unwrap();
        let consumer = KafkaConfig::new(cluster.bootstrap_servers()).assigned_consumer().unwrap();
        assert!(partitions(consumer.client(), "later").is_err(), "the cluster does not know the topic yet");

        let create_later = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.create_topic("later", 3, 1).unwrap();
        };
        let (assigned, ()) = tokio::join!(assign_all(&consumer, &["known", "later"], Offset::Beginning), create_later);

        let mut assigned = assigned.unwrap();
        assigned.sort();
        let expected: Vec<(String, i32)> =
            [("known", 0), ("known", 1), ("later", 0), ("later", 1), ("later", 2)].map(|(t, p)| (t.into(), p)).into();
        assert_eq!(assigned, expected);
        assert_eq!(consumer.assignment().unwrap().count(), 5);
    }
}
