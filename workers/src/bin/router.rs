//! `router`: copies `sb.events` / `sb.ephemeral` to the delivery topics of nodes with members.

use clap::Parser;
use switchboard_core::config::{KafkaArgs, parse_or_exit};
use switchboard_workers::router::{Router, RouterConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "Switchboard router: sb.events -> sb.deliver.<node>")]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    router: RouterConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    switchboard_core::telemetry::init();
    let topics = cli.kafka.topics();
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    Router::new(&cli.kafka.config(), topics, cli.router)?.run(shutdown).await?;
    Ok(())
}
