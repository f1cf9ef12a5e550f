//! `persister`: consumes `sb.inbound`, stores messages in SQL, publishes `sb.events`.

use switchboard_core::config::parse_or_exit;
use switchboard_core::store::Store;
use switchboard_workers::cli::PersisterCli;
use switchboard_workers::persister::Persister;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: PersisterCli = parse_or_exit();
    switchboard_core::telemetry::init();
    let topics = cli.kafka.topics();
    let store = Store::connect(cli.database.url.expose(), cli.database.max_connections).await?;
    if cli.migrate {
        store.migrate().await?;
    }
    let shutdown = CancellationToken::new();
    switchboard_core::shutdown::cancel_on_signal(shutdown.clone());
    Persister::new(&cli.kafka.config(), topics, store, cli.persister)?.run(shutdown).await?;
    Ok(())
}
