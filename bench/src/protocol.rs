//! The three wire protocols the driver speaks, reduced to what a chat
//! benchmark needs: connect, join a room, send with an acknowledgement, and
//! recognise deliveries.
//!
//! - Switchboard protocol v1 (`schemas/PROTOCOL.md`), with an HS256 token.
//! - Socket.IO 4 over a plain WebSocket (Engine.IO v4 framing): `0` open,
//!   `40` namespace connect, `2`/`3` ping/pong, `42[..]` events, `42<id>[..]`
//!   events that want an ack, `43<id>[..]` acks.
//! - The bare ceiling server's JSON (see `ceiling.rs`).

use serde::Deserialize;
use serde_json::json;
use switchboard_edge::auth::{Claims, issue_hs256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Switchboard,
    Socketio,
    Bare,
}

/// What an incoming text frame means to the driver.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A chat message; the body carries its intended send time.
    Message(String),
    /// A send was accepted.
    Ack,
    /// The join was accepted.
    Joined,
    /// Socket.IO: the namespace connect was accepted; only now may events follow.
    Connected,
    /// A refusal or error frame.
    Error(String),
    /// The protocol wants this frame sent back (Socket.IO's pong).
    Reply(&'static str),
    Other,
}

/// Ack id of the Socket.IO join; sends use ids from 1.
const JOIN_ACK: u64 = 0;

#[derive(Clone)]
pub struct Codec {
    pub protocol: Protocol,
    /// HS256 secret for Switchboard tokens.
    pub secret: String,
    /// Part of every Switchboard `client_id`, unique per run: a client_id
    /// seen before is (rightly) taken as a resend of the earlier message.
    pub run: String,
    /// Switchboard joins ask for presence (the list, then every change).
    pub presence: bool,
}

#[derive(Deserialize)]
struct JsonFrame {
    #[serde(rename = "type")]
    kind: String,
    body: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct SocketIoMessage {
    body: String,
}

impl Codec {
    pub fn url(&self, target: &str, user: &str) -> String {
        match self.protocol {
            Protocol::Switchboard => {
                let claims = Claims { sub: user.into(), name: None, exp: 4_000_000_000 };
                format!("ws://{target}/ws?token={}", issue_hs256(self.secret.as_bytes(), &claims))
            }
            Protocol::Socketio => format!("ws://{target}/socket.io/?EIO=4&transport=websocket"),
            Protocol::Bare => format!("ws://{target}/ws"),
        }
    }

    /// Frames to send right after the WebSocket opens.
    pub fn hello(&self) -> Option<&'static str> {
        (self.protocol == Protocol::Socketio).then_some("40")
    }

    pub fn join(&self, room: &str) -> String {
        match self.protocol {
            Protocol::Switchboard if self.presence => {
                json!({"type": "join", "ref": "j", "room": room, "presence": true}).to_string()
            }
            Protocol::Switchboard => json!({"type": "join", "ref": "j", "room": room}).to_string(),
            Protocol::Socketio => format!("42{JOIN_ACK}{}", json!(["join", room])),
            Protocol::Bare => json!({"type": "join", "room": room}).to_string(),
        }
    }

    /// The `n`th send of a connection (n ≥ 1).
    pub fn send(&self, room: &str, body: &str, n: u64) -> String {
        match self.protocol {
            Protocol::Switchboard => json!({"type": "send", "ref": n.to_string(), "room": room,
                                            "client_id": format!("{}-{n}", self.run), "body": body})
            .to_string(),
            Protocol::Socketio => format!("42{n}{}", json!(["send", {"room": room, "body": body}])),
            Protocol::Bare => json!({"type": "send", "room": room, "body": body}).to_string(),
        }
    }

    pub fn classify(&self, text: &str) -> Incoming {
        match self.protocol {
            Protocol::Switchboard | Protocol::Bare => classify_json(text),
            Protocol::Socketio => classify_socketio(text),
        }
    }
}

fn classify_json(text: &str) -> Incoming {
    let Ok(frame) = serde_json::from_str::<JsonFrame>(text) else { return Incoming::Error(text.to_owned()) };
    match frame.kind.as_str() {
        "message" => Incoming::Message(frame.body.unwrap_or_default()),
        "ack" => Incoming::Ack,
        "joined" => Incoming::Joined,
        "error" => Incoming::Error(frame.code.unwrap_or_default()),
        _ => Incoming::Other,
    }
}

fn classify_socketio(text: &str) -> Incoming {
    if text == "2" {
        return Incoming::Reply("3");
    }
    if let Some(event) = text.strip_prefix("42") {
        // ["message", {room, body}]
        return match serde_json::from_str::<(String, SocketIoMessage)>(event) {
            Ok((name, message)) if name == "message" => Incoming::Message(message.body),
            _ => Incoming::Other,
        };
    }
    if let Some(ack) = text.strip_prefix("43") {
        let digits = ack.find(|c: char| !c.is_ascii_digit()).unwrap_or(ack.len());
        let ok = ack[digits..].contains("\"ok\":true");
        return match (ack[..digits].parse::<u64>(), ok) {
            (Ok(JOIN_ACK), true) => Incoming::Joined,
            (Ok(_), true) => Incoming::Ack,
            _ => Incoming::Error(text.to_owned()),
        };
    }
    if text.starts_with("40") {
        return Incoming::Connected;
    }
    if text.starts_with("44") {
        return Incoming::Error(text.to_owned());
    }
    Incoming::Other
}

/// A message body: the intended send time in microseconds since the run's
/// start, then padding up to `size` bytes.
pub fn body(intended_us: u64, size: usize) -> String {
    let mut body = format!("{intended_us}|");
    while body.len() < size {
        body.push('x');
    }
    body
}

pub fn intended_us(body: &str) -> Option<u64> {
    body.split('|').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(protocol: Protocol) -> Codec {
        Codec { protocol, secret: "s".repeat(32), run: "t".into(), presence: false }
    }

    #[test]
    fn socketio_frames_are_recognised() {
        let c = codec(Protocol::Socketio);
        assert_eq!(c.join("r1"), r#"420["join","r1"]"#);
        assert_eq!(c.send("r1", "b", 7), r#"427["send",{"body":"b","room":"r1"}]"#);
        assert_eq!(c.classify("2"), Incoming::Reply("3"));
        assert_eq!(c.classify(r#"430[{"ok":true}]"#), Incoming::Joined);
        assert_eq!(c.classify(r#"4312[{"ok":true}]"#), Incoming::Ack);
        assert!(matches!(c.classify(r#"4312[{"ok":false}]"#), Incoming::Error(_)));
        assert_eq!(c.classify(r#"42["message",{"room":"r1","body":"12|xx"}]"#), Incoming::Message("12|xx".into()));
        assert_eq!(c.classify(r#"0{"sid":"a"}"#), Incoming::Other);
        assert_eq!(c.classify(r#"40{"sid":"b"}"#), Incoming::Connected);
    }

    #[test]
    fn json_frames_are_recognised() {
        let c = codec(Protocol::Switchboard);
        assert_eq!(
            c.classify(r#"{"type":"message","room":"r","seq":1,"body":"5|x"}"#),
            Incoming::Message("5|x".into())
        );
        assert_eq!(c.classify(r#"{"type":"ack","ref":"1","status":"accepted","id":"x"}"#), Incoming::Ack);
        assert_eq!(c.classify(r#"{"type":"error","code":"rate_limited"}"#), Incoming::Error("rate_limited".into()));
        assert!(c.url("127.0.0.1:1", "u").contains("token="));
    }

    #[test]
    fn bodies_carry_their_send_time() {
        let b = body(123_456, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(intended_us(&b), Some(123_456));
    }
}
