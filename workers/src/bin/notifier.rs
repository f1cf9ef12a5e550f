//! `notifier`: tells a push service's webhook about messages for members who are away.

use switchboard_core::config::{exit_bad_config, parse_or_exit};
use switchboard_core::metrics::Metrics;
use switchboard_core::ops;
use switchboard_core::store::Store;
use switchboard_workers::cli::NotifierCli;
use switchboard_workers::notifier::Notifier;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: NotifierCli = parse_or_exit();
    if let Err(e) = cli.notifier.validate() {
        exit_bad_config(e);
    }
    let _traces = switchboard_core::telemetry::init("switchboard-notifier");
    let ops_listener = tokio::net::TcpListener::bind(cli.ops_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--ops-listen {}: {e}", cli.ops_listen))?;
    let topics = cli.kafka.topics();
    let store = Store::connect(cli.database.url.expose(), cli.database.max_connections).await?;
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    let metrics = Metrics::default();
    let notifier = Notifier::new(&cli.kafka.config(), topics, store, cli.notifier, &metrics)?;
    let ops = tokio::spawn(ops::serve(ops_listener, metrics, notifier.readiness(), shutdown.clone()));
    notifier.run(shutdown.clone()).await?;
    shutdown.cancel();
    let _ = ops.await;
    Ok(())
}
