//! Errors that stop a worker. Per-record problems never do: they are
//! dead-lettered or retried.

use rdkafka::error::KafkaError;
use switchboard_core::store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WorkerError {
    /// Kafka refused a client setting or a subscription: configuration.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The cluster does not know a topic the worker reads by assignment.
    #[error("topics {topics:?} unavailable: {source}")]
    TopicsUnavailable { topics: Vec<String>, source: KafkaError },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A setting clap cannot check; the message names the flag.
    #[error("{0}")]
    Config(String),
}
