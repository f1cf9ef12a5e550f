//! The room → nodes table a router builds from `sb.routes` and `sb.nodes`.
//!
//! Rules: a route counts only in its node's current epoch (a restarted node's
//! old routes are dead); a node whose last heartbeat is older than the stale
//! timeout, that never sent one, or that is draining gets nothing.
//!
//! A heartbeat's age is measured against the newest heartbeat the table has
//! read from any node (never later than the router's clock), not against the
//! clock alone. A router cut off from `sb.nodes` (a broker restart) would
//! otherwise take its own lag for dead nodes and drop every event it read
//! before the heartbeats caught up; a node that really stopped still falls
//! behind the others' heartbeats and is dropped.

use std::collections::{HashMap, HashSet};

use switchboard_schemas::routing::{NodeRecord, RouteKey, RouteRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeState {
    epoch: u64,
    heartbeat_at: i64,
    draining: bool,
}

#[derive(Debug, Default)]
pub struct RoutingTable {
    /// room → (node → epoch of the route)
    rooms: HashMap<String, HashMap<String, u64>>,
    nodes: HashMap<String, NodeState>,
    stale_after_ms: i64,
    /// Newest `heartbeat_at` read from any node: the table's own "now".
    newest_heartbeat: i64,
}

impl RoutingTable {
    pub fn new(stale_after_ms: i64) -> Self {
        Self { stale_after_ms, ..Self::default() }
    }

    /// Applies a `sb.routes` record; `None` is a tombstone.
    pub fn apply_route(&mut self, key: &RouteKey, value: Option<&RouteRecord>) {
        match value {
            Some(route) => {
                if self.nodes.get(&key.node).is_some_and(|n| route.epoch < n.epoch) {
                    return; // from an older life of the node
                }
                self.rooms.entry(key.room.clone()).or_default().insert(key.node.clone(), route.epoch);
            }
            None => {
                if let Some(nodes) = self.rooms.get_mut(&key.room) {
                    nodes.remove(&key.node);
                    if nodes.is_empty() {
                        self.rooms.remove(&key.room);
                    }
                }
            }
        }
    }

    /// Applies a `sb.nodes` record; `None` (a tombstone) forgets the node.
    pub fn apply_node(&mut self, node: &str, value: Option<&NodeRecord>) {
        let Some(record) = value else {
            self.nodes.remove(node);
            return;
        };
        let state = NodeState { epoch: record.epoch, heartbeat_at: record.heartbeat_at, draining: record.draining };
        self.newest_heartbeat = self.newest_heartbeat.max(record.heartbeat_at);
        match self.nodes.get(node) {
            Some(known) if record.epoch < known.epoch => return,
            Some(known) if record.epoch > known.epoch => self.forget_routes_before(node, record.epoch),
            None => self.forget_routes_before(node, record.epoch),
            _ => {}
        }
        self.nodes.insert(node.to_owned(), state);
    }

    fn forget_routes_before(&mut self, node: &str, epoch: u64) {
        self.rooms.retain(|_, nodes| {
            nodes.retain(|n, e| n != node || *e >= epoch);
            !nodes.is_empty()
        });
    }

    /// Nodes that should receive events of `room` at time `now_ms`, sorted.
    pub fn targets(&self, room: &str, now_ms: i64) -> Vec<String> {
        let Some(nodes) = self.rooms.get(room) else { return Vec::new() };
        let mut targets: Vec<String> = nodes
            .iter()
            .filter(|(node, epoch)| {
                self.nodes.get(*node).is_some_and(|state| state.epoch == **epoch && self.is_live(state, now_ms))
            })
            .map(|(node, _)| node.clone())
            .collect();
        targets.sort();
        targets
    }

    /// Nodes alive at `now_ms` (for metrics and logs).
    pub fn live_nodes(&self, now_ms: i64) -> HashSet<String> {
        self.nodes.iter().filter(|(_, s)| self.is_live(s, now_ms)).map(|(n, _)| n.clone()).collect()
    }

    fn is_live(&self, state: &NodeState, now_ms: i64) -> bool {
        let reference = now_ms.min(self.newest_heartbeat);
        !state.draining && reference - state.heartbeat_at <= self.stale_after_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, epoch: u64, at: i64) -> NodeRecord {
        NodeRecord { node: name.into(), epoch, heartbeat_at: at, draining: false }
    }

    fn route(room: &str, name: &str, epoch: u64) -> (RouteKey, RouteRecord) {
        (RouteKey::new(room, name), RouteRecord { room: room.into(), node: name.into(), epoch })
    }

    #[test]
    fn routes_to_live_nodes_with_members() {
        let mut t = RoutingTable::new(10_000);
        t.apply_node("a", Some(&node("a", 1, 1_000)));
        t.apply_node("b", Some(&node("b", 1, 1_000)));
        let (k, v) = route("lobby", "a", 1);
        t.apply_route(&k, Some(&v));
        let (k, v) = route("lobby", "b", 1);
        t.apply_route(&k, Some(&v));
        assert_eq!(t.targets("lobby", 2_000), vec!["a", "b"]);
        assert!(t.targets("elsewhere", 2_000).is_empty());
    }

    #[test]
    fn tombstones_remove_routes() {
        let mut t = RoutingTable::new(10_000);
        t.apply_node("a", Some(&node("a", 1, 0)));
        let (k, v) = route("r", "a", 1);
        t.apply_route(&k, Some(&v));
        t.apply_route(&k, None);
        assert!(t.targets("r", 0).is_empty());
    }

    #[test]
    fn older_epochs_are_ignored() {
        let mut t = RoutingTable::new(10_000);
        t.apply_node("a", Some(&node("a", 1, 0)));
        let (k, v) = route("old", "a", 1);
        t.apply_route(&k, Some(&v));
        // The node restarts: its old routes die with the old epoch.
        t.apply_node("a", Some(&node("a", 2, 5)));
        assert!(t.targets("old", 5).is_empty());
        // A late route record from the old life is ignored too.
        let (k, v) = route("late", "a", 1);
        t.apply_route(&k, Some(&v));
        assert!(t.targets("late", 5).is_empty());
        // A late heartbeat from the old life does not roll the epoch back.
        t.apply_node("a", Some(&node("a", 1, 9)));
        let (k, v) = route("new", "a", 2);
        t.apply_route(&k, Some(&v));
        assert_eq!(t.targets("new", 9), vec!["a"]);
    }

    #[test]
    fn stale_draining_and_unknown_nodes_get_nothing() {
        let mut t = RoutingTable::new(1_000);
        t.apply_node("a", Some(&node("a", 1, 0)));
        t.apply_node("b", Some(&node("b", 1, 0)));
        let (k, v) = route("r", "a", 1);
        t.apply_route(&k, Some(&v));
        assert_eq!(t.targets("r", 1_000), vec!["a"]);
        // b goes on beating, a does not.
        t.apply_node("b", Some(&node("b", 1, 1_001)));
        assert!(t.targets("r", 1_001).is_empty(), "heartbeat too old");
        t.apply_node("a", Some(&node("a", 1, 2_000)));
        assert_eq!(t.targets("r", 2_500), vec!["a"], "fresh heartbeat revives it");

        t.apply_node("b", Some(&node("b", 1, 2_400)));
        t.apply_node("a", Some(&NodeRecord { draining: true, ..node("a", 1, 2_500) }));
        assert!(t.targets("r", 2_500).is_empty(), "draining");

        let (k, v) = route("r", "ghost", 1);
        t.apply_route(&k, Some(&v));
        assert!(t.targets("r", 2_500).is_empty(), "never sent a heartbeat");
        assert_eq!(t.live_nodes(2_500), HashSet::from(["b".to_string()]));
    }

    #[test]
    fn a_router_behind_on_heartbeats_does_not_drop_nodes() {
        let mut t = RoutingTable::new(1_000);
        t.apply_node("a", Some(&node("a", 1, 10_000)));
        t.apply_node("b", Some(&node("b", 1, 10_000)));
        let (k, v) = route("r", "a", 1);
        t.apply_route(&k, Some(&v));
        let (k, v) = route("r", "b", 1);
        t.apply_route(&k, Some(&v));
        // The router read nothing from sb.nodes for a minute (broker down):
        // no node beat later than the others, so none is taken for dead.
        assert_eq!(t.targets("r", 70_000), vec!["a", "b"]);
        // Heartbeats come back, only from b: a is now behind and dropped.
        t.apply_node("b", Some(&node("b", 1, 70_000)));
        assert_eq!(t.targets("r", 70_000), vec!["b"]);
        // A heartbeat stamped ahead of the router's clock makes nobody stale early.
        t.apply_node("b", Some(&node("b", 1, 90_000)));
        t.apply_node("a", Some(&node("a", 1, 69_500)));
        assert_eq!(t.targets("r", 70_000), vec!["a", "b"]);
    }
}
