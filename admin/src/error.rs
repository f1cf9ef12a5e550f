//! How an `sbctl` command fails. Every refusal changes nothing and exits
//! non-zero; the message says what to do instead.

use rdkafka::error::KafkaError;
use switchboard_core::config::EXIT_CONFIG;
use switchboard_core::store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SbctlError {
    /// The command will not act as asked; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The arguments name something that cannot be (a time in the future,
    /// an unknown group or topic).
    #[error("{0}")]
    Usage(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

impl SbctlError {
    /// The process's exit status: 64 (EX_USAGE) for bad arguments, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SbctlError::Usage(_) => EXIT_CONFIG,
            _ => 1,
        }
    }
}
