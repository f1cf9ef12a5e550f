//! Fuzzes `ClientFrame::parse`, which the edge runs on every client text frame:
//! arbitrary text must never panic, and an accepted frame must respect the
//! protocol limits and survive re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::protocol::{ClientFrame, ErrorCode, MAX_CLIENT_ID_LEN, MAX_REF_LEN};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time the edge sees them.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientFrame::parse(text) {
        Ok(frame) => {
            assert!(frame.reference().len() <= MAX_REF_LEN, "accepted a long ref: {frame:?}");
            if let ClientFrame::Send { client_id, .. } = &frame {
                assert!((1..=MAX_CLIENT_ID_LEN).contains(&client_id.len()), "accepted client_id {client_id:?}");
            }
            let encoded = serde_json::to_string(&frame).expect("client frames serialize");
            let back = ClientFrame::parse(&encoded).unwrap_or_else(|e| panic!("re-encoded {encoded} fails: {e}"));
            assert_eq!(back, frame, "round trip through {encoded}");
        }
        Err(e) => {
            // The error reply echoes `ref`, so it must be bounded too.
            if let Some(reference) = &e.reference {
                assert!(reference.len() <= MAX_REF_LEN, "error echoes a long ref");
            }
            assert!(
                matches!(e.code, ErrorCode::BadJson | ErrorCode::UnknownType | ErrorCode::InvalidFrame),
                "unexpected code {:?}",
                e.code
            );
        }
    }
});
