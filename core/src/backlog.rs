//! The embedded default's guard against losing accepted sends. Its mock
//! Kafka keeps at most 5 MiB (100,000 records) per partition and drops the
//! oldest beyond that, even if the persister has not read them yet; with
//! real Kafka, retention is days and no such guard is needed. The edges
//! count the inbound bytes Kafka accepted, the persister the bytes it has
//! handled, and while the difference is over the limit the edges answer
//! `unavailable` (retry with the same client_id) instead of accepting more.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Backlog {
    accepted: AtomicU64,
    handled: AtomicU64,
    limit_bytes: u64,
}

impl Backlog {
    pub fn new(limit_bytes: u64) -> Self {
        Self { accepted: AtomicU64::new(0), handled: AtomicU64::new(0), limit_bytes }
    }

    /// An edge's inbound record of `bytes` was acknowledged by Kafka.
    pub fn accepted(&self, bytes: usize) {
        self.accepted.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The persister stored (or dead-lettered) records of `bytes` in total.
    pub fn handled(&self, bytes: usize) {
        self.handled.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes accepted but not yet handled.
    pub fn behind(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed).saturating_sub(self.handled.load(Ordering::Relaxed))
    }

    pub fn is_full(&self) -> bool {
        self.behind() >= self.limit_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_until_the_persister_catches_up() {
        let backlog = Backlog::new(1_000);
        backlog.accepted(600);
        assert!(!backlog.is_full());
        backlog.accepted(600);
        assert!(backlog.is_full());
        backlog.handled(300);
        assert_eq!(backlog.behind(), 900);
        assert!(!backlog.is_full());
        // Records the edges did not count (injected by hand) never make it negative.
        backlog.handled(5_000);
        assert_eq!(backlog.behind(), 0);
    }
}
