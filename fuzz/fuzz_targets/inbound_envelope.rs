//! Fuzzes the decoding of an `sb.inbound` record value into `InboundSend`, as
//! the persister does (`serde_json::from_slice`, then the id and body checks);
//! a hostile or corrupt record must be refused, never panic the worker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::envelope::InboundSend;
use switchboard_schemas::ids::validate_id;

/// The persister's body bound (workers/src/persister.rs `MAX_BODY_BYTES`).
const MAX_BODY_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(send) = serde_json::from_slice::<InboundSend>(data) else { return };
    // The checks the persister applies after decoding; they must not panic either.
    let _ = validate_id(&send.room);
    let _ = validate_id(&send.sender);
    let _ = send.body.is_empty() || send.body.len() > MAX_BODY_BYTES || send.body.contains('\0');

    let encoded = send.to_json();
    let back: InboundSend = serde_json::from_slice(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded {} fails: {e}", String::from_utf8_lossy(&encoded)));
    assert_eq!(back, send);
});
