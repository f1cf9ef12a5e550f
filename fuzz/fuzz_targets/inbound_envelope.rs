//! Fuzzes the decoding of an `sb.inbound` record value, with the checks the
//! persister applies (`Inbound::decode`, for a client's send, a room
//! command and a read marker); a hostile or corrupt record must be refused, never panic the
//! worker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_schemas::envelope::{INBOUND_V1, Inbound};
use switchboard_schemas::read_marker::READ_MARKER_V1;
use switchboard_schemas::room_command::ROOM_COMMAND_V1;

fuzz_target!(|data: &[u8]| {
    for schema in [INBOUND_V1, ROOM_COMMAND_V1, READ_MARKER_V1] {
        let Ok(decoded) = Inbound::decode(schema, data) else { continue };
        let encoded = match &decoded {
            Inbound::Send(send) => send.to_json(),
            Inbound::Room(command) => command.to_json(),
            Inbound::Read(marker) => marker.to_json(),
        };
        let back = Inbound::decode(schema, &encoded)
            .unwrap_or_else(|e| panic!("re-encoded {} is refused: {e}", String::from_utf8_lossy(&encoded)));
        assert_eq!(back, decoded);
    }
});
