//! A consumer-group member that can join again.
//!
//! librdkafka can declare a group consumer fatally failed: a static member
//! (`group.instance.id`) that lost its session, for example while the
//! broker was down, comes back "fenced" by its own earlier membership and
//! never consumes again. The worker then drops that consumer and joins with
//! a fresh one; records not yet committed are replayed, which every worker
//! handles idempotently.

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use switchboard_core::kafka::{GroupConsumer, KafkaConfig, StatsHandler};

pub struct GroupMember {
    kafka: KafkaConfig,
    group: String,
    instance: Option<String>,
    topics: Vec<String>,
    on_stats: StatsHandler,
    consumer: GroupConsumer,
}

impl GroupMember {
    /// Joins `group`, subscribed to `topics`; the consumer's statistics go
    /// to `on_stats`.
    pub fn join(
        kafka: &KafkaConfig,
        group: String,
        instance: Option<String>,
        topics: Vec<String>,
        on_stats: StatsHandler,
    ) -> Result<Self, KafkaError> {
        let consumer = subscribe(kafka, &group, instance.as_deref(), &topics, &on_stats)?;
        Ok(Self { kafka: kafka.clone(), group, instance, topics, on_stats, consumer })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn consumer(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// Replaces the consumer if librdkafka failed it for good; call before
    /// each batch.
    pub fn rejoin_if_failed(&mut self) -> Result<(), KafkaError> {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            tracing::error!(group = %self.group, ?code, %reason, "group consumer failed for good; joining again");
            let fresh = subscribe(&self.kafka, &self.group, self.instance.as_deref(), &self.topics, &self.on_stats)?;
            retire(std::mem::replace(&mut self.consumer, fresh), &self.group);
        }
        Ok(())
    }

    /// Reads each partition again from the given offset (records that
    /// could not be handled yet); the next batch starts there.
    pub fn rewind<'t>(&self, offsets: impl IntoIterator<Item = ((&'t str, i32), i64)>) {
        for ((topic, partition), offset) in offsets {
            let at = rdkafka::Offset::Offset(offset);
            if let Err(e) = self.consumer.seek(topic, partition, at, std::time::Duration::from_secs(10)) {
                // A partition revoked meanwhile: its new owner reads it from the committed offset.
                tracing::warn!(topic, partition, offset, error = %e, "could not rewind; the next owner reads it again");
            }
        }
    }

    /// Stores each partition's offset for the next commit. A partition
    /// revoked meanwhile is skipped: its new owner replays those records.
    pub fn store_offsets<'t>(&self, offsets: impl IntoIterator<Item = ((&'t str, i32), i64)>) {
        for ((topic, partition), offset) in offsets {
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                tracing::debug!(%topic, partition, error = %e, "could not store offset");
            }
        }
    }
}

/// Drops a failed consumer on a thread of its own. Destroying a group
/// consumer after a broker outage can block in librdkafka (issue #4674);
/// on a runtime thread that would stall the worker's loop, here it can only
/// hold this thread.
fn retire(consumer: GroupConsumer, group: &str) {
    let group = group.to_owned();
    let spawned = std::thread::Builder::new().name("sb-retire-consumer".into()).spawn(move || {
        drop(consumer);
        tracing::info!(%group, "failed group consumer destroyed");
    });
    if let Err(e) = spawned {
        // The consumer was dropped with the closure, on this thread.
        tracing::error!(error = %e, "could not start a thread to destroy the failed consumer");
    }
}

fn subscribe(
    kafka: &KafkaConfig,
    group: &str,
    instance: Option<&str>,
    topics: &[String],
    on_stats: &StatsHandler,
) -> Result<GroupConsumer, KafkaError> {
    let consumer = kafka.group_consumer(group, instance, on_stats.clone())?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
