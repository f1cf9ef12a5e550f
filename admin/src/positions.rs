//! Where things are in a topic, for the commands that move through it
//! (`replay`) or move a group in it (`groups reset`): partitions, log start
//! and end, the offset of the first record at a time, a group's committed
//! offsets. All against a real broker: the embedded default's in-process
//! cluster has no admin API and answers "end" to every time lookup.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_core::clock::now_ms;
use switchboard_core::kafka::{KafkaConfig, METADATA_TIMEOUT, ToolConsumer};

use crate::error::SbctlError;

/// Timeout of metadata, offset and group queries.
pub const TIMEOUT: Duration = METADATA_TIMEOUT;

/// A partition's log: the first offset still held and the next one to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    pub start: i64,
    pub end: i64,
}

/// The partitions of `topic`, or a usage error naming it when the cluster does not know it.
pub fn topic_partitions(consumer: &ToolConsumer, topic: &str) -> Result<Vec<i32>, SbctlError> {
    let mut partitions = switchboard_core::kafka::partitions(consumer.client(), topic).map_err(|e| {
        SbctlError::Usage(format!("topic {topic} does not exist ({e}); check --topic-prefix and --kafka-brokers"))
    })?;
    partitions.sort_unstable();
    Ok(partitions)
}

/// Members of `group` now: `None` when the cluster does not know the group.
pub fn group_members(consumer: &ToolConsumer, group: &str) -> Result<Option<GroupState>, SbctlError> {
    let list = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    Ok(list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map(|g| GroupState { state: g.state().to_owned(), members: g.members().len() }))
}

/// What the broker says of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// `Stable`, `Empty`, `PreparingRebalance`, ...
    pub state: String,
    pub members: usize,
}

pub fn log(consumer: &ToolConsumer, topic: &str, partition: i32) -> Result<Log, SbctlError> {
    let (start, end) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
    Ok(Log { start, end })
}

/// Per partition, the offset of the first record at or after `at_ms`, or
/// `None` when the partition has no record that late (Kafka answers "end").
pub fn offsets_at(
    consumer: &ToolConsumer,
    topic: &str,
    parts: &[i32],
    at_ms: i64,
) -> Result<Vec<(i32, Option<i64>)>, SbctlError> {
    let mut list = TopicPartitionList::new();
    for p in parts {
        list.add_partition_offset(topic, *p, Offset::Offset(at_ms))?;
    }
    let found = consumer.offsets_for_times(list, METADATA_TIMEOUT)?;
    let mut out = Vec::new();
    for element in found.elements() {
        element.error()?;
        let offset = match element.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        out.push((element.partition(), offset));
    }
    out.sort_unstable();
    Ok(out)
}

/// A committed offset (the next record to read) and the metadata committed with it.
pub type Committed = (i64, String);

/// A group's committed offset per partition (`None`: nothing committed).
pub fn committed(
    consumer: &ToolConsumer,
    topic: &str,
    parts: &[i32],
) -> Result<Vec<(i32, Option<Committed>)>, SbctlError> {
    let mut list = TopicPartitionList::new();
    for p in parts {
        list.add_partition(topic, *p);
    }
    let found = consumer.committed_offsets(list, METADATA_TIMEOUT)?;
    let mut out = Vec::new();
    for element in found.elements() {
        let value = match element.offset() {
            Offset::Offset(o) => Some((o, element.metadata().to_owned())),
            _ => None,
        };
        out.push((element.partition(), value));
    }
    out.sort_unstable();
    Ok(out)
}

/// Commits offsets (next offset to read) with metadata for the consumer's group.
pub fn commit(consumer: &ToolConsumer, topic: &str, offsets: &[(i32, i64, String)]) -> Result<(), SbctlError> {
    let mut list = TopicPartitionList::new();
    for (p, offset, metadata) in offsets {
        list.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
        if let Some(mut element) = list.find_partition(topic, *p) {
            element.set_metadata(metadata);
        }
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}

/// The topic's `cleanup.policy`.
pub async fn cleanup_policy(kafka: &KafkaConfig, topic: &str) -> Result<String, SbctlError> {
    let admin = kafka.admin()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options).await.map_err(|e| {
        SbctlError::Usage(format!(
            "could not read the configs of {topic}: {e} (the embedded default's in-process cluster has no admin \
             API: replay and group commands need a real Kafka cluster)"
        ))
    })?;
    match described.into_iter().next() {
        Some(Ok(resource)) => Ok(resource.get("cleanup.policy").and_then(|e| e.value.clone()).unwrap_or_default()),
        Some(Err(code)) => Err(SbctlError::Usage(format!("could not read the configs of {topic}: {code}"))),
        None => Err(SbctlError::Usage(format!("could not read the configs of {topic}"))),
    }
}

/// Parses `--from-datetime` / `--to-datetime`: RFC 3339 (`2026-12-03T05:00:00Z`,
/// or without the zone, read as UTC). A time in the future is refused.
pub fn parse_time(text: &str) -> Result<i64, SbctlError> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        SbctlError::Usage(format!("{text:?} is not a date-time ({e}); write it as 2026-12-03T05:00:00Z"))
    })?;
    let ms = time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    if ms > now_ms() {
        return Err(SbctlError::Usage(format!("{text} is in the future; no record has that time yet")));
    }
    Ok(ms)
}

/// A time as RFC 3339 (UTC, milliseconds).
pub fn format_time(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}
