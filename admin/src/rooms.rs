//! `sbctl rooms`: room administration from the command line, through the
//! same code as the edge's admin API (`switchboard_core::room_commands`):
//! the command goes to `sb.inbound` and the persister applies it.

use switchboard_core::config::KafkaArgs;
use switchboard_core::room_commands::{IssueError, issue};
use switchboard_schemas::room_command::{RoomAction, RoomKind};

use crate::error::SbctlError;

#[derive(Debug, Clone, clap::Args)]
pub struct RoomsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Create a room, or change an existing room's kind; add members.
    Create {
        room: String,
        #[arg(long, value_enum)]
        kind: Kind,
        /// Members to add (comma separated).
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add a member (a room that does not exist is created private).
    AddMember { room: String, user: String },
    /// Remove a member; in a private room their live connections leave it at once.
    RemoveMember { room: String, user: String },
    /// Delete the room's messages and start a new epoch.
    Reset { room: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Public,
    Private,
}

pub async fn run(args: RoomsArgs) -> Result<(), SbctlError> {
    let (room, action) = match args.action {
        Action::Create { room, kind, members } => {
            let kind = match kind {
                Kind::Public => RoomKind::Public,
                Kind::Private => RoomKind::Private,
            };
            (room, RoomAction::Create { kind, members })
        }
        Action::AddMember { room, user } => (room, RoomAction::AddMember { user }),
        Action::RemoveMember { room, user } => (room, RoomAction::RemoveMember { user }),
        Action::Reset { room } => (room, RoomAction::ResetHistory),
    };
    let producer = args.kafka.config().producer()?;
    let who = format!("sbctl:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let who: String =
        who.chars().map(|c| if c.is_ascii_alphanumeric() || ":-_.".contains(c) { c } else { '_' }).collect();
    let command = issue(&producer, &args.kafka.topics(), &room, &who, action).await.map_err(|e| match e {
        IssueError::Invalid(e) => SbctlError::Usage(e.to_string()),
        IssueError::Kafka(e) => SbctlError::Kafka(e),
    })?;
    println!("{}", serde_json::to_string(&command).expect("commands serialize"));
    Ok(())
}
