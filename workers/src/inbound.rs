//! Decoding `sb.inbound` records: the one place that says what a valid
//! record is, for the live persister and for `sbctl replay store`, so a
//! replay applies exactly what the persister applied.

use rdkafka::Message;
use switchboard_core::kafka::header_str;
use switchboard_schemas::envelope::{INBOUND_V1, Inbound, InboundSend};
use switchboard_schemas::headers::SCHEMA;
use switchboard_schemas::ids::validate_id;
use switchboard_schemas::room_command::{ROOM_COMMAND_V1, RoomCommand};

/// Largest body the persister stores; the edge enforces a (smaller) limit
/// first, this guards against other producers.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Decodes and checks one record; the error is the reason it is dead-lettered.
pub fn decode<M: Message>(record: &M) -> Result<Inbound, String> {
    let schema = header_str(record, SCHEMA).ok_or_else(|| format!("missing {SCHEMA} header"))?;
    let payload = record.payload().ok_or("empty payload")?;
    let inbound = match schema {
        INBOUND_V1 => {
            let send: InboundSend = serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
            validate_id(&send.room).map_err(|e| format!("room: {e}"))?;
            validate_id(&send.sender).map_err(|e| format!("sender: {e}"))?;
            if send.body.is_empty() || send.body.len() > MAX_BODY_BYTES || send.body.contains('\0') {
                return Err("body empty, too large or containing NUL".into());
            }
            Inbound::Send(send)
        }
        ROOM_COMMAND_V1 => {
            let command: RoomCommand = serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
            command.validate().map_err(|e| e.to_string())?;
            Inbound::Room(command)
        }
        other => return Err(format!("unknown schema {other:?}")),
    };
    if record.key() != Some(inbound.room().as_bytes()) {
        return Err("key is not the room id".into());
    }
    Ok(inbound)
}
