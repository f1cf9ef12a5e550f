//! `router`: copies `sb.events` / `sb.ephemeral` to the delivery topics of nodes with members.

use switchboard_core::config::parse_or_exit;
use switchboard_workers::cli::RouterCli;
use switchboard_workers::router::Router;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: RouterCli = parse_or_exit();
    switchboard_core::telemetry::init();
    let topics = cli.kafka.topics();
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    Router::new(&cli.kafka.config(), topics, cli.router)?.run(shutdown).await?;
    Ok(())
}
