//! `sbctl replay store`: rebuilds the SQL store from `sb.inbound` through
//! the persister's own code (`switchboard_workers::inbound::decode`, then
//! `Store::apply`), into any database. Plan-only unless `--execute`;
//! idempotent (what is already stored is found and left alone); resumable
//! (progress is committed to a consumer group of its own, with the run's
//! range in the commit metadata); throttleable (`--max-rate`).

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use governor::{Quota, RateLimiter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use switchboard_core::config::{DatabaseArgs, KafkaArgs, parse_duration};
use switchboard_core::kafka::KafkaConfig;
use switchboard_core::store::{Outcome, Store, StoreError};
use switchboard_schemas::envelope::Inbound;
use switchboard_workers::inbound;

use crate::error::SbctlError;
use crate::positions::{self, Log, format_time, parse_time};

/// Most records applied in one transaction (the persister's default batch).
const BATCH_MAX: usize = 1_000;

/// A partition that delivers nothing for this long has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct From {
    /// From the first record the topic still holds.
    #[arg(long)]
    pub from_beginning: bool,
    /// From the first record at or after this time (RFC 3339, e.g. 2026-12-03T05:00:00Z).
    #[arg(long)]
    pub from_datetime: Option<String>,
    /// From this long ago (e.g. 2h, 3days).
    #[arg(long, value_parser = parse_duration)]
    pub by_duration: Option<Duration>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub from: From,
    /// Only these rooms (comma separated); the others' records are read and skipped.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Run the plan. Without it, the plan is printed and nothing changes.
    #[arg(long)]
    pub execute: bool,
    /// Most records applied per second.
    #[arg(long)]
    pub max_rate: Option<NonZeroU32>,
    /// Consumer group that holds this replay's progress [default: <topic-prefix>-replay-store].
    #[arg(long)]
    pub group: Option<String>,
    /// Replay even though records the range needs were deleted (retention):
    /// the database then lacks what they held.
    #[arg(long)]
    pub allow_partial: bool,
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
}

/// One partition's part of the plan.
#[derive(Debug, Clone)]
struct Part {
    partition: i32,
    log: Log,
    /// First offset to replay (the requested start, or where an unfinished run stopped).
    from: i64,
    /// The requested start, recorded with the progress so a rerun can resume.
    requested: i64,
    note: Option<String>,
    /// Records the range needs are gone (retention).
    lost: bool,
}

impl Part {
    /// One past the last offset to replay: the log's end when planned.
    fn to(&self) -> i64 {
        self.log.end
    }

    fn records(&self) -> i64 {
        (self.to() - self.from).max(0)
    }

    /// Whether an unfinished run of the same range is taken up.
    fn resumed(&self) -> bool {
        self.from != self.requested
    }

    /// Commit metadata: the run this progress belongs to.
    fn metadata(&self, done: bool) -> String {
        let state = if done { " done" } else { "" };
        format!("replay-store from={} to={}{state}", self.requested, self.to())
    }
}

/// Parses commit metadata written by [`Part::metadata`]: (from, to, done).
fn parse_metadata(text: &str) -> Option<(i64, i64, bool)> {
    let rest = text.strip_prefix("replay-store ")?;
    let mut from = None;
    let mut to = None;
    let mut done = false;
    for word in rest.split(' ') {
        if let Some(v) = word.strip_prefix("from=") {
            from = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("to=") {
            to = v.parse().ok();
        } else if word == "done" {
            done = true;
        }
    }
    Some((from?, to?, done))
}

pub async fn store(args: StoreArgs) -> Result<(), SbctlError> {
    let topics = args.kafka.topics();
    let topic = topics.inbound();
    let kafka = args.kafka.config();
    let group = args.group.clone().unwrap_or_else(|| topics.group("replay-store"));
    let persisters = args.persister_group.clone().unwrap_or_else(|| topics.group("persister"));
    let rooms: HashSet<String> = args.rooms.iter().cloned().collect();

    let policy = positions::cleanup_policy(&kafka, &topic).await?;
    if policy.contains("compact") {
        return Err(SbctlError::Refused(format!(
            "{topic} is compacted (cleanup.policy={policy}): compaction keeps only each room's last record, so a \
             replay would rebuild a fraction of the store; set cleanup.policy=delete with long retention"
        )));
    }
    let consumer: BaseConsumer = kafka.tool_consumer(&group)?;
    let parts = plan(&consumer, &topic, &args.from)?;
    let store = if args.count_only {
        None
    } else {
        Some(
            Store::connect(args.database.url.expose(), 2)
                .await
                .map_err(|e| SbctlError::Usage(format!("the database at --database-url does not answer: {e}")))?,
        )
    };
    let live = positions::group_members(&consumer, &persisters)?.map_or(0, |g| g.members);

    print_plan(&topic, &group, &rooms, &parts, args.execute);
    if live > 0 && !args.persister_running_ok && !args.count_only {
        if args.execute {
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
    if parts.iter().any(|p| p.lost) && !args.allow_partial {
        return Err(SbctlError::Refused(
            "records this range needs were deleted by retention (see above); the rebuilt store would lack them. \
             Pass --allow-partial to replay what is left"
                .into(),
        ));
    }
    if !args.execute {
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
    let summary = execute(&kafka, &consumer, &group, &topic, &work, store.as_ref(), &rooms, args.max_rate).await?;
    summary.print();
    Ok(())
}

fn plan(consumer: &BaseConsumer, topic: &str, from: &From) -> Result<Vec<Part>, SbctlError> {
    let partitions = positions::topic_partitions(consumer, topic)?;
    let at = match (&from.from_datetime, from.by_duration) {
        (Some(text), _) => Some(parse_time(text)?),
        (None, Some(ago)) => Some(switchboard_core::clock::now_ms() - ago.as_millis() as i64),
        (None, None) => None,
    };
    let at_offsets = match at {
        Some(ms) => positions::offsets_at(consumer, topic, &partitions, ms)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let committed: BTreeMap<i32, Option<(i64, String)>> =
        positions::committed(consumer, topic, &partitions)?.into_iter().collect();
    let mut parts = Vec::new();
    for partition in partitions {
        let log = positions::log(consumer, topic, partition)?;
        let mut note = None;
        let mut lost = false;
        let requested = match at {
            None => {
                if log.start > 0 {
                    lost = true;
                    note = Some(format!("offsets 0..{} were deleted (retention): LOST", log.start));
                }
                log.start
            }
            Some(ms) => match at_offsets.get(&partition).copied().flatten() {
                None => {
                    note = Some(format!("no record at or after {}", format_time(ms)));
                    log.end
                }
                Some(offset) => {
                    if offset == log.start && log.start > 0 {
                        let first = first_record_time(consumer, topic, partition, log.start)?;
                        if first.is_some_and(|t| t > ms) {
                            lost = true;
                            note = Some(format!(
                                "the log starts at offset {} ({}), after {}: older records were deleted \
                                 (retention): LOST",
                                log.start,
                                format_time(first.unwrap_or_default()),
                                format_time(ms)
                            ));
                        }
                    }
                    offset
                }
            },
        };
        let mut part = Part { partition, log, from: requested, requested, note, lost };
        // An unfinished run of the same range stopped here: go on from there.
        if let Some(Some((offset, metadata))) = committed.get(&partition)
            && let Some((run_from, run_to, done)) = parse_metadata(metadata)
            && !done
            && run_from == requested
            && *offset > requested
            && *offset <= run_to
        {
            part.from = *offset;
        }
        parts.push(part);
    }
    Ok(parts)
}

/// The timestamp of the record at `offset`, read once.
fn first_record_time(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, SbctlError> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&list)?;
    let deadline = Instant::now() + positions::TIMEOUT;
    let mut found = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(record)) => {
                found = record.timestamp().to_millis();
                break;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    consumer.unassign()?;
    Ok(found)
}

fn print_plan(topic: &str, group: &str, rooms: &HashSet<String>, parts: &[Part], execute: bool) {
    let mode = if execute { "executing" } else { "plan only" };
    let rooms = if rooms.is_empty() { "all".to_owned() } else { rooms.iter().cloned().collect::<Vec<_>>().join(",") };
    println!("replay store from {topic} ({mode}); progress in consumer group {group}; rooms: {rooms}");
    println!("{:>9}  {:>19}  {:>12}  {:>12}  {:>10}  action", "partition", "log", "from", "to", "records");
    let mut total = 0;
    for p in parts {
        let action = match (p.records(), p.resumed()) {
            (0, _) => "nothing to replay".to_owned(),
            (_, true) => format!("resume (an unfinished run stopped at {})", p.from),
            (_, false) => "replay".to_owned(),
        };
        let note = p.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default();
        println!(
            "{:>9}  {:>19}  {:>12}  {:>12}  {:>10}  {action}{note}",
            p.partition,
            format!("{}..{}", p.log.start, p.log.end),
            p.from,
            p.to(),
            p.records()
        );
        total += p.records();
    }
    println!("total: {total} records");
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
    elapsed: Duration,
    applying: Duration,
}

impl Summary {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "replayed {} records in {:.1} s ({:.0} records/s; {:.1} s of it in SQL): {} messages stored, {} already \
             stored, {} sends refused as the persister refused them, {} room commands, {} undecodable (dead-lettered \
             by the persister), {} of other rooms, {} the database refused",
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
            self.failed
        );
    }
}

/// A partition being replayed: its plan, its progress bar, and whether it is done.
struct Progress {
    part: Part,
    bar: ProgressBar,
    done: bool,
}

impl Progress {
    fn finish(&mut self) {
        self.done = true;
        self.bar.finish();
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    kafka: &KafkaConfig,
    positions_consumer: &BaseConsumer,
    group: &str,
    topic: &str,
    work: &[Part],
    store: Option<&Store>,
    rooms: &HashSet<String>,
    max_rate: Option<NonZeroU32>,
) -> Result<Summary, SbctlError> {
    let consumer: StreamConsumer = kafka.tool_consumer(group)?;
    let mut list = TopicPartitionList::new();
    for p in work {
        list.add_partition_offset(topic, p.partition, Offset::Offset(p.from))?;
    }
    consumer.assign(&list)?;
    let batch_max = max_rate.map_or(BATCH_MAX, |r| BATCH_MAX.min(r.get() as usize));
    let limiter = max_rate.map(|rate| RateLimiter::direct(Quota::per_second(rate)));

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("partition {prefix:>3} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    let mut state: BTreeMap<i32, Progress> = BTreeMap::new();
    for p in work {
        let bar = bars
            .add(ProgressBar::new(p.records() as u64).with_style(style.clone()).with_prefix(p.partition.to_string()));
        state.insert(p.partition, Progress { part: p.clone(), bar, done: false });
    }

    let mut summary = Summary::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    while state.values().any(|p| !p.done) {
        let records = next_batch(&consumer, batch_max, &mut state).await?;
        if records.is_empty() {
            continue;
        }
        if let Some(limiter) = &limiter
            && let Some(n) = NonZeroU32::new(records.len() as u32)
        {
            let _ = limiter.until_n_ready(n).await;
        }
        let mut batch = Vec::with_capacity(records.len());
        for record in &records {
            summary.read += 1;
            match inbound::decode(record) {
                Err(_) => summary.undecodable += 1,
                Ok(decoded) if !rooms.is_empty() && !rooms.contains(decoded.room()) => summary.other_rooms += 1,
                Ok(decoded) => batch.push(decoded),
            }
        }
        if let Some(store) = store {
            let applying = Instant::now();
            apply(store, &batch, &mut summary).await?;
            summary.applying += applying.elapsed();
        }
        // Progress is committed once the batch is durable.
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for record in &records {
            last.insert(record.partition(), record.offset());
        }
        let mut offsets = Vec::new();
        for (partition, offset) in last {
            if let Some(progress) = state.get_mut(&partition) {
                progress.bar.set_position((offset + 1 - progress.part.from) as u64);
                if offset + 1 >= progress.part.to() {
                    progress.finish();
                }
                offsets.push((partition, offset + 1, progress.part.metadata(progress.done)));
            }
        }
        if store.is_some() {
            positions::commit(positions_consumer, topic, &offsets)?;
        }
        if bars.is_hidden() && last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            let total: i64 = work.iter().map(Part::records).sum();
            println!(
                "replayed {} of {total} records ({:.0}/s)",
                summary.read,
                summary.read as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The next records, up to `max`, of partitions not done yet: waits for
/// the first, then takes what is already fetched. A partition whose end
/// comes (a record past the planned range, or the end of what it holds) is
/// done once this batch is applied.
async fn next_batch<'c>(
    consumer: &'c StreamConsumer,
    max: usize,
    state: &mut BTreeMap<i32, Progress>,
) -> Result<Vec<BorrowedMessage<'c>>, SbctlError> {
    let mut records: Vec<BorrowedMessage<'c>> = Vec::new();
    let mut wait = STALL_TIMEOUT;
    while records.len() < max {
        let received = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(received) => received,
            Err(_) if records.is_empty() => {
                return Err(SbctlError::Refused(format!(
                    "no record arrived for {} s while partitions are unfinished; progress is saved, run the same \
                     command again to resume",
                    STALL_TIMEOUT.as_secs()
                )));
            }
            Err(_) => break,
        };
        wait = Duration::ZERO;
        match received {
            Ok(record) => {
                let Some(progress) = state.get_mut(&record.partition()) else { continue };
                if progress.done {
                    continue;
                }
                if record.offset() >= progress.part.to() {
                    progress.finish();
                    continue;
                }
                records.push(record);
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                if let Some(progress) = state.get_mut(&partition) {
                    progress.finish();
                }
                if records.is_empty() && state.values().all(|p| p.done) {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(records)
}

/// Applies a batch as the persister does (see
/// [`inbound::apply_isolating`]): retrying while the database is unavailable
/// (a while, then a clear error), and counting and passing a record the
/// database refuses for good, which the persister dead-letters.
async fn apply(store: &Store, batch: &[Inbound], summary: &mut Summary) -> Result<(), SbctlError> {
    if batch.is_empty() {
        return Ok(());
    }
    // Why the last attempt gave up, when the database stayed unavailable.
    let gave_up = Cell::new(None);
    let gave_up_ref = &gave_up;
    let results = inbound::apply_isolating(batch, |records| async move {
        match retried(store, records).await {
            Err(e) if e.is_retryable() => {
                gave_up_ref.set(Some(e));
                None
            }
            other => Some(other),
        }
    })
    .await;
    let Some(results) = results else {
        return Err(unavailable(gave_up.take().expect("gave up for a reason")));
    };
    for (result, record) in results.into_iter().zip(batch) {
        match result {
            Err(e) => {
                tracing::warn!(room = record.room(), error = %e, "the database refused a record; skipped");
                summary.failed += 1;
            }
            Ok(Outcome::Stored { duplicate: false, .. }) => summary.stored += 1,
            Ok(Outcome::Stored { duplicate: true, .. } | Outcome::Erased) => summary.already += 1,
            Ok(Outcome::Rejected { .. }) => summary.refused += 1,
            Ok(Outcome::Applied { .. }) => summary.commands += 1,
        }
    }
    Ok(())
}

fn unavailable(e: StoreError) -> SbctlError {
    SbctlError::Refused(format!(
        "the database stayed unavailable ({e}); progress up to the last batch is saved, run the same command again \
         to resume"
    ))
}

async fn retried(store: &Store, batch: &[Inbound]) -> Result<Vec<Outcome>, StoreError> {
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

    #[test]
    fn progress_metadata_round_trips() {
        let part =
            Part { partition: 0, log: Log { start: 0, end: 10 }, from: 3, requested: 0, note: None, lost: false };
        assert_eq!(parse_metadata(&part.metadata(false)), Some((0, 10, false)));
        assert_eq!(parse_metadata(&part.metadata(true)), Some((0, 10, true)));
        assert_eq!(parse_metadata("something else"), None);
    }
}
