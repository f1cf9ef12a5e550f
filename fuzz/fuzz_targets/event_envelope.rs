//! Fuzzes the decoding of an `sb.events` / `sb.deliver.<node>` record value into
//! `Event`, as the edge's delivery loop does (`serde_json::from_slice`); the
//! tagged enum with a flattened message is the most intricate envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::envelope::Event;
use switchboard_schemas::ids::validate_id;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Event>(data) else { return };
    // The router checks the key (the room id) the same way.
    let _ = validate_id(event.room());

    let encoded = event.to_json();
    let back: Event = serde_json::from_slice(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded {} fails: {e}", String::from_utf8_lossy(&encoded)));
    assert_eq!(back, event);
});
