//! Counters of what the edge did, read by tests and operators (the seed of
//! the node's metrics).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Messages read from SQL to fill a gap or catch up after a new route.
    pub backfilled: AtomicU64,
    /// Connections closed with 4008 because their send queue overflowed.
    pub slow_consumers: AtomicU64,
}

impl EdgeStats {
    pub fn backfilled(&self) -> u64 {
        self.backfilled.load(Ordering::Relaxed)
    }

    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    pub(crate) fn slow_consumer_closed(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("closed a slow consumer (4008)");
    }
}
