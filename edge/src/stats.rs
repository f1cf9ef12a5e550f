//! Counters of what the edge did, read by tests and operators (the seed of
//! the node's metrics).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Messages read from SQL to fill a gap or catch up after a new route.
    pub backfilled: AtomicU64,
}

impl EdgeStats {
    pub fn backfilled(&self) -> u64 {
        self.backfilled.load(Ordering::Relaxed)
    }
}
