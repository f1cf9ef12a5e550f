//! Read positions: a client's `read {room, seq}` becomes a read marker on
//! `sb.inbound`, keyed by room, so the persister applies it in order with
//! the room's messages and a database rebuilt from the topic has every
//! user's read position too. Positions only move forward.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Origin;
use crate::ids::validate_id;

/// `sb-schema` value of read markers in `sb.inbound`.
pub const READ_MARKER_V1: &str = "read-marker.v1";

/// "`user` has read `room` up to `seq`" (key: the room id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadMarker {
    pub room: String,
    /// Authenticated user id (from the token, never from the client).
    pub user: String,
    /// The last seq read; the persister never moves a position back, and
    /// caps it at the room's last seq.
    pub seq: u64,
    /// The connection that sent it, for a refusal (a private room the user
    /// may not read).
    pub origin: Origin,
}

impl ReadMarker {
    pub fn validate(&self) -> Result<(), String> {
        validate_id(&self.room).map_err(|e| format!("room: {e}"))?;
        validate_id(&self.user).map_err(|e| format!("user: {e}"))?;
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("read markers serialize")
    }
}
