//! Kafka envelopes: what edges write to `sb.inbound` and `sb.ephemeral`, and
//! the events the persister writes to `sb.events` (and routers copy, byte for
//! byte, to `sb.deliver.<node>`).
//!
//! The `sb-schema` header names the envelope type and version, so a consumer
//! can refuse (dead-letter) a version it does not know instead of misreading it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::validate_id;
use crate::protocol::{ErrorCode, MessageFrame};
use crate::read_marker::{READ_MARKER_V1, ReadMarker};
use crate::room_command::{ROOM_COMMAND_V1, RoomCommand};

/// `sb-schema` value of records in `sb.inbound`.
pub const INBOUND_V1: &str = "inbound.v1";
/// `sb-schema` value of records in `sb.events`, `sb.ephemeral` and `sb.deliver.*`.
pub const EVENT_V1: &str = "event.v1";

/// Where a command came from, so a rejection finds its way back to the
/// sending connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Origin {
    /// Node id of the edge holding the connection.
    pub node: String,
    /// Connection id, unique within that node's epoch.
    pub conn: u64,
    /// The client's request `ref`.
    #[serde(rename = "ref")]
    pub reference: String,
}

/// A client's `send`, as the edge published it to `sb.inbound` (key: room id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InboundSend {
    pub room: String,
    /// Authenticated user id of the sender (from the token, never from the client).
    pub sender: String,
    /// Display name from the token, if it had one; the persister stores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    pub client_id: String,
    pub body: String,
    pub origin: Origin,
    /// When the edge took the send, milliseconds since the Unix epoch: the
    /// persister stores it as the message's `sent_at`.
    pub received_at: i64,
}

/// What `sb.inbound` carries (the `sb-schema` header says which): a
/// client's send, a room command or a read marker, all keyed by room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Send(InboundSend),
    Room(RoomCommand),
    Read(ReadMarker),
}

/// Largest body the persister stores; the edge enforces a (smaller) limit
/// first, this guards against other producers.
pub const MAX_STORED_BODY_BYTES: usize = 64 * 1024;

impl Inbound {
    pub fn room(&self) -> &str {
        match self {
            Inbound::Send(send) => &send.room,
            Inbound::Room(command) => &command.room,
            Inbound::Read(marker) => &marker.room,
        }
    }

    /// Decodes and checks the value of an `sb.inbound` record whose
    /// `sb-schema` header says `schema`: what the persister (and a replay)
    /// accepts. The error is why it is refused (the dead-letter reason).
    pub fn decode(schema: &str, payload: &[u8]) -> Result<Inbound, String> {
        match schema {
            INBOUND_V1 => {
                let send: InboundSend = serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
                validate_id(&send.room).map_err(|e| format!("room: {e}"))?;
                validate_id(&send.sender).map_err(|e| format!("sender: {e}"))?;
                if send.body.is_empty() || send.body.len() > MAX_STORED_BODY_BYTES || send.body.contains('\0') {
                    return Err("body empty, too large or containing NUL".into());
                }
                Ok(Inbound::Send(send))
            }
            ROOM_COMMAND_V1 => {
                let command: RoomCommand = serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
                command.validate().map_err(|e| e.to_string())?;
                Ok(Inbound::Room(command))
            }
            READ_MARKER_V1 => {
                let marker: ReadMarker = serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
                marker.validate()?;
                Ok(Inbound::Read(marker))
            }
            other => Err(format!("unknown schema {other:?}")),
        }
    }
}

/// A record of `sb.events` / `sb.ephemeral` / `sb.deliver.<node>` (key: room id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A stored message: the canonical record of `sb.events`.
    Message(StoredMessage),
    /// Someone is typing in a room (`sb.ephemeral`, never stored).
    Typing { room: String, user: String },
    /// The persister refused a send. Written straight to the origin node's
    /// delivery topic, since only that one connection needs it.
    Rejected { room: String, origin: Origin, code: ErrorCode, message: String },
    /// A member was removed from a room: edges take that user's connections
    /// out of it when the room is private (they may no longer read it).
    MemberRemoved { room: String, user: String },
    /// The room's history was reset: a new epoch, whose messages start at seq 1.
    HistoryReset { room: String, epoch: u64 },
    /// A user's read position in a room moved forward to `seq`.
    Read { room: String, user: String, seq: u64 },
    /// Who is in a room on one edge (`sb.ephemeral`, never stored).
    Presence(PresenceUpdate),
}

/// What one edge tells the others about a room's users: who is there
/// (newly, or again at the periodic refresh) and who left. Every edge keeps
/// the union; a user that no record has named as there for a while (the
/// edge died, records were lost) counts as gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceUpdate {
    pub room: String,
    /// The edge's node id.
    pub node: String,
    /// Users with a connection in the room on that edge: joined since its
    /// last record, or all of them at a refresh (in parts, for big rooms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub here: Vec<String>,
    /// Users whose last connection on that edge left the room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
    /// The edge has just got its first member of the room and knows nobody
    /// there yet: the others answer with everyone they have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
}

/// A message as stored in SQL, with the room epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredMessage {
    pub epoch: u64,
    #[serde(flatten)]
    pub message: MessageFrame,
}

impl Event {
    /// Room this event belongs to (also its Kafka key).
    pub fn room(&self) -> &str {
        match self {
            Event::Message(m) => &m.message.room,
            Event::Typing { room, .. }
            | Event::Rejected { room, .. }
            | Event::MemberRemoved { room, .. }
            | Event::HistoryReset { room, .. }
            | Event::Read { room, .. } => room,
            Event::Presence(update) => &update.room,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events always serialize")
    }
}

impl InboundSend {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("inbound commands always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { node: "edge-0".into(), conn: 7, reference: "r1".into() }
    }

    #[test]
    fn inbound_round_trips() {
        let send = InboundSend {
            room: "lobby".into(),
            sender: "alice".into(),
            sender_name: Some("Alice".into()),
            client_id: "c-1".into(),
            body: "hello".into(),
            origin: origin(),
            received_at: 1_700_000_000_000,
        };
        let back: InboundSend = serde_json::from_slice(&send.to_json()).unwrap();
        assert_eq!(back, send);
    }

    #[test]
    fn events_round_trip() {
        let events = [
            Event::Message(StoredMessage {
                epoch: 1,
                message: MessageFrame {
                    room: "lobby".into(),
                    seq: 1,
                    id: "id".into(),
                    client_id: "c".into(),
                    sender: "alice".into(),
                    sender_name: "Alice".into(),
                    body: "b".into(),
                    sent_at: 1,
                },
            }),
            Event::Typing { room: "lobby".into(), user: "bob".into() },
            Event::MemberRemoved { room: "staff".into(), user: "bob".into() },
            Event::HistoryReset { room: "staff".into(), epoch: 2 },
            Event::Read { room: "lobby".into(), user: "bob".into(), seq: 7 },
            Event::Presence(PresenceUpdate {
                room: "lobby".into(),
                node: "edge-1".into(),
                here: vec!["alice".into()],
                left: vec!["bob".into()],
                sync: true,
            }),
            Event::Rejected {
                room: "secret".into(),
                origin: origin(),
                code: ErrorCode::Forbidden,
                message: "no".into(),
            },
        ];
        for event in events {
            let back: Event = serde_json::from_slice(&event.to_json()).unwrap();
            assert_eq!(back.room(), event.room());
            assert_eq!(back, event);
        }
    }
}
