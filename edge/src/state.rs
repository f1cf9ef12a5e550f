//! What every request and connection of a node shares. Its own module so
//! the server, the handshake and the sessions all depend on it rather than
//! on each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use switchboard_core::ops::Readiness;
use switchboard_core::producer::KafkaProducer;
use switchboard_core::store::Store;
use switchboard_core::topics::Topics;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::EdgeConfig;
use crate::events::EdgeEvents;
use crate::hub::Hub;
use crate::keepalive::Keepalive;
use crate::presence::Presence;

/// State shared by every request and connection of this node.
pub struct EdgeState {
    pub config: EdgeConfig,
    pub node: String,
    /// This start of the node (a fresh epoch at every start).
    pub epoch: u64,
    /// Counted events; their metrics are served at `/metrics`.
    pub events: Arc<EdgeEvents>,
    pub(crate) hub: Arc<Hub>,
    /// Pings and idle timeouts of the node's connections (its clock, too).
    pub(crate) keepalive: Keepalive,
    pub(crate) presence: Arc<Presence>,
    pub(crate) producer: KafkaProducer,
    pub(crate) topics: Topics,
    pub(crate) store: Store,
    pub(crate) auth: Authenticator,
    /// Set on shutdown: new upgrades are refused.
    pub(crate) draining: AtomicBool,
    /// `/readyz`: set once the delivery topic is assigned, cleared on drain.
    pub(crate) ready: Readiness,
    /// Connection tasks, so draining can wait for them.
    pub(crate) tracker: TaskTracker,
    pub(crate) conn_ids: AtomicU64,
}

impl EdgeState {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }
}
