//! `sbctl`: operator commands (see `sbctl --help`). A refusal or a failure
//! prints why on stderr and exits non-zero (64 for bad arguments).

use switchboard_admin::cli::{Cli, Command, Groups, Replay};
use switchboard_admin::error::SbctlError;
use switchboard_admin::{groups, probe, replay, rooms, topics};
use switchboard_core::config::parse_or_exit;
use switchboard_core::store::Store;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit();
    switchboard_core::telemetry::init_cli();
    let result = match cli.command {
        Command::Topics(args) => topics::run(args).await,
        Command::DeleteTopics(args) => topics::delete(args).await,
        Command::Migrate { database } => migrate(database.url.expose()).await,
        Command::Rooms(args) => rooms::run(args).await,
        Command::Replay(Replay::Store(args)) => replay::store(args).await,
        Command::Replay(Replay::Deliver(args)) => replay::deliver(args).await,
        Command::Groups(Groups::List(args)) => groups::list(args),
        Command::Groups(Groups::Reset(args)) => groups::reset(args),
        Command::Probe(args) => probe::run(args).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

async fn migrate(url: &str) -> Result<(), SbctlError> {
    let store = Store::connect(url, 1).await?;
    store.migrate().await?;
    println!("migrations applied");
    Ok(())
}
