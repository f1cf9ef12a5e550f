//! `router`: copies `sb.events` / `sb.ephemeral` to the delivery topics of nodes with members.

use switchboard_core::config::parse_or_exit;
use switchboard_core::metrics::Metrics;
use switchboard_core::ops;
use switchboard_workers::cli::RouterCli;
use switchboard_workers::router::Router;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: RouterCli = parse_or_exit();
    let _traces = switchboard_core::telemetry::init("switchboard-router");
    let ops_listener = tokio::net::TcpListener::bind(cli.ops_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--ops-listen {}: {e}", cli.ops_listen))?;
    let topics = cli.kafka.topics();
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    let metrics = Metrics::default();
    let router = Router::new(&cli.kafka.config(), topics, cli.router, &metrics)?;
    let ops = tokio::spawn(ops::serve(ops_listener, metrics, router.readiness(), shutdown.clone()));
    router.run(shutdown.clone()).await?;
    shutdown.cancel();
    let _ = ops.await;
    Ok(())
}
