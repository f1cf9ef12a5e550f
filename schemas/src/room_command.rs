//! Room administration as commands on `sb.inbound`: create a room, add or
//! remove a member, reset a room's history. The admin API and `sbctl rooms`
//! publish them keyed by room, so the persister applies them in order with
//! the room's messages, and a database rebuilt from the topic has the same
//! rooms and members.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{IdError, validate_id};

/// `sb-schema` value of room commands in `sb.inbound`.
pub const ROOM_COMMAND_V1: &str = "room-command.v1";

/// Most members one `create` may list (larger rooms: add members one by one).
pub const MAX_MEMBERS_PER_CREATE: usize = 1_000;

/// One room administration command (key: the room id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomCommand {
    /// Unique id of this command, returned to whoever issued it.
    pub id: String,
    pub room: String,
    /// Who issued it: the admin token's subject, or `sbctl:<user>`.
    pub issued_by: String,
    /// When the edge or `sbctl` took the command, milliseconds since the
    /// Unix epoch: the time stored for anything it creates, so a replay of
    /// the topic writes the same rows.
    pub issued_at: i64,
    #[serde(flatten)]
    pub action: RoomAction,
}

/// What a command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RoomAction {
    /// Creates the room, or sets an existing room's kind; adds `members`.
    Create {
        kind: RoomKind,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        members: Vec<String>,
    },
    /// Adds a member; a room that does not exist yet is created private.
    AddMember { user: String },
    /// Removes a member. In a private room the user's live connections
    /// leave the room at once (`removed`); a missing room is left alone.
    RemoveMember { user: String },
    /// Deletes the room's messages and starts a new epoch at seq 0.
    ResetHistory,
}

/// Who may read and write a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Anyone may join; created on first use.
    Public,
    /// Members only.
    Private,
}

impl RoomKind {
    /// As stored in `rooms.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Private => "private",
        }
    }
}

/// Why a command was refused before it reached Kafka.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("room: {0}")]
    Room(IdError),
    #[error("user {user:?}: {error}")]
    User { user: String, error: IdError },
    #[error("at most {MAX_MEMBERS_PER_CREATE} members per create; add the others one by one")]
    TooManyMembers,
}

impl RoomCommand {
    /// Checks every id the command names.
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_id(&self.room).map_err(CommandError::Room)?;
        let users: &[String] = match &self.action {
            RoomAction::Create { members, .. } => {
                if members.len() > MAX_MEMBERS_PER_CREATE {
                    return Err(CommandError::TooManyMembers);
                }
                members
            }
            RoomAction::AddMember { user } | RoomAction::RemoveMember { user } => std::slice::from_ref(user),
            RoomAction::ResetHistory => &[],
        };
        for user in users {
            validate_id(user).map_err(|error| CommandError::User { user: user.clone(), error })?;
        }
        Ok(())
    }

    /// The action's name, as on the wire (`create`, `add_member`, ...).
    pub fn action_name(&self) -> &'static str {
        match self.action {
            RoomAction::Create { .. } => "create",
            RoomAction::AddMember { .. } => "add_member",
            RoomAction::RemoveMember { .. } => "remove_member",
            RoomAction::ResetHistory => "reset_history",
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("room commands always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(action: RoomAction) -> RoomCommand {
        RoomCommand {
            id: "c-1".into(),
            room: "staff".into(),
            issued_by: "ops".into(),
            issued_at: 1_700_000_000_000,
            action,
        }
    }

    #[test]
    fn commands_round_trip_with_the_action_beside_the_fields() {
        let create = command(RoomAction::Create { kind: RoomKind::Private, members: vec!["alice".into()] });
        let json: serde_json::Value = serde_json::from_slice(&create.to_json()).unwrap();
        assert_eq!(json["action"], "create");
        assert_eq!(json["kind"], "private");
        for c in [
            create,
            command(RoomAction::AddMember { user: "bob".into() }),
            command(RoomAction::RemoveMember { user: "bob".into() }),
            command(RoomAction::ResetHistory),
        ] {
            let back: RoomCommand = serde_json::from_slice(&c.to_json()).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn every_id_is_checked() {
        assert!(command(RoomAction::ResetHistory).validate().is_ok());
        let mut bad_room = command(RoomAction::ResetHistory);
        bad_room.room = "a/b".into();
        assert!(matches!(bad_room.validate(), Err(CommandError::Room(_))));
        let bad_user = command(RoomAction::AddMember { user: "café".into() });
        assert!(matches!(bad_user.validate(), Err(CommandError::User { .. })));
        let many = (0..=MAX_MEMBERS_PER_CREATE).map(|i| format!("u{i}")).collect();
        let too_many = command(RoomAction::Create { kind: RoomKind::Private, members: many });
        assert_eq!(too_many.validate(), Err(CommandError::TooManyMembers));
    }
}
