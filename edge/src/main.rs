//! `edge`: the WebSocket edge node of a production deployment.

use std::sync::Arc;
use switchboard_core::config::{exit_bad_config, parse_or_exit};

use switchboard_core::metrics::Metrics;
use switchboard_core::store::Store;
use switchboard_edge::cli::Cli;
use switchboard_edge::events::EdgeEvents;
use switchboard_edge::server::Edge;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    cli.edge.validate().unwrap_or_else(|e| exit_bad_config(e));
    let _traces = switchboard_core::telemetry::init("switchboard-edge");
    if cli.edge.allowed_origins.is_empty() {
        tracing::warn!("no --allowed-origins: browser clients will be refused");
    }
    let topics = cli.kafka.topics();
    let store = Store::connect(cli.database.url.expose(), cli.database.max_connections).await?;
    let listener = tokio::net::TcpListener::bind(cli.edge.listen).await?;
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    let events = Arc::new(EdgeEvents::new(&Metrics::default()));
    let edge = Edge::start(cli.edge, &cli.kafka.config(), topics, store, events).await?;
    edge.serve(listener, shutdown).await?;
    Ok(())
}
