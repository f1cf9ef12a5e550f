//! Records of the compacted topics `sb.routes` (which node wants which room)
//! and `sb.nodes` (each node's epoch and heartbeat).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{IdError, validate_id};

/// Key of a `sb.routes` record: `<room>/<node>`. Ids never contain '/', so
/// the key splits unambiguously, also for tombstones that carry no value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub room: String,
    pub node: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RouteKeyError {
    #[error("route key has no '/' separator")]
    NoSeparator,
    #[error("route key part: {0}")]
    BadId(#[from] IdError),
}

impl RouteKey {
    pub fn new(room: &str, node: &str) -> Self {
        Self { room: room.to_owned(), node: node.to_owned() }
    }

    pub fn encode(&self) -> String {
        format!("{}/{}", self.room, self.node)
    }

    pub fn parse(key: &str) -> Result<Self, RouteKeyError> {
        let (room, node) = key.split_once('/').ok_or(RouteKeyError::NoSeparator)?;
        validate_id(room)?;
        validate_id(node)?;
        Ok(Self::new(room, node))
    }
}

/// Value of a live route: `node` (in its `epoch`) has local members in `room`.
/// A tombstone (null value) under the same key removes the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteRecord {
    pub room: String,
    pub node: String,
    pub epoch: u64,
}

/// Value of a `sb.nodes` record (key: node id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeRecord {
    pub node: String,
    /// Fresh at every start of the node (milliseconds since the Unix epoch at
    /// start), so a restarted node's routes supersede its older ones.
    pub epoch: u64,
    /// When the node last said it was alive, milliseconds since the Unix epoch.
    pub heartbeat_at: i64,
    /// True while the node drains: routers stop routing to it.
    #[serde(default)]
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_key_round_trips() {
        let key = RouteKey::new("team:eng", "edge-1");
        assert_eq!(key.encode(), "team:eng/edge-1");
        assert_eq!(RouteKey::parse(&key.encode()), Ok(key));
        assert_eq!(RouteKey::parse("nokey"), Err(RouteKeyError::NoSeparator));
        assert!(RouteKey::parse("a/b/c").is_err());
        assert!(RouteKey::parse("/b").is_err());
    }

    #[test]
    fn node_record_defaults_draining() {
        let record: NodeRecord = serde_json::from_str(r#"{"node":"n","epoch":2,"heartbeat_at":3}"#).unwrap();
        assert!(!record.draining);
    }
}
