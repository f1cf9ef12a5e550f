//! `sbctl`: operator commands. `topics` creates or checks the shared topics
//! (a no-op when they match; differences are reported and exit 1, never
//! changed behind the operator's back); `migrate` applies SQL migrations.

use switchboard_admin::cli::{Cli, Command};
use switchboard_core::config::parse_or_exit;
use switchboard_core::provision::{Retention, TopicStatus, provision, shared_specs};
use switchboard_core::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Command::Topics { kafka, partitions, replication, log_retention, ephemeral_retention } => {
            let specs = shared_specs(
                &kafka.topics(),
                partitions,
                Retention { log: log_retention, ephemeral: ephemeral_retention },
            );
            let mut differ = false;
            for (topic, status) in provision(&kafka.config(), &specs, replication).await? {
                match status {
                    TopicStatus::Created => println!("{topic}: created"),
                    TopicStatus::Matches => println!("{topic}: exists, matches"),
                    TopicStatus::Differs(diffs) => {
                        differ = true;
                        println!("{topic}: EXISTS BUT DIFFERS: {}", diffs.join("; "));
                    }
                }
            }
            if differ {
                eprintln!("some topics differ from the spec; change them by hand or adjust the flags");
                std::process::exit(1);
            }
        }
        Command::Migrate { database } => {
            let store = Store::connect(database.url.expose(), 1).await?;
            store.migrate().await?;
            println!("migrations applied");
        }
    }
    Ok(())
}
