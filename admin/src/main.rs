//! `sbctl`: operator commands. `topics` creates or checks the shared topics
//! (a no-op when they match; differences are reported and exit 1, never
//! changed behind the operator's back); `migrate` applies SQL migrations.

use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_core::config::{DatabaseArgs, KafkaArgs, parse_duration, parse_or_exit};
use switchboard_core::provision::{Retention, TopicStatus, provision, shared_specs};
use switchboard_core::store::Store;

#[derive(Debug, Parser)]
#[command(version, about = "Switchboard operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Command::Topics { kafka, partitions, replication, log_retention, ephemeral_retention } => {
            let specs = shared_specs(
                &kafka.topics(),
                partitions,
                Retention { log: log_retention, ephemeral: ephemeral_retention },
            );
            let mut differ = false;
            for (topic, status) in provision(&kafka.config(), &specs, replication).await? {
                match status {
                    TopicStatus::Created => println!("{topic}: created"),
                    TopicStatus::Matches => println!("{topic}: exists, matches"),
                    TopicStatus::Differs(diffs) => {
                        differ = true;
                        println!("{topic}: EXISTS BUT DIFFERS: {}", diffs.join("; "));
                    }
                }
            }
            if differ {
                eprintln!("some topics differ from the spec; change them by hand or adjust the flags");
                std::process::exit(1);
            }
        }
        Command::Migrate { database } => {
            let store = Store::connect(database.url.expose(), 1).await?;
            store.migrate().await?;
            println!("migrations applied");
        }
    }
    Ok(())
}
