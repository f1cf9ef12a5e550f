//! Identifiers that cross the wire: rooms, nodes, users, and the message id
//! derived from a client's idempotency key.

use thiserror::Error;
use uuid::Uuid;

/// Longest room, node or user id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("id may contain only letters, digits and '-', '_', '.', ':'")]
    BadCharacter,
}

/// Checks a room, node or user id. The charset keeps ids safe inside Kafka
/// keys (`room/node` uses '/' as separator) and topic names.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')) {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// Namespace for message ids (UUID v5).
const MESSAGE_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_27b5_8a0e_4f7e_9d44_51c2_0b7a_e3d1);

/// The id of a message is derived from its idempotency key (room, sender,
/// client id), so the edge can tell the client the final id in its `ack`
/// before the persister has stored it, and a retried send gets the same id.
pub fn message_id(room: &str, sender: &str, client_id: &str) -> Uuid {
    // Lengths prefix each part so ("ab","c") and ("a","bc") never collide.
    let mut name = Vec::with_capacity(room.len() + sender.len() + client_id.len() + 12);
    for part in [room, sender, client_id] {
        name.extend_from_slice(&(part.len() as u32).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&MESSAGE_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert_eq!(validate_id("lobby"), Ok(()));
        assert_eq!(validate_id("team:eng.ops-1_a"), Ok(()));
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id("a/b"), Err(IdError::BadCharacter));
        assert_eq!(validate_id("é"), Err(IdError::BadCharacter));
        assert_eq!(validate_id(&"x".repeat(129)), Err(IdError::TooLong));
    }

    #[test]
    fn message_id_is_stable_and_unambiguous() {
        assert_eq!(message_id("r", "u", "c1"), message_id("r", "u", "c1"));
        assert_ne!(message_id("r", "u", "c1"), message_id("r", "u", "c2"));
        assert_ne!(message_id("ab", "c", "d"), message_id("a", "bc", "d"));
    }
}
