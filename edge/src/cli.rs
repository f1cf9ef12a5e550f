//! The `edge` binary's command line. Every flag is also an `SB_*`
//! environment variable (the Helm chart and compose.yaml set those).

use clap::Parser;
use switchboard_core::config::{DatabaseArgs, KafkaArgs};

use crate::config::EdgeConfig;

#[derive(Debug, Parser)]
#[command(name = "edge", version, about = "Switchboard edge: WebSocket clients <-> Kafka")]
pub struct Cli {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub edge: EdgeConfig,
}
