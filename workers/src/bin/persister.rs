//! `persister`: consumes `sb.inbound`, stores messages in SQL, publishes `sb.events`.

use switchboard_core::config::parse_or_exit;
use switchboard_core::metrics::Metrics;
use switchboard_core::ops;
use switchboard_core::store::Store;
use switchboard_workers::cli::PersisterCli;
use switchboard_workers::persister::Persister;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: PersisterCli = parse_or_exit();
    let _traces = switchboard_core::telemetry::init("switchboard-persister");
    let ops_listener = tokio::net::TcpListener::bind(cli.ops_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--ops-listen {}: {e}", cli.ops_listen))?;
    let topics = cli.kafka.topics();
    let store = Store::connect(cli.database.url.expose(), cli.database.max_connections).await?;
    if cli.migrate {
        store.migrate().await?;
    }
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    let metrics = Metrics::default();
    let persister = Persister::new(&cli.kafka.config(), topics, store, cli.persister, &metrics)?;
    let ops = tokio::spawn(ops::serve(ops_listener, metrics, persister.readiness(), shutdown.clone()));
    persister.run(shutdown.clone()).await?;
    shutdown.cancel();
    let _ = ops.await;
    Ok(())
}
