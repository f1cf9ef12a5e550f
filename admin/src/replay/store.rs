//! `sbctl replay store`: rebuilds the SQL store from `sb.inbound` through
//! the persister's own code (`switchboard_workers::inbound::decode`, then
//! `Store::apply`), into any database. Plan-only unless `--execute`;
//! idempotent (what is already stored is found and left alone); resumable
//! (progress is committed to a consumer group of its own, with the run's
//! range in the commit metadata); throttleable (`--max-rate`).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::join_all;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use switchboard_core::config::{DatabaseArgs, KafkaArgs};
use switchboard_core::kafka::{KafkaConfig, ToolConsumer, ToolStreamConsumer, record_headers};
use switchboard_core::producer::KafkaProducer;
use switchboard_core::store::{Outcome, Store, StoreError};
use switchboard_schemas::envelope::{EVENT_V1, Event, Inbound};
use switchboard_workers::{inbound, persister};
use tokio::sync::{mpsc, oneshot};

use super::{Part, Range, Reader, Tracker, last_offsets, plan, print_parts, refuse_compacted, refuse_lost};
use crate::error::SbctlError;
use crate::positions;

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub range: Range,
    /// Consumer group that holds this replay's progress [default: <topic-prefix>-replay-store].
    #[arg(long)]
    pub group: Option<String>,
    /// The live persisters' group, which must have no members while the
    /// replay writes to their database [default: <topic-prefix>-persister].
    #[arg(long)]
    pub persister_group: Option<String>,
    /// The database is not the live persisters' one: replay while they run.
    #[arg(long)]
    pub persister_running_ok: bool,
    /// Read the range and count its records without writing anything: the
    /// topic's own read rate, to compare with the replay's.
    #[arg(long)]
    pub count_only: bool,
    /// Transactions each batch is split over, by room, on separate database
    /// connections at once, as the persister's `--persister-lanes` (1 on SQLite).
    #[arg(long, default_value_t = inbound::DEFAULT_LANES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub lanes: usize,
    /// Most records per batch, each batch one transaction per lane, as the
    /// persister's `--persister-batch-max`.
    #[arg(long, default_value_t = persister::DEFAULT_BATCH_MAX,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub batch_size: usize,
    /// Also publish to sb.events the event of every replayed message and
    /// room change, as the persister does (at least once: consumers drop
    /// what they have by room and seq), for consumers of sb.events that lost
    /// them too. Without it nothing is published (the events are already in
    /// the topic).
    #[arg(long, conflicts_with = "count_only")]
    pub publish_events: bool,
}

/// What a run is besides its range: which rooms, whether it publishes, and
/// into which database (hashed: anyone who can list the group reads the
/// metadata). A run takes up only an unfinished run of the same kind, so a
/// run for other rooms or another database never skips what that one did.
fn run_kind(rooms: &HashSet<String>, publish: bool, database_url: &str) -> String {
    let mut sorted: Vec<&String> = rooms.iter().collect();
    sorted.sort();
    let rooms = if sorted.is_empty() {
        "all".to_owned()
    } else {
        format!("{:016x}", fnv1a(sorted.iter().flat_map(|r| r.bytes().chain([b','])).collect::<Vec<_>>().as_slice()))
    };
    format!("rooms={rooms} publish={} db={:016x}", u8::from(publish), fnv1a(database_url.as_bytes()))
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (the
/// standard library's does not promise to), for the metadata above.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Commit metadata: the run this progress belongs to.
fn metadata(part: &Part, kind: &str, done: bool) -> String {
    let state = if done { " done" } else { "" };
    format!("replay-store from={} to={} {kind}{state}", part.requested, part.to())
}

/// Parses commit metadata written by [`metadata`]: (from, to, kind, done).
fn parse_metadata(text: &str) -> Option<(i64, i64, String, bool)> {
    let rest = text.strip_prefix("replay-store ")?;
    let mut from = None;
    let mut to = None;
    let mut kind = Vec::new();
    let mut done = false;
    for word in rest.split(' ') {
        if let Some(v) = word.strip_prefix("from=") {
            from = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("to=") {
            to = v.parse().ok();
        } else if word == "done" {
            done = true;
        } else {
            kind.push(word);
        }
    }
    Some((from?, to?, kind.join(" "), done))
}

pub async fn store(args: StoreArgs) -> Result<(), SbctlError> {
    let topics = args.kafka.topics();
    let topic = topics.inbound();
    let kafka = args.kafka.config();
    let group = args.group.clone().unwrap_or_else(|| topics.group("replay-store"));
    let persisters = args.persister_group.clone().unwrap_or_else(|| topics.group("persister"));
    let rooms: HashSet<String> = args.range.rooms();

    refuse_compacted(&kafka, &topic).await?;
    let consumer: ToolConsumer = kafka.tool_consumer(&group)?;
    let mut parts = plan(&consumer, &topic, &args.range.from)?;
    let kind = run_kind(&rooms, args.publish_events, args.database.url.expose());
    resume(&consumer, &topic, &kind, &mut parts)?;
    let store = if args.count_only {
        None
    } else {
        Some(
            Store::connect(args.database.url.expose(), args.lanes as u32)
                .await
                .map_err(|e| SbctlError::Usage(format!("the database at --database-url does not answer: {e}")))?,
        )
    };
    let live = positions::group_members(&consumer, &persisters)?.map_or(0, |g| g.members);

    println!("replay store from {topic} {}; progress in consumer group {group}", args.range.describe());
    print_parts(&parts);
    if live > 0 && !args.persister_running_ok && !args.count_only {
        if args.range.execute {
            return Err(SbctlError::Refused(format!(
                "the persister group {persisters} has {live} live member(s): stop the persisters before replaying \
                 into their database (they would store new messages between the replayed ones), or pass \
                 --persister-running-ok when replaying into another database"
            )));
        }
        println!(
            "warning: the persister group {persisters} has {live} live member(s); --execute will refuse until they \
             stop (or pass --persister-running-ok when replaying into another database)"
        );
    }
    refuse_lost(&parts, args.range.allow_partial, "the rebuilt store would lack them")?;
    if !args.range.execute {
        println!("plan only: nothing changed. Add --execute to run it.");
        return Ok(());
    }
    let work: Vec<Part> = parts.into_iter().filter(|p| p.records() > 0).collect();
    if work.is_empty() {
        println!("nothing to replay.");
        return Ok(());
    }
    if let Some(store) = &store {
        store.migrate().await?;
    }
    let publisher = match args.publish_events {
        true => Some(Publisher { producer: kafka.batch_producer()?, topic: topics.events() }),
        false => None,
    };
    let target = store.as_ref().map(|store| Target { store, publisher: publisher.as_ref() });
    let summary =
        execute(&kafka, &consumer, &group, &topic, &work, target, &rooms, &kind, args.range.max_rate, args.batch_size)
            .await?;
    summary.print();
    Ok(())
}

/// Takes up an unfinished run of the same range and kind where it stopped,
/// as its progress (committed offsets with the run in the metadata) says.
fn resume(consumer: &ToolConsumer, topic: &str, kind: &str, parts: &mut [Part]) -> Result<(), SbctlError> {
    let partitions: Vec<i32> = parts.iter().map(|p| p.partition).collect();
    let committed: BTreeMap<i32, Option<(i64, String)>> =
        positions::committed(consumer, topic, &partitions)?.into_iter().collect();
    for part in parts {
        if let Some(Some((offset, metadata))) = committed.get(&part.partition)
            && let Some((run_from, run_to, run_kind, done)) = parse_metadata(metadata)
            && !done
            && run_kind == kind
            && run_from == part.requested
            && *offset > part.requested
            && *offset <= run_to
        {
            part.from = *offset;
        }
    }
    Ok(())
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    read: u64,
    stored: u64,
    already: u64,
    refused: u64,
    commands: u64,
    undecodable: u64,
    other_rooms: u64,
    failed: u64,
    published: u64,
    elapsed: Duration,
    applying: Duration,
}

impl Summary {
    /// Adds the counts of a batch's reading or applying to the run's.
    fn add(&mut self, batch: &Summary) {
        self.read += batch.read;
        self.stored += batch.stored;
        self.already += batch.already;
        self.refused += batch.refused;
        self.commands += batch.commands;
        self.undecodable += batch.undecodable;
        self.other_rooms += batch.other_rooms;
        self.failed += batch.failed;
    }

    fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "replayed {} records in {:.1} s ({:.0} records/s; {:.1} s of it in SQL): {} messages stored, {} already \
             stored, {} sends refused as the persister refused them, {} room commands and read markers, {} undecodable (dead-lettered \
             by the persister), {} of other rooms, {} the database refused, {} events published",
            self.read,
            secs,
            self.read as f64 / secs,
            self.applying.as_secs_f64(),
            self.stored,
            self.already,
            self.refused,
            self.commands,
            self.undecodable,
            self.other_rooms,
            self.failed,
            self.published
        );
    }
}

/// A batch read and decoded.
struct Decoded {
    records: Vec<Inbound>,
    /// The last offset read per partition.
    last: BTreeMap<i32, i64>,
}

/// Reads the next batch and decodes it, counting what it skips.
async fn read_batch(
    consumer: &ToolStreamConsumer,
    tracker: &mut Tracker,
    rooms: &HashSet<String>,
    summary: &mut Summary,
) -> Result<Option<Decoded>, SbctlError> {
    let records = tracker.next_batch(consumer).await?;
    if records.is_empty() {
        return Ok(None);
    }
    let mut decoded = Decoded { records: Vec::with_capacity(records.len()), last: last_offsets(&records) };
    for record in &records {
        summary.read += 1;
        match inbound::decode(record) {
            Err(_) => summary.undecodable += 1,
            Ok(inbound) if !rooms.is_empty() && !rooms.contains(inbound.room()) => summary.other_rooms += 1,
            Ok(inbound) => decoded.records.push(inbound),
        }
    }
    Ok(Some(decoded))
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    kafka: &KafkaConfig,
    positions_consumer: &ToolConsumer,
    group: &str,
    topic: &str,
    work: &[Part],
    target: Option<Target<'_>>,
    rooms: &HashSet<String>,
    kind: &str,
    max_rate: Option<NonZeroU32>,
    batch_size: usize,
) -> Result<Summary, SbctlError> {
    let Reader { consumer, mut tracker } = Reader::new(kafka, group, topic, work, max_rate, batch_size)?;
    let by_part: BTreeMap<i32, &Part> = work.iter().map(|p| (p.partition, p)).collect();
    let mut summary = Summary::default();
    let started = Instant::now();
    let lanes = target.as_ref().map(|t| Lanes::spawn(t.store, t.publisher.is_some()));
    // Batches read and handed to the lanes, oldest first, with the last
    // offset read per partition: saved as progress once every lane has
    // applied its part.
    let mut in_flight: VecDeque<(BTreeMap<i32, i64>, Vec<LaneReply>)> = VecDeque::new();
    let mut unsaved = BTreeMap::new();
    let mut saved = Instant::now();
    loop {
        if !tracker.done() && in_flight.len() < IN_FLIGHT {
            if let Some(batch) = read_batch(&consumer, &mut tracker, rooms, &mut summary).await? {
                let replies = match &lanes {
                    Some(lanes) => lanes.submit(batch.records).await,
                    None => Vec::new(),
                };
                in_flight.push_back((batch.last, replies));
            }
            continue;
        }
        let Some((last, replies)) = in_flight.pop_front() else { break };
        for reply in replies {
            let (applied, took) = reply.await.map_err(|_| lane_lost())?;
            let (counts, events) = applied?;
            summary.applying += took / lanes.as_ref().map_or(1, Lanes::count);
            summary.add(&counts);
            if let Some(publisher) = target.as_ref().and_then(|t| t.publisher) {
                summary.published += publisher.publish(events).await?;
            }
        }
        // Progress is saved once the batch is durable.
        unsaved.extend(tracker.handled(&last).into_iter().map(|(partition, next, done)| (partition, (next, done))));
        if saved.elapsed() >= SAVE_PROGRESS_EVERY {
            save_progress(positions_consumer, topic, &by_part, kind, &mut unsaved, target.is_some())?;
            saved = Instant::now();
        }
    }
    save_progress(positions_consumer, topic, &by_part, kind, &mut unsaved, target.is_some())?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Batches read ahead of the oldest one not yet applied. Each lane then
/// has the next batch's part queued while the others finish theirs, so no
/// lane waits for the slowest one, and the reader is never what they wait
/// for.
const IN_FLIGHT: usize = 3;

/// What a lane answers for its part of a batch: what it did and the events
/// of it, and how long it took.
type Applied = (Result<(Summary, Vec<(String, Event)>), SbctlError>, Duration);
type LaneReply = oneshot::Receiver<Applied>;

/// The replay's lanes (see `--lanes`): each applies the part of every batch
/// whose rooms are its own ([`inbound::lane_of`]), in order, on a task of
/// its own. Split per batch and joined on one task, the lanes took turns
/// for their own work (deciding seqs, encoding rows), and every batch
/// waited for its slowest lane: PostgreSQL's connections sat idle, waiting
/// on the replay, a third of the time (sampled `pg_stat_activity`).
struct Lanes {
    /// Per lane: its parts of batches, each with where to answer.
    jobs: Vec<mpsc::Sender<(Vec<Inbound>, oneshot::Sender<Applied>)>>,
}

impl Lanes {
    /// One lane per connection the store writes through at once.
    fn spawn(store: &Store, publish: bool) -> Self {
        let jobs = (0..store.concurrent_writers())
            .map(|_| {
                let (jobs, mut queue) = mpsc::channel::<(Vec<Inbound>, oneshot::Sender<Applied>)>(IN_FLIGHT);
                let store = store.clone();
                tokio::spawn(async move {
                    while let Some((records, reply)) = queue.recv().await {
                        let began = Instant::now();
                        let applied = apply(&store, &records, publish).await;
                        // The reader may have given up on the run meanwhile.
                        let _ = reply.send((applied, began.elapsed()));
                    }
                });
                jobs
            })
            .collect();
        Self { jobs }
    }

    fn count(&self) -> u32 {
        self.jobs.len() as u32
    }

    /// Hands each lane its part of the batch; the answers, one per lane.
    async fn submit(&self, records: Vec<Inbound>) -> Vec<LaneReply> {
        let mut parts: Vec<Vec<Inbound>> = vec![Vec::new(); self.jobs.len()];
        for record in records {
            parts[inbound::lane_of(record.room(), self.jobs.len())].push(record);
        }
        let mut replies = Vec::with_capacity(parts.len());
        for (part, lane) in parts.into_iter().zip(&self.jobs) {
            let (reply, answer) = oneshot::channel();
            // A lane ends only when its task does; its answer's loss says so.
            let _ = lane.send((part, reply)).await;
            replies.push(answer);
        }
        replies
    }
}

fn lane_lost() -> SbctlError {
    SbctlError::Refused(
        "a replay lane stopped unexpectedly; progress up to the last batch is saved, run the same command again to \
         resume"
            .to_owned(),
    )
}

/// How often a run saves its progress. Saving is a round trip to the
/// group's coordinator, which once per batch took a fifth of a replay's
/// time; a run killed in between applies up to this much again when
/// resumed, which changes nothing (applying is idempotent).
const SAVE_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Commits the progress not saved yet (per partition: the next offset and
/// whether its range is done) to the run's group, when it writes anywhere.
fn save_progress(
    consumer: &ToolConsumer,
    topic: &str,
    parts: &BTreeMap<i32, &Part>,
    kind: &str,
    unsaved: &mut BTreeMap<i32, (i64, bool)>,
    writes: bool,
) -> Result<(), SbctlError> {
    let offsets: Vec<(i32, i64, String)> = std::mem::take(unsaved)
        .into_iter()
        .map(|(partition, (next, done))| (partition, next, metadata(parts[&partition], kind, done)))
        .collect();
    if writes && !offsets.is_empty() {
        positions::commit(consumer, topic, &offsets)?;
    }
    Ok(())
}

/// Applies records as the persister does (see
/// [`inbound::apply_in_lanes`]): retrying while the database is unavailable
/// (a while, then a clear error), and counting and passing a record the
/// database refuses for good, which the persister dead-letters.
/// Returns what it did and, when `publish`, the events of what was applied.
async fn apply(store: &Store, batch: &[Inbound], publish: bool) -> Result<(Summary, Vec<(String, Event)>), SbctlError> {
    let mut summary = Summary::default();
    if batch.is_empty() {
        return Ok((summary, Vec::new()));
    }
    // Why the last attempt gave up, when the database stayed unavailable.
    let gave_up = Mutex::new(None);
    let gave_up_ref = &gave_up;
    // The batch is one lane's part already (see [`Lanes`]).
    let results = inbound::apply_isolating(batch.iter().collect(), &|records: Vec<&Inbound>| async move {
        match retried(store, &records).await {
            Err(e) if e.is_retryable() => {
                *gave_up_ref.lock().expect("not poisoned") = Some(e);
                None
            }
            other => Some(other),
        }
    })
    .await;
    let Some(results) = results else {
        return Err(unavailable(gave_up.into_inner().expect("not poisoned").expect("gave up for a reason")));
    };
    let mut events = Vec::new();
    for (result, record) in results.into_iter().zip(batch) {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(room = record.room(), error = %e, "the database refused a record; skipped");
                summary.failed += 1;
                continue;
            }
        };
        match &outcome {
            Outcome::Stored { duplicate: false, .. } => summary.stored += 1,
            Outcome::Stored { duplicate: true, .. } | Outcome::Erased => summary.already += 1,
            Outcome::Rejected { .. } => summary.refused += 1,
            Outcome::Applied { .. } => summary.commands += 1,
        }
        if publish && let Some(event) = outcome.into_event() {
            events.push((record.room().to_owned(), event));
        }
    }
    Ok((summary, events))
}

/// Where a replay writes: the store, and sb.events when told to publish.
struct Target<'a> {
    store: &'a Store,
    publisher: Option<&'a Publisher>,
}

/// Publishes what a replay applied to sb.events, as the persister does.
struct Publisher {
    producer: KafkaProducer,
    topic: String,
}

impl Publisher {
    /// Publishes and waits for every ack; returns how many were published.
    async fn publish(&self, events: Vec<(String, Event)>) -> Result<u64, SbctlError> {
        let pending = events.iter().map(|(room, event)| async move {
            let payload = event.to_json();
            let record = FutureRecord::to(&self.topic)
                .key(room.as_str())
                .payload(&payload)
                .headers(record_headers(EVENT_V1, None));
            self.producer.send(record, Timeout::Never).await
        });
        for result in join_all(pending).await {
            if let Err(e) = result {
                return Err(SbctlError::Refused(format!(
                    "could not publish to {} ({e}); progress up to the last batch is saved, run the same command \
                     again to resume (this batch is applied and published again)",
                    self.topic
                )));
            }
        }
        Ok(events.len() as u64)
    }
}

fn unavailable(e: StoreError) -> SbctlError {
    SbctlError::Refused(format!(
        "the database stayed unavailable ({e}); progress up to the last batch is saved, run the same command again \
         to resume"
    ))
}

async fn retried(store: &Store, batch: &[&Inbound]) -> Result<Vec<Outcome>, StoreError> {
    let attempt = || store.apply(batch);
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(8),
        )
        .when(StoreError::is_retryable)
        .notify(|e, wait| eprintln!("database unavailable ({e}); retrying in {wait:?}"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::Log;

    #[test]
    fn progress_metadata_round_trips() {
        let part =
            Part { partition: 0, log: Log { start: 0, end: 10 }, from: 3, requested: 0, note: None, lost: false };
        let kind = run_kind(&HashSet::new(), false, "postgres://db");
        assert_eq!(parse_metadata(&metadata(&part, &kind, false)), Some((0, 10, kind.clone(), false)));
        assert_eq!(parse_metadata(&metadata(&part, &kind, true)), Some((0, 10, kind.clone(), true)));
        let some_rooms: HashSet<String> = ["b".into(), "a".into()].into();
        let other = run_kind(&some_rooms, false, "postgres://db");
        assert_ne!(other, kind, "a run for some rooms is another kind of run");
        assert_eq!(other, run_kind(&["a".into(), "b".into()].into(), false, "postgres://db"), "in any order");
        assert_ne!(run_kind(&HashSet::new(), true, "postgres://db"), kind);
        assert_ne!(run_kind(&HashSet::new(), false, "postgres://other"), kind);
        assert_eq!(parse_metadata("something else"), None);
    }
}
