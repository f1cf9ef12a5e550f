//! The `sbctl` command line. Every flag of the shared groups is also an
//! `SB_*` environment variable.

use clap::{Parser, Subcommand};
use switchboard_core::config::DatabaseArgs;

use crate::groups::{ListArgs, ResetArgs};
use crate::probe::ProbeArgs;
use crate::replay::deliver::DeliverArgs;
use crate::replay::store::StoreArgs;
use crate::rooms::RoomsArgs;
use crate::topics::{DeleteTopicsArgs, TopicsArgs};

#[derive(Debug, Parser)]
#[command(name = "sbctl", version, about = "Switchboard operator commands")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the shared topics, or check existing ones against the spec.
    Topics(TopicsArgs),
    /// Delete every topic of the deployment, with all it holds (plan only unless --execute).
    DeleteTopics(DeleteTopicsArgs),
    /// Apply the SQL migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Room administration: create, add-member, remove-member, reset.
    Rooms(RoomsArgs),
    /// Re-consume topics: rebuild the SQL store, or re-deliver events to the edges.
    #[command(subcommand)]
    Replay(Replay),
    /// The deployment's consumer groups: list them, move their offsets.
    #[command(subcommand)]
    Groups(Groups),
    /// A client's round trip through a running deployment: join, send, see it come back (`helm test`).
    Probe(ProbeArgs),
}

#[derive(Debug, Subcommand)]
pub enum Replay {
    /// Rebuild the SQL store from sb.inbound (plan only unless --execute).
    Store(StoreArgs),
    /// Re-route sb.events to the edges, e.g. after a delivery topic was lost (plan only unless --execute).
    Deliver(DeliverArgs),
}

#[derive(Debug, Subcommand)]
pub enum Groups {
    /// List the project's consumer groups with their lag per partition.
    List(ListArgs),
    /// Move a group's committed offsets (dry run unless --execute).
    Reset(ResetArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::topics::RetentionTime;

    #[test]
    fn the_command_line_is_consistent_and_parses() {
        Cli::command().debug_assert();
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("sbctl").chain(args.iter().copied()));
        let Command::Topics(topics) = parse(&["topics"]).unwrap().command else { panic!() };
        assert_eq!(topics.inbound_retention, RetentionTime(None), "sb.inbound is kept for ever by default");
        let Command::Topics(topics) = parse(&["topics", "--inbound-retention", "30days"]).unwrap().command else {
            panic!()
        };
        assert_eq!(topics.inbound_retention, RetentionTime(Some(std::time::Duration::from_secs(30 * 86_400))));
        assert!(parse(&["topics", "--inbound-retention", "soon"]).is_err());
        let db = ["--database-url", "sqlite://x"];
        assert!(parse(&["replay", "store", db[0], db[1]]).is_err(), "a start position is required");
        assert!(parse(&["replay", "store", db[0], db[1], "--from-beginning", "--by-duration", "1h"]).is_err());
        assert!(parse(&["replay", "store", db[0], db[1], "--by-duration", "1h", "--execute"]).is_ok());
        assert!(parse(&["replay", "deliver"]).is_err(), "a start position is required");
        assert!(parse(&["replay", "deliver", "--by-duration", "10m", "--nodes", "edge-1,edge-2", "--execute"]).is_ok());
        assert!(parse(&["groups", "reset", "g"]).is_err(), "a target is required");
        assert!(parse(&["groups", "reset", "g", "--shift-by", "-5", "--execute"]).is_ok());
        assert!(parse(&["groups", "reset", "g", "--to-latest", "--execute", "--dry-run"]).is_err());
        assert!(parse(&["rooms", "create", "r", "--kind", "private", "--members", "a,b"]).is_ok());
        assert!(parse(&["probe", "--url", "ws://edge/ws", "--jwt-secret", "k", "--timeout", "soon"]).is_err());
        assert!(parse(&["topics", "--allow-differences"]).is_ok());
        assert!(parse(&["delete-topics", "--execute", "--ignore-members"]).is_ok());
    }
}
