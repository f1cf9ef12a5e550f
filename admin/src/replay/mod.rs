//! `sbctl replay`: re-consumes a topic from a time or from its start.
//! `store` rebuilds the SQL store from `sb.inbound`; `deliver` re-routes
//! `sb.events` to the edges. Both print a plan (per partition: the offset
//! range, the record count, what will be done) and change nothing unless
//! told `--execute`; both say before anything else when records the range
//! needs were deleted by retention.

pub mod deliver;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use switchboard_core::config::parse_duration;
use switchboard_core::kafka::{KafkaConfig, ToolConsumer, ToolStreamConsumer};

use crate::error::SbctlError;
use crate::positions::{self, Log, format_time, parse_time};

pub use deliver::deliver;
pub use store::store;

/// Most records handled at once by `replay deliver` (the workers' default batch).
const BATCH_MAX: usize = 1_000;

/// A partition that delivers nothing for this long has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a replay starts.
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

/// What both replays take: where to start, which rooms, plan or execute,
/// how fast, and whether to go on past deleted records.
#[derive(Debug, Clone, clap::Args)]
pub struct Range {
    #[command(flatten)]
    pub from: From,
    /// Only these rooms (comma separated); the others' records are read and skipped.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Run the plan. Without it, the plan is printed and nothing changes.
    #[arg(long)]
    pub execute: bool,
    /// Most records handled per second.
    #[arg(long)]
    pub max_rate: Option<NonZeroU32>,
    /// Go on even though records the range needs were deleted (retention):
    /// what they held is missing from the result.
    #[arg(long)]
    pub allow_partial: bool,
}

impl Range {
    pub fn rooms(&self) -> HashSet<String> {
        self.rooms.iter().cloned().collect()
    }

    /// The plan's heading: the mode and the rooms.
    pub fn describe(&self) -> String {
        let mode = if self.execute { "executing" } else { "plan only" };
        let rooms = if self.rooms.is_empty() { "all".to_owned() } else { self.rooms.join(",") };
        format!("({mode}); rooms: {rooms}")
    }
}

/// One partition's part of the plan.
#[derive(Debug, Clone)]
pub struct Part {
    pub partition: i32,
    pub log: Log,
    /// First offset to replay (the requested start, or where an unfinished run stopped).
    pub from: i64,
    /// The requested start.
    pub requested: i64,
    pub note: Option<String>,
    /// Records the range needs are gone (retention).
    pub lost: bool,
}

impl Part {
    /// One past the last offset to replay: the log's end when planned.
    pub fn to(&self) -> i64 {
        self.log.end
    }

    pub fn records(&self) -> i64 {
        (self.to() - self.from).max(0)
    }

    /// Whether an unfinished run of the same range is taken up.
    pub fn resumed(&self) -> bool {
        self.from != self.requested
    }
}

/// Refuses a compacted topic: it keeps only each key's last record.
pub async fn refuse_compacted(kafka: &KafkaConfig, topic: &str) -> Result<(), SbctlError> {
    let policy = positions::cleanup_policy(kafka, topic).await?;
    if policy.contains("compact") {
        return Err(SbctlError::Refused(format!(
            "{topic} is compacted (cleanup.policy={policy}): compaction keeps only each room's last record, so a \
             replay would see a fraction of what happened; set cleanup.policy=delete with long retention"
        )));
    }
    Ok(())
}

/// The range of every partition of `topic` from `from` to the end it has now.
pub fn plan(consumer: &ToolConsumer, topic: &str, from: &From) -> Result<Vec<Part>, SbctlError> {
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
        parts.push(Part { partition, log, from: requested, requested, note, lost });
    }
    Ok(parts)
}

/// Refuses a plan that needs deleted records, unless told to go on without them.
pub fn refuse_lost(parts: &[Part], allow_partial: bool, without: &str) -> Result<(), SbctlError> {
    if parts.iter().any(|p| p.lost) && !allow_partial {
        return Err(SbctlError::Refused(format!(
            "records this range needs were deleted by retention (see above); {without}. Pass --allow-partial to \
             replay what is left"
        )));
    }
    Ok(())
}

/// The timestamp of the record at `offset`, read once.
fn first_record_time(
    consumer: &ToolConsumer,
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

/// Prints the plan's table: a line per partition, then the total.
pub fn print_parts(parts: &[Part]) {
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

/// A partition being read: its plan, its progress bar, and whether it is done.
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

/// Reads the planned ranges: the consumer, assigned to them, and the
/// tracker of where each partition is (kept apart so the records of a batch,
/// which borrow the consumer, can live while the tracker moves on).
pub struct Reader {
    pub consumer: ToolStreamConsumer,
    pub tracker: Tracker,
}

impl Reader {
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        topic: &str,
        work: &[Part],
        max_rate: Option<NonZeroU32>,
        batch_max: usize,
    ) -> Result<Reader, SbctlError> {
        let consumer: ToolStreamConsumer = kafka.tool_consumer(group)?;
        let mut list = TopicPartitionList::new();
        for p in work {
            list.add_partition_offset(topic, p.partition, Offset::Offset(p.from))?;
        }
        consumer.assign(&list)?;
        Ok(Reader { consumer, tracker: Tracker::new(work, max_rate, batch_max) })
    }
}

/// Where each partition's read is, with a progress bar per partition
/// (records, rate, ETA) and an optional rate limit; when the output is not
/// a terminal, a line every few seconds instead.
pub struct Tracker {
    bars: MultiProgress,
    state: BTreeMap<i32, Progress>,
    limiter: Option<DefaultDirectRateLimiter>,
    batch_max: usize,
    total: i64,
    read: u64,
    started: Instant,
    last_report: Instant,
}

impl Tracker {
    fn new(work: &[Part], max_rate: Option<NonZeroU32>, batch_max: usize) -> Tracker {
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template("partition {prefix:>3} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> ");
        let mut state = BTreeMap::new();
        for p in work {
            let bar = bars.add(
                ProgressBar::new(p.records() as u64).with_style(style.clone()).with_prefix(p.partition.to_string()),
            );
            state.insert(p.partition, Progress { part: p.clone(), bar, done: false });
        }
        Tracker {
            bars,
            state,
            limiter: max_rate.map(|rate| RateLimiter::direct(Quota::per_second(rate))),
            batch_max: max_rate.map_or(batch_max, |r| batch_max.min(r.get() as usize)),
            total: work.iter().map(Part::records).sum(),
            read: 0,
            started: Instant::now(),
            last_report: Instant::now(),
        }
    }

    /// Whether every partition has reached the end of its range.
    pub fn done(&self) -> bool {
        self.state.values().all(|p| p.done)
    }

    /// The next records, up to a batch, of partitions not done yet: waits
    /// for the first, then takes what is already fetched, then waits for the
    /// rate limit. A partition whose end comes (a record past the planned
    /// range, or the end of what it holds) is done once this batch is handled.
    pub async fn next_batch<'c>(
        &mut self,
        consumer: &'c ToolStreamConsumer,
    ) -> Result<Vec<BorrowedMessage<'c>>, SbctlError> {
        let mut records: Vec<BorrowedMessage<'c>> = Vec::new();
        // Waits (up to the stall timeout in all) only until the first record
        // of the batch; after that, takes only what is already fetched. A
        // partition's end, or a record past the range, is no record.
        let stall = tokio::time::Instant::now() + STALL_TIMEOUT;
        while records.len() < self.batch_max {
            let wait = if records.is_empty() {
                stall.saturating_duration_since(tokio::time::Instant::now())
            } else {
                Duration::ZERO
            };
            let received = match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(received) => received,
                Err(_) if records.is_empty() => {
                    return Err(SbctlError::Refused(format!(
                        "no record arrived for {} s while partitions are unfinished; run the same command again \
                         to go on",
                        STALL_TIMEOUT.as_secs()
                    )));
                }
                Err(_) => break,
            };
            match received {
                Ok(record) => {
                    let Some(progress) = self.state.get_mut(&record.partition()) else { continue };
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
                    if let Some(progress) = self.state.get_mut(&partition) {
                        progress.finish();
                    }
                    if records.is_empty() && self.done() {
                        break;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(limiter) = &self.limiter
            && let Some(n) = NonZeroU32::new(records.len() as u32)
        {
            let _ = limiter.until_n_ready(n).await;
        }
        self.read += records.len() as u64;
        Ok(records)
    }

    /// Moves the bars past a handled batch: `last` is the last offset
    /// handled per partition. Returns, per partition, the next offset and
    /// whether its range is done.
    pub fn handled(&mut self, last: &BTreeMap<i32, i64>) -> Vec<(i32, i64, bool)> {
        let mut out = Vec::new();
        for (partition, offset) in last {
            if let Some(progress) = self.state.get_mut(partition) {
                progress.bar.set_position((offset + 1 - progress.part.from) as u64);
                if offset + 1 >= progress.part.to() {
                    progress.finish();
                }
                out.push((*partition, offset + 1, progress.done));
            }
        }
        if self.bars.is_hidden() && self.last_report.elapsed() > Duration::from_secs(5) {
            self.last_report = Instant::now();
            println!(
                "replayed {} of {} records ({:.0}/s)",
                self.read,
                self.total,
                self.read as f64 / self.started.elapsed().as_secs_f64()
            );
        }
        out
    }
}

/// The last offset per partition of a batch.
pub fn last_offsets(records: &[BorrowedMessage<'_>]) -> BTreeMap<i32, i64> {
    records.iter().map(|r| (r.partition(), r.offset())).collect()
}
