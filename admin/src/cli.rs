//! The `sbctl` command line. Every flag is also an `SB_*` environment variable.

use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_core::config::{DatabaseArgs, KafkaArgs, parse_duration};

#[derive(Debug, Parser)]
#[command(name = "sbctl", version, about = "Switchboard operator commands")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the shared topics, or check existing ones against the spec.
    Topics {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Partitions of each shared topic (rooms spread over them).
        #[arg(long, env = "SB_TOPIC_PARTITIONS", default_value_t = 12)]
        partitions: i32,
        /// Replication factor of new topics (-1: the broker's default).
        #[arg(long, env = "SB_TOPIC_REPLICATION", default_value_t = -1)]
        replication: i32,
        /// Retention of sb.inbound, sb.events and sb.dead-letter.
        #[arg(long, env = "SB_LOG_RETENTION", default_value = "7days", value_parser = parse_duration)]
        log_retention: Duration,
        /// Retention of sb.ephemeral.
        #[arg(long, env = "SB_EPHEMERAL_RETENTION", default_value = "1h", value_parser = parse_duration)]
        ephemeral_retention: Duration,
    },
    /// Apply the SQL migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}
