//! A consumer-group subscription that can be joined again.
//!
//! librdkafka can declare a group consumer fatally failed: a static member
//! (`group.instance.id`) that lost its session, for example while the
//! broker was down, comes back "fenced" by its own earlier membership and
//! never consumes again. A worker then drops that consumer and joins with a
//! fresh one; records not yet committed are replayed, which every worker
//! handles idempotently.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use switchboard_core::kafka::KafkaConfig;

pub struct GroupSubscription {
    kafka: KafkaConfig,
    group: String,
    instance: Option<String>,
    topics: Vec<String>,
}

impl GroupSubscription {
    pub fn new(kafka: &KafkaConfig, group: String, instance: Option<String>, topics: Vec<String>) -> Self {
        Self { kafka: kafka.clone(), group, instance, topics }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// A new consumer in the group, subscribed to the topics.
    pub fn join(&self) -> Result<StreamConsumer, KafkaError> {
        let consumer = self.kafka.group_consumer(&self.group, self.instance.as_deref())?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(consumer)
    }

    /// Replaces a consumer that failed fatally.
    pub fn rejoin(&self, failed: &KafkaError) -> Result<StreamConsumer, KafkaError> {
        tracing::error!(group = %self.group, error = %failed, "group consumer failed for good; joining again");
        self.join()
    }
}
