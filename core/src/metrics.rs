//! The process's metrics: one `prometheus-client` registry per process, into
//! which each component (edge, persister, router) registers its own series
//! once, at start, under its own prefix. The embedded default runs all of
//! them in one process and so serves one set; each production binary serves
//! the set of its one component.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::registry::Registry;

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A shared handle on the process's registry.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Registry>>);

/// Buckets of every duration histogram: 1 ms to ~16 s, doubling, so one
/// dashboard query resolves a millisecond and a slow ten seconds alike.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

impl Metrics {
    /// Registers a component's series under `switchboard_<component>_`.
    pub fn register(&self, component: &str, register: impl FnOnce(&mut Registry)) {
        register(self.lock().sub_registry_with_prefix(format!("switchboard_{component}")));
    }

    /// Every series in the Prometheus text format (OpenMetrics flavour).
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.lock())
            .expect("writing metrics to a String cannot fail");
        text
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Registration and encoding cannot leave the registry half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn components_register_under_their_own_prefix_in_one_set() {
        let metrics = Metrics::default();
        let a: Counter = Counter::default();
        let b: Counter = Counter::default();
        metrics.register("edge", |r| r.register("frames", "frames", a.clone()));
        metrics.register("persister", |r| r.register("batches", "batches", b.clone()));
        a.inc();
        b.inc_by(2);
        let text = metrics.render();
        assert!(text.contains("switchboard_edge_frames_total 1\n"), "{text}");
        assert!(text.contains("switchboard_persister_batches_total 2\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
