//! Fuzzes the decoding of a `sb.nodes` record value into `NodeRecord`, as the
//! router does (`serde_json::from_slice`) for every node heartbeat it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::routing::NodeRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<NodeRecord>(data) else { return };
    let encoded = serde_json::to_vec(&record).expect("node records serialize");
    let back: NodeRecord = serde_json::from_slice(&encoded).expect("re-encoded node record parses");
    assert_eq!(back, record);
});
