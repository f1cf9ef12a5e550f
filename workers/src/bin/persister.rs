//! `persister`: consumes `sb.inbound`, stores messages in SQL, publishes `sb.events`.

use clap::Parser;
use switchboard_core::config::{DatabaseArgs, KafkaArgs, parse_or_exit};
use switchboard_core::store::Store;
use switchboard_workers::persister::{Persister, PersisterConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "Switchboard persister: sb.inbound -> SQL -> sb.events")]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    persister: PersisterConfig,
    /// Apply database migrations before starting.
    #[arg(long, env = "SB_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    migrate: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
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
