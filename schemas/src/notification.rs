//! What the notifier POSTs to the team's push service for a message whose
//! room has members that are not there (see `workers/src/notifier.rs`).
//! The body is signed: `X-Switchboard-Signature: sha256=<hex>` is the
//! HMAC-SHA256 of the exact body bytes under the shared secret, and
//! `Idempotency-Key` names the (message, batch) the request is for, the
//! same on every retry and after a notifier restart
//! (`<message id>:<batch>:<16 hex digits of the recipients' SHA-256>`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `sb-schema` of a notification the notifier could not deliver, in `sb.dead-letter`.
pub const NOTIFICATION_V1: &str = "notification.v1";
/// Header with the body's HMAC-SHA256, `sha256=` and lowercase hex.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// Header naming the (message, batch): `<message id>:<batch>:<recipients' hash>`.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// One request: a message, and some of the members to tell about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    pub room: String,
    /// The message's id (stable across retries and replays).
    pub message_id: String,
    pub seq: u64,
    /// The room's epoch the seq belongs to.
    pub epoch: u64,
    pub sender: String,
    pub sender_name: String,
    /// The start of the body, at most the notifier's preview length in
    /// characters, with `…` when cut.
    pub preview: String,
    /// When an edge accepted the message, ms since the Unix epoch.
    pub sent_at: i64,
    /// Members to notify, sorted; a message for more members than one
    /// request holds goes in several batches.
    pub recipients: Vec<String>,
    /// This request's batch of the message, from 0.
    pub batch: u32,
}

/// The first `max_chars` characters of `body`, with `…` when it was longer.
pub fn preview(body: &str, max_chars: usize) -> String {
    match body.char_indices().nth(max_chars) {
        None => body.to_owned(),
        Some((cut, _)) => format!("{}…", &body[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_characters() {
        assert_eq!(preview("hello", 5), "hello");
        assert_eq!(preview("hello!", 5), "hello…");
        assert_eq!(preview("héllo wörld", 7), "héllo w…");
        assert_eq!(preview("", 3), "");
    }
}
