//! The persister: consumes `sb.inbound` in a consumer group and, per batch,
//! stores the sends in one SQL transaction, publishes the stored messages to
//! `sb.events` (rejections to the sender's node), and only then stores the
//! consumer offsets. A crash anywhere before that replays the batch, and the
//! idempotent insert makes the replay harmless.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::join_all;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use switchboard_core::backlog::Backlog;
use switchboard_core::dead_letter::DeadLetter;
use switchboard_core::kafka::{record_headers, trace_of};
use switchboard_core::metrics::Metrics;
use switchboard_core::ops::Readiness;
use switchboard_core::producer::KafkaProducer;
use switchboard_core::store::{Outcome, Store, StoreError};
use switchboard_core::topics::Topics;
use switchboard_core::traces::{self, Attribute, Hop};
use switchboard_schemas::envelope::{EVENT_V1, Event, Inbound};
use tokio_util::sync::CancellationToken;

use crate::batch;
use crate::error::WorkerError;
use crate::events::PersisterEvents;
use crate::inbound;
use crate::membership::GroupMember;

/// Most records per batch by default (`--persister-batch-max`); also
/// `sbctl replay store`'s. The store alone on PostgreSQL, 2 lanes, 100
/// rooms (`sbbench store --rooms 100 --batch-size N`), measured when a
/// batch's messages went in as one INSERT (before `COPY`): 119,000 rows/s
/// in batches of 1,000, 150,000 of 2,000, 166,000 of 5,000, 163,000 of
/// 10,000, 168,000 of 20,000; with `COPY`, 189,000-197,000 at 5,000.
pub const DEFAULT_BATCH_MAX: usize = 5_000;

#[derive(Debug, Clone, clap::Args)]
pub struct PersisterConfig {
    /// Consumer group shared by all persister instances [default: <topic-prefix>-persister].
    #[arg(long = "persister-group", env = "SB_PERSISTER_GROUP")]
    pub group: Option<String>,
    /// Stable id of this instance in the group (e.g. the StatefulSet pod
    /// name): a restart with the same id resumes its partitions at once.
    #[arg(long = "persister-instance-id", env = "SB_PERSISTER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Most records per batch. Batches this large form only while the
    /// persister catches up on a backlog; there a batch's fixed statements
    /// and commit weigh less the more records share them (one persister
    /// draining 244,000 records into PostgreSQL, before `COPY`: 57-63k
    /// msg/s at 1,000, 72-75k at 5,000).
    #[arg(long = "persister-batch-max", env = "SB_PERSISTER_BATCH_MAX", default_value_t = DEFAULT_BATCH_MAX)]
    pub batch_max: usize,
    /// How long to wait for more records once a batch has started. 0 takes
    /// only what is already fetched: under load, records pile up while the
    /// previous batch is stored, so batches grow by themselves, and a window
    /// only added idle time to every cycle (on Kafka + PostgreSQL, 5 ms here
    /// and 2 ms in the router held fan-out to 2,000 msg/s; at 0, 4,000 passed).
    #[arg(long = "persister-batch-window", env = "SB_PERSISTER_BATCH_WINDOW", default_value = "0ms",
          value_parser = switchboard_core::config::parse_duration)]
    pub batch_window: Duration,
    /// Transactions a batch is split over, by room, on separate database
    /// connections at once (at most the pool's size; always 1 on SQLite).
    /// One transaction keeps at most one of PostgreSQL's cores busy
    /// (`sbbench store`, before `COPY`: 53,300-62,400 rows/s with 1 lane,
    /// 76,200-77,300 with 2).
    #[arg(long = "persister-lanes", env = "SB_PERSISTER_LANES", default_value_t = inbound::DEFAULT_LANES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub lanes: usize,
    /// Told what has been handled, so the edges can hold back (embedded default only).
    #[arg(skip)]
    pub backlog: Option<Arc<Backlog>>,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        Self {
            group: None,
            instance_id: None,
            batch_max: DEFAULT_BATCH_MAX,
            batch_window: Duration::ZERO,
            lanes: inbound::DEFAULT_LANES,
            backlog: None,
        }
    }
}

pub struct Persister {
    member: GroupMember,
    producer: KafkaProducer,
    dead_letter: DeadLetter,
    store: Store,
    topics: Topics,
    config: PersisterConfig,
    events: PersisterEvents,
    ready: Readiness,
}

/// What the persister keeps of one decoded record besides the record
/// itself (which goes to the store as it is, in a slice of its own).
struct Command {
    /// This message's span in the persister, under the edge's send; its
    /// context goes into the event's record.
    hop: Hop,
    /// Index of the command's record in its batch, to dead-letter the
    /// record itself (headers and origin intact) if SQL refuses it.
    record: usize,
}

impl Persister {
    pub fn new(
        kafka: &switchboard_core::kafka::KafkaConfig,
        topics: Topics,
        store: Store,
        config: PersisterConfig,
        metrics: &Metrics,
    ) -> Result<Self, WorkerError> {
        let group = config.group.clone().unwrap_or_else(|| topics.group("persister"));
        let events = PersisterEvents::new(metrics);
        let member =
            GroupMember::join(kafka, group, config.instance_id.clone(), vec![topics.inbound()], events.lag.handler())?;
        let producer = kafka.batch_producer()?;
        let dead_letter = DeadLetter::new(producer.clone(), topics.dead_letter());
        Ok(Self { member, producer, dead_letter, store, topics, config, events, ready: Readiness::default() })
    }

    /// Ready once its loop runs (group joined, database reachable at start).
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Runs until `shutdown` is cancelled; a batch in flight is finished or
    /// left unacknowledged (it will be replayed), never half-committed.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        tracing::info!(topic = %self.topics.inbound(), group = %self.member.group(), "persister started");
        self.ready.set(true);
        loop {
            self.member.rejoin_if_failed()?;
            let records =
                batch::collect(self.member.consumer(), self.config.batch_max, self.config.batch_window, &shutdown)
                    .await;
            if records.is_empty() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            if !self.handle_batch(&records, &shutdown).await {
                tracing::info!("persister stopping mid-batch; the batch will be replayed");
                return Ok(());
            }
        }
        self.ready.set(false);
        tracing::info!("persister stopped");
        Ok(())
    }

    /// Handles a batch, whatever partitions it spans, in one SQL transaction
    /// and one wait for Kafka's acks; rooms never share a partition, so order
    /// within a room is the order of the batch. Returns false when shutdown
    /// interrupted the batch before it was durable.
    async fn handle_batch(&self, records: &[BorrowedMessage<'_>], shutdown: &CancellationToken) -> bool {
        let mut decoded = Vec::with_capacity(records.len());
        let mut commands = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match decode(record, index) {
                Ok((record, command)) => {
                    decoded.push(record);
                    commands.push(command);
                }
                Err(reason) => {
                    if !self.dead_letter_until_done(record, &reason, shutdown).await {
                        return false;
                    }
                }
            }
        }
        if !commands.is_empty() && !self.persist_and_publish(records, &decoded, &commands, shutdown).await {
            return false;
        }
        if let Some(backlog) = &self.config.backlog {
            backlog.handled(records.iter().map(|r| r.payload_len()).sum());
        }
        let last: BTreeMap<(&str, i32), i64> =
            records.iter().map(|r| ((r.topic(), r.partition()), r.offset())).collect();
        self.member.store_offsets(last);
        true
    }

    /// Persists, then publishes; a failed publish redoes both (the insert is
    /// idempotent, so the retry yields the same seqs). Returns true once every
    /// event is acknowledged, false on shutdown.
    async fn persist_and_publish(
        &self,
        records: &[BorrowedMessage<'_>],
        decoded: &[Inbound],
        commands: &[Command],
        shutdown: &CancellationToken,
    ) -> bool {
        let attempt = || async {
            let started = std::time::Instant::now();
            let sql_started = SystemTime::now();
            let outcomes =
                self.persist_with_retry(records, decoded, commands, shutdown).await.ok_or(Unfinished::Shutdown)?;
            let sql_done = SystemTime::now();
            for command in commands {
                command.hop.child_between(sql_started, sql_done, || {
                    ("store batch".into(), vec![Attribute::new("switchboard.batch.size", commands.len() as i64)])
                });
            }
            let (mut stored, mut repeats, mut refused) = (0, 0, 0);
            for (outcome, record) in outcomes.iter().zip(decoded) {
                match (outcome, record) {
                    (None, _) => {}
                    (Some(Outcome::Stored { duplicate: false, .. }), _) => stored += 1,
                    (
                        Some(
                            Outcome::Stored { duplicate: true, .. }
                            | Outcome::Applied { duplicate: true, .. }
                            | Outcome::Erased,
                        ),
                        _,
                    ) => repeats += 1,
                    (Some(Outcome::Rejected { .. }), _) => refused += 1,
                    (Some(Outcome::Applied { duplicate: false, .. }), Inbound::Room(room_command)) => {
                        self.events.room_command_applied(room_command)
                    }
                    (Some(Outcome::Applied { .. }), Inbound::Send(_) | Inbound::Read(_)) => {}
                }
            }
            if !self.publish(decoded, commands, outcomes).await {
                return Err(Unfinished::NotPublished);
            }
            self.events.batch_done(started.elapsed(), stored, repeats, refused);
            Ok(())
        };
        let retried = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .without_max_times(),
            )
            .when(|e| matches!(e, Unfinished::NotPublished))
            .notify(|_, wait| self.events.batch_retried(wait));
        tokio::select! {
            _ = shutdown.cancelled() => false,
            result = retried => result.is_ok(),
        }
    }

    /// Persists a batch, retrying while the database is unavailable; a
    /// record the database refuses for good is dead-lettered alone (see
    /// [`inbound::apply_in_lanes`]).
    async fn persist_with_retry(
        &self,
        records: &[BorrowedMessage<'_>],
        decoded: &[Inbound],
        commands: &[Command],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Option<Outcome>>> {
        let lanes = self.config.lanes.min(self.store.concurrent_writers());
        let results = inbound::apply_in_lanes(decoded, lanes, |batch| self.retry_store(batch, shutdown)).await?;
        let mut outcomes = Vec::with_capacity(results.len());
        for ((result, record), command) in results.into_iter().zip(decoded).zip(commands) {
            match result {
                Ok(outcome) => outcomes.push(Some(outcome)),
                Err(e) => {
                    tracing::error!(room = %record.room(), error = %e, "record cannot be stored; dead-lettering");
                    let reason = format!("cannot be stored: {e}");
                    if !self.dead_letter_until_done(&records[command.record], &reason, shutdown).await {
                        return None;
                    }
                    outcomes.push(None);
                }
            }
        }
        Some(outcomes)
    }

    /// `None` on shutdown; `Some(Err)` for a failure that retrying cannot fix.
    async fn retry_store(
        &self,
        sends: Vec<&Inbound>,
        shutdown: &CancellationToken,
    ) -> Option<Result<Vec<Outcome>, StoreError>> {
        let attempt = || async { self.store.apply(&sends).await };
        let retried = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .with_jitter()
                    .without_max_times(),
            )
            .when(StoreError::is_retryable)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "database unavailable; retrying"));
        tokio::select! {
            _ = shutdown.cancelled() => None,
            result = retried => Some(result),
        }
    }

    /// Publishes stored messages and what room commands did to `sb.events`,
    /// rejections to the sender's node, and waits for Kafka's acks. Returns false if any record
    /// failed after the producer's own retries.
    async fn publish(&self, decoded: &[Inbound], commands: &[Command], outcomes: Vec<Option<Outcome>>) -> bool {
        let events_topic = self.topics.events();
        let producer = &self.producer;
        let mut pending = Vec::with_capacity(commands.len());
        for ((record, command), outcome) in decoded.iter().zip(commands).zip(outcomes) {
            let (topic, event) = match (outcome, record) {
                (None, _) => continue,
                (Some(Outcome::Rejected { code, message }), Inbound::Send(send)) => (
                    Cow::Owned(self.topics.deliver(&send.origin.node)),
                    Event::Rejected { room: send.room.clone(), origin: send.origin.clone(), code, message },
                ),
                (Some(Outcome::Rejected { code, message }), Inbound::Read(marker)) => (
                    Cow::Owned(self.topics.deliver(&marker.origin.node)),
                    Event::Rejected { room: marker.room.clone(), origin: marker.origin.clone(), code, message },
                ),
                (Some(Outcome::Rejected { .. }), Inbound::Room(_)) => unreachable!("room commands are not refused"),
                (Some(outcome), _) => match outcome.into_event() {
                    Some(event) => (Cow::Borrowed(events_topic.as_str()), event),
                    None => continue,
                },
            };
            let traceparent = Some(command.hop.context().to_string());
            let payload = event.to_json();
            let room = record.room();
            pending.push(async move {
                let record = FutureRecord::to(&topic)
                    .key(room)
                    .payload(&payload)
                    .headers(record_headers(EVENT_V1, traceparent.as_deref()));
                let result = producer.send(record, Timeout::Never).await;
                (topic, result)
            });
        }
        let mut all_acked = true;
        for (topic, result) in join_all(pending).await {
            if let Err(e) = result {
                tracing::error!(%topic, error = %e, "could not publish event; retrying the batch");
                all_acked = false;
            }
        }
        all_acked
    }

    /// Dead-letters a record, retrying while Kafka is unavailable.
    async fn dead_letter_until_done(
        &self,
        record: &BorrowedMessage<'_>,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let attempt = || async { self.dead_letter.send(record, reason).await };
        let retried = attempt
            .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).without_max_times())
            .notify(|e, _| tracing::warn!(error = %e, "dead-letter produce failed; retrying"));
        let done = tokio::select! {
            _ = shutdown.cancelled() => false,
            result = retried => result.is_ok(),
        };
        if done {
            self.events.dead_lettered();
        }
        done
    }
}

/// Why a batch is not finished yet.
enum Unfinished {
    Shutdown,
    /// Stored, but some events were not acknowledged by Kafka.
    NotPublished,
}

/// Decodes one `sb.inbound` record (see [`inbound::decode`]) and starts its span.
fn decode(record: &BorrowedMessage<'_>, index: usize) -> Result<(Inbound, Command), String> {
    let decoded = inbound::decode(record)?;
    let hop = traces::consumer_hop("process", record, trace_of(record).as_ref(), |attributes| {
        attributes.push(Attribute::new("switchboard.room", decoded.room().to_owned()));
    });
    Ok((decoded, Command { hop, record: index }))
}
