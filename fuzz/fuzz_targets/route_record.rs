//! Fuzzes a `sb.routes` record as the router applies it: `RouteKey::parse` on
//! the key, then `serde_json::from_slice::<RouteRecord>` on the value. Input is
//! `<key>` (a tombstone) or `<key>\n<value>`; a valid key never holds '\n'.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::ids::validate_id;
use switchboard_schemas::routing::{RouteKey, RouteRecord};

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    // The router skips keys that are not UTF-8 before parsing them.
    if let Ok(key) = std::str::from_utf8(key)
        && let Ok(route_key) = RouteKey::parse(key)
    {
        assert_eq!(route_key.encode(), key, "a parsed key re-encodes to itself");
        assert!(validate_id(&route_key.room).is_ok() && validate_id(&route_key.node).is_ok());
    }
    if let Some(value) = value
        && let Ok(record) = serde_json::from_slice::<RouteRecord>(value)
    {
        let encoded = serde_json::to_vec(&record).expect("route records serialize");
        let back: RouteRecord = serde_json::from_slice(&encoded).expect("re-encoded route record parses");
        assert_eq!(back, record);
    }
});
