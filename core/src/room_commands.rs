//! Issuing room commands: the one path from the admin API and `sbctl rooms`
//! to `sb.inbound`. A command is checked, stamped (id, who, when) and
//! produced keyed by its room, so the persister applies it in order with the
//! room's messages; it is issued once Kafka has acknowledged it.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use switchboard_schemas::room_command::{CommandError, ROOM_COMMAND_V1, RoomAction, RoomCommand};
use thiserror::Error;

use crate::clock::now_ms;
use crate::kafka::record_headers;
use crate::producer::KafkaProducer;
use crate::topics::Topics;

/// How long issuing waits for Kafka's acknowledgement.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum IssueError {
    /// The command names an invalid room or user: the caller's fault.
    #[error("{0}")]
    Invalid(#[from] CommandError),
    /// Kafka did not take the command; issuing it again is safe (a new id,
    /// and every command is idempotent in effect).
    #[error("kafka did not take the command: {0}")]
    Kafka(#[from] KafkaError),
}

/// Checks, stamps and publishes a command; returns it (with its id) once
/// Kafka holds it.
pub async fn issue(
    producer: &KafkaProducer,
    topics: &Topics,
    room: &str,
    issued_by: &str,
    action: RoomAction,
) -> Result<RoomCommand, IssueError> {
    let command = RoomCommand {
        id: uuid::Uuid::new_v4().to_string(),
        room: room.to_owned(),
        issued_by: issued_by.to_owned(),
        issued_at: now_ms(),
        action,
    };
    command.validate()?;
    let payload = command.to_json();
    let topic = topics.inbound();
    let record = FutureRecord::to(&topic)
        .key(command.room.as_str())
        .payload(payload.as_slice())
        .headers(record_headers(ROOM_COMMAND_V1, None));
    producer.send(record, ISSUE_TIMEOUT).await?;
    Ok(command)
}
