//! Client protocol v1: JSON text frames between clients and an edge.
//!
//! Every frame has a `type`. Every client frame carries a request `ref` that
//! the server echoes in its reply (`joined`, `left`, `ack`, `pong`, `error`).
//! See `schemas/PROTOCOL.md` for the prose version.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest request `ref` accepted.
pub const MAX_REF_LEN: usize = 64;
/// Longest `client_id` accepted.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Most messages one `history` page holds (a larger `limit` is capped to it).
pub const MAX_HISTORY_LIMIT: u32 = 100;

/// `history`'s `limit` when none is given.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// A `history` page stops early once its messages, encoded, add up to this
/// many bytes (`has_more` says there is more), so a page of large messages
/// stays small.
pub const MAX_HISTORY_BYTES: usize = 512 * 1024;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Subscribe this connection to a room. With `since`, the server first
    /// replays the messages after that seq (bounded).
    Join {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
        /// Last seq the client has seen in this room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// Room epoch the client saw with `since`; a different current epoch
        /// means the history was reset and nothing is spliced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
        /// Ask for who is in the room: `joined` then carries `present`, and
        /// `presence` frames follow with every change. Off by default: in a
        /// big room that list and those frames are many bytes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        presence: bool,
    },
    /// Unsubscribe this connection from a room.
    Leave {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
    },
    /// Post a message. `client_id` is the client's idempotency key: resending
    /// the same one yields the same message and seq.
    Send {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
        client_id: String,
        body: String,
        /// The client's own W3C trace context
        /// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase):
        /// the message's trace continues the client's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// Tell the room this user is typing (ephemeral, never stored).
    Typing {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
    },
    /// Application-level ping; answered with `pong`.
    Ping {
        #[serde(rename = "ref")]
        reference: String,
    },
    /// The user has read the room up to `seq`: their read position moves
    /// forward (never back), their other connections and the room's members
    /// see `read {room, user, seq}`. Only in a joined room; no reply.
    Read {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
        seq: u64,
    },
    /// A page of a room's stored messages, newest first: the ones before
    /// `before_seq` (the newest ones without it), at most `limit` (default
    /// 50, capped at 100). The connection need not have joined the room, only
    /// be allowed to read it.
    History {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
}

/// The `type` values a client may send.
pub const CLIENT_FRAME_TYPES: [&str; 7] = ["join", "leave", "send", "typing", "ping", "history", "read"];

/// Limits the server enforces, announced in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Largest text frame in bytes; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Largest message body in bytes; larger ones get `body_too_large`.
    pub max_body_bytes: usize,
    /// Sustained frames per second per connection.
    pub rate_per_second: u32,
    /// Burst of frames allowed above the sustained rate.
    pub rate_burst: u32,
    /// Most messages replayed on `join` with `since`.
    pub max_replay: u32,
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerFrame {
    /// First frame on every connection.
    Welcome {
        node: String,
        user: String,
        protocol: u32,
        limits: Limits,
    },
    /// The join succeeded. Missed messages (if `since` was given) follow
    /// immediately, then live messages.
    Joined {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
        epoch: u64,
        last_seq: u64,
        /// True when every message after `since` was replayed.
        recovered: bool,
        /// The user's read position in the room (0: nothing read).
        read_seq: u64,
        /// Messages after the read position: `last_seq - read_seq`.
        unread: u64,
        /// Users in the room now, the joining user among them, sorted; only
        /// when the join asked with `presence: true`. `presence` frames
        /// then bring the changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        present: Option<Vec<String>>,
    },
    Left {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
    },
    Message(MessageFrame),
    /// The send was durably accepted by Kafka. `id` is the final message id.
    Ack {
        #[serde(rename = "ref")]
        reference: String,
        status: AckStatus,
        id: String,
    },
    Typing {
        room: String,
        user: String,
    },
    Error {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        code: ErrorCode,
        message: String,
    },
    Pong {
        #[serde(rename = "ref")]
        reference: String,
    },
    /// The user was removed from this private room: the connection is no
    /// longer in it and gets none of its events; joining again is refused.
    Removed {
        room: String,
    },
    /// The room's history was reset. Drop what you hold of it: the room is
    /// now at `epoch`, and its next message is seq 1.
    Reset {
        room: String,
        epoch: u64,
    },
    /// A member's read position moved forward (the user's own too, so their
    /// other connections can clear a badge). At most about one a second per
    /// connection and room: a client's quick successive reads are merged.
    Read {
        room: String,
        user: String,
        seq: u64,
    },
    /// Users came into the room or went from it: a user is in a room while
    /// at least one of their connections, on any edge, has joined it. Sent
    /// to the connections that joined with `presence: true`, at most once
    /// per presence interval (about
    /// half a second) with every change of that interval; `joined` and
    /// `left` are sorted and never share a user. Applied to `joined`'s
    /// `present` list as set changes, they keep it current.
    Presence {
        room: String,
        joined: Vec<String>,
        left: Vec<String>,
    },
    /// The answer to `history`: messages newest first (seqs descending).
    /// `has_more`: older messages exist; ask again with `before_seq` set to
    /// the last (oldest) seq of this page.
    History {
        #[serde(rename = "ref")]
        reference: String,
        room: String,
        /// The room's epoch the page belongs to.
        epoch: u64,
        messages: Vec<MessageFrame>,
        has_more: bool,
    },
}

/// A stored chat message as pushed to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessageFrame {
    pub room: String,
    /// Gapless per-room sequence number, starting at 1.
    pub seq: u64,
    pub id: String,
    pub client_id: String,
    pub sender: String,
    pub sender_name: String,
    pub body: String,
    /// When the edge took the `send`, in milliseconds since the Unix epoch (by
    /// that edge's clock): the same every time the message is read or replayed.
    pub sent_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Accepted,
}

/// Typed error codes. Whose fault each is: `bad_json` .. `not_joined`,
/// `forbidden` and `rate_limited` are the client's; `unavailable` and
/// `internal` are the server's and may be retried with the same `client_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON (or not a JSON object).
    BadJson,
    /// Binary frames are not part of protocol v1.
    BinaryFrame,
    /// `type` is missing or not one of the client frame types.
    UnknownType,
    /// A field is missing, has the wrong type, or is not allowed.
    InvalidFrame,
    /// The room id is not valid.
    InvalidRoom,
    /// The message body is empty or larger than `max_body_bytes`.
    BodyTooLarge,
    /// More frames than the connection's rate limit allows; the frame was dropped.
    RateLimited,
    /// The connection has not joined the room it sends to.
    NotJoined,
    /// The connection is already in the room it asked to join; it stays in.
    AlreadyJoined,
    /// The connection is in as many rooms as it may be; leave one first.
    TooManyRooms,
    /// The user may not read or write this room.
    Forbidden,
    /// Kafka or the database could not take the request; retry with the same `client_id`.
    Unavailable,
    /// An unexpected server fault.
    Internal,
}

/// WebSocket close codes the server uses.
pub mod close {
    /// The client broke the WebSocket protocol (RFC 6455 "protocol error"),
    /// e.g. an unmasked frame or reserved bits set.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8 (RFC 6455 "invalid frame payload data").
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame exceeded `max_frame_bytes` (RFC 6455 "message too big").
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The node is draining; reconnect (to another node) after a short jittered delay.
    pub const SERVICE_RESTART: u16 = 1012;
    /// No frame (not even a pong) arrived within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4001;
    /// The client read too slowly and its send queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// Why a text frame could not be turned into a [`ClientFrame`]. Carries the
/// request `ref` when it could be read, so the error reply can echo it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct FrameError {
    pub reference: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

impl ClientFrame {
    /// Parses one text frame, classifying failures as `bad_json`,
    /// `unknown_type` or `invalid_frame`.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FrameError {
            reference: None,
            code: ErrorCode::BadJson,
            message: format!("frame is not valid JSON: {e}"),
        })?;
        let Some(object) = value.as_object() else {
            return Err(FrameError {
                reference: None,
                code: ErrorCode::BadJson,
                message: "frame must be a JSON object".into(),
            });
        };
        let reference =
            object.get("ref").and_then(|r| r.as_str()).filter(|r| r.len() <= MAX_REF_LEN).map(str::to_owned);
        let fail = |code, message: String| FrameError { reference: reference.clone(), code, message };
        match object.get("type").and_then(|t| t.as_str()) {
            Some(t) if CLIENT_FRAME_TYPES.contains(&t) => {}
            Some(t) => {
                return Err(fail(ErrorCode::UnknownType, format!("unknown frame type {t:?}")));
            }
            None => return Err(fail(ErrorCode::UnknownType, "frame has no string `type`".into())),
        }
        let frame: ClientFrame =
            serde_json::from_value(value).map_err(|e| fail(ErrorCode::InvalidFrame, e.to_string()))?;
        if frame.reference().len() > MAX_REF_LEN {
            return Err(fail(ErrorCode::InvalidFrame, format!("`ref` is longer than {MAX_REF_LEN} bytes")));
        }
        if let ClientFrame::Send { client_id, .. } = &frame
            && (client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN)
        {
            return Err(fail(ErrorCode::InvalidFrame, format!("`client_id` must be 1..={MAX_CLIENT_ID_LEN} bytes")));
        }
        if let ClientFrame::Send { traceparent: Some(traceparent), .. } = &frame
            && crate::headers::TraceParent::parse(traceparent).is_err()
        {
            return Err(fail(ErrorCode::InvalidFrame, "`traceparent` is not a W3C traceparent (version 00)".into()));
        }
        Ok(frame)
    }

    /// The frame's `type`, as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::History { .. } => "history",
            ClientFrame::Read { .. } => "read",
        }
    }

    /// The request `ref` to echo in the reply.
    pub fn reference(&self) -> &str {
        match self {
            ClientFrame::Join { reference, .. }
            | ClientFrame::Leave { reference, .. }
            | ClientFrame::Send { reference, .. }
            | ClientFrame::Typing { reference, .. }
            | ClientFrame::History { reference, .. }
            | ClientFrame::Read { reference, .. }
            | ClientFrame::Ping { reference } => reference,
        }
    }
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ServerFrame {
    pub fn error(reference: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error { reference, code, message: message.into() }
    }

    /// Encodes the frame as JSON text. Serializing these plain structs cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_client_frame() {
        let join = ClientFrame::parse(r#"{"type":"join","ref":"1","room":"lobby","since":4}"#).unwrap();
        assert_eq!(
            join,
            ClientFrame::Join {
                reference: "1".into(),
                room: "lobby".into(),
                since: Some(4),
                epoch: None,
                presence: false
            }
        );
        let send = ClientFrame::parse(r#"{"type":"send","ref":"2","room":"r","client_id":"c","body":"hi"}"#).unwrap();
        assert!(matches!(send, ClientFrame::Send { ref body, .. } if body == "hi"));
        assert!(matches!(ClientFrame::parse(r#"{"type":"ping","ref":"3"}"#), Ok(ClientFrame::Ping { .. })));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"leave","ref":"4","room":"r"}"#),
            Ok(ClientFrame::Leave { .. })
        ));
    }

    #[test]
    fn classifies_bad_frames() {
        let err = ClientFrame::parse("{nope").unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
        assert_eq!(err.reference, None);

        let err = ClientFrame::parse("[1,2]").unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);

        let err = ClientFrame::parse(r#"{"type":"dance","ref":"9"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.reference.as_deref(), Some("9"));

        let err = ClientFrame::parse(r#"{"ref":"9"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);

        let err = ClientFrame::parse(r#"{"type":"join","ref":"7"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
        assert_eq!(err.reference.as_deref(), Some("7"));
        assert!(err.message.contains("room"), "{}", err.message);

        let err = ClientFrame::parse(r#"{"type":"ping","ref":"1","extra":true}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);

        let err = ClientFrame::parse(r#"{"type":"send","ref":"1","room":"r","client_id":"","body":"x"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);

        let traced = r#"{"type":"send","ref":"1","room":"r","client_id":"c","body":"x","traceparent":"#;
        let ok = format!(r#"{traced}"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}"#);
        assert!(matches!(ClientFrame::parse(&ok), Ok(ClientFrame::Send { traceparent: Some(_), .. })));
        let err =
            ClientFrame::parse(&format!(r#"{traced}"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"}}"#))
                .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
        assert!(err.message.contains("traceparent"), "{}", err.message);

        let long_ref = "r".repeat(MAX_REF_LEN + 1);
        let err = ClientFrame::parse(&format!(r#"{{"type":"ping","ref":"{long_ref}"}}"#)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
        assert_eq!(err.reference, None);
    }

    #[test]
    fn each_error_code_names_itself_as_on_the_wire() {
        let schema = serde_json::to_value(schemars::schema_for!(ErrorCode)).unwrap();
        let names: Vec<String> = serde_json::from_value(schema["enum"].clone())
            .or_else(|_| {
                // One variant per `oneOf` entry when the enum has docs.
                schema["oneOf"].as_array().unwrap().iter().map(|v| serde_json::from_value(v["const"].clone())).collect()
            })
            .unwrap();
        assert!(names.len() >= 13, "{names:?}");
        for name in names {
            let code: ErrorCode = serde_json::from_value(serde_json::Value::String(name.clone())).unwrap();
            assert_eq!(code.as_str(), name);
        }
    }

    #[test]
    fn client_frames_name_their_type_as_on_the_wire() {
        for text in [
            r#"{"type":"join","ref":"1","room":"r"}"#,
            r#"{"type":"leave","ref":"1","room":"r"}"#,
            r#"{"type":"send","ref":"1","room":"r","client_id":"c","body":"b"}"#,
            r#"{"type":"typing","ref":"1","room":"r"}"#,
            r#"{"type":"ping","ref":"1"}"#,
        ] {
            let frame = ClientFrame::parse(text).unwrap();
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(frame.kind(), value["type"]);
        }
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = [
            ServerFrame::Ack { reference: "1".into(), status: AckStatus::Accepted, id: "x".into() },
            ServerFrame::error(Some("2".into()), ErrorCode::RateLimited, "slow down"),
            ServerFrame::error(None, ErrorCode::BadJson, "bad"),
            ServerFrame::Message(MessageFrame {
                room: "r".into(),
                seq: 3,
                id: "i".into(),
                client_id: "c".into(),
                sender: "u".into(),
                sender_name: "U".into(),
                body: "b".into(),
                sent_at: 5,
            }),
            ServerFrame::Joined {
                reference: "j".into(),
                room: "r".into(),
                epoch: 1,
                last_seq: 9,
                recovered: true,
                read_seq: 4,
                unread: 5,
                present: Some(vec!["u".into()]),
            },
            ServerFrame::Presence { room: "r".into(), joined: vec!["a".into()], left: vec!["b".into()] },
            ServerFrame::Read { room: "r".into(), user: "u".into(), seq: 4 },
            ServerFrame::Removed { room: "r".into() },
            ServerFrame::Reset { room: "r".into(), epoch: 2 },
        ];
        for frame in frames {
            let text = frame.to_json();
            let back: ServerFrame = serde_json::from_str(&text).unwrap();
            assert_eq!(back, frame, "{text}");
        }
        let text = ServerFrame::error(None, ErrorCode::NotJoined, "m").to_json();
        assert_eq!(text, r#"{"type":"error","code":"not_joined","message":"m"}"#);
    }
}
