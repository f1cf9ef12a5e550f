//! Fuzzes the Kafka header parsing in `switchboard_schemas::headers`:
//! `TraceParent::parse` (every worker reads `traceparent` from untrusted
//! records) and the `Display` form it must read back, also for ids built
//! from raw fuzz bytes via `new_root` / `child`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::headers::TraceParent;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(tp) = TraceParent::parse(text)
    {
        assert!(tp.trace_id != 0 && tp.span_id != 0, "zero id accepted from {text:?}");
        round_trip(tp);
    }
    // Ids from raw bytes: what a hop generates must parse at the next hop.
    if let (Some(trace), Some(span)) = (data.get(..16), data.get(16..24)) {
        let root = TraceParent::new_root(
            u128::from_le_bytes(trace.try_into().expect("16 bytes")),
            u64::from_le_bytes(span.try_into().expect("8 bytes")),
        );
        round_trip(root);
        let child_span = data.get(24..32).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let child = root.child(child_span);
        assert_eq!(child.trace_id, root.trace_id);
        round_trip(child);
    }
});

fn round_trip(tp: TraceParent) {
    let text = tp.to_string();
    assert_eq!(text.len(), 55, "{text}");
    assert_eq!(TraceParent::parse(&text), Ok(tp), "{text}");
}
