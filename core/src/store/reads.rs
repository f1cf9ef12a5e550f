//! Read markers applied in the persister's transaction, in the room's order
//! with its messages. A position moves forward only, and never past the
//! room's last seq at that point of the log, so applying the same markers
//! again (a retried batch, a replay) writes the same positions.

use switchboard_schemas::envelope::Event;
use switchboard_schemas::protocol::ErrorCode;
use switchboard_schemas::read_marker::ReadMarker;

use super::tx::{Columns, Statement, Tx};
use super::{IS_MEMBER, Outcome, PRIVATE, StoreError};

/// Moves `marker.user`'s position in `marker.room` forward to `marker.seq`
/// (capped at the room's last seq). `Applied` with a `Read` event when it
/// moved; without one (a duplicate) when it was there already; `Rejected`
/// when the user may not read the room.
pub(super) async fn apply(tx: &mut Tx, marker: &ReadMarker) -> Result<Outcome, StoreError> {
    let room = marker.room.as_str();
    let row = tx.fetch_optional(Statement::new("SELECT kind, last_seq FROM rooms WHERE id = $1").text(room)).await?;
    let last_seq = match row {
        Some(row) => {
            if row.text("kind")? == PRIVATE
                && tx.fetch_optional(Statement::new(IS_MEMBER).text(room).text(&marker.user)).await?.is_none()
            {
                return Ok(Outcome::Rejected {
                    code: ErrorCode::Forbidden,
                    message: format!("you may not read room {room:?}"),
                });
            }
            row.int("last_seq")?
        }
        None => 0,
    };
    let seq = (marker.seq.min(i64::MAX as u64) as i64).min(last_seq);
    if seq <= 0 {
        return Ok(Outcome::Applied { event: None, duplicate: true });
    }
    let moved = tx
        .execute(
            Statement::new(
                "INSERT INTO read_positions (room, user_id, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (room, user_id) DO UPDATE SET seq = excluded.seq WHERE read_positions.seq < excluded.seq",
            )
            .text(room)
            .text(&marker.user)
            .int(seq),
        )
        .await?;
    if moved == 0 {
        return Ok(Outcome::Applied { event: None, duplicate: true });
    }
    let event = Event::Read { room: room.to_owned(), user: marker.user.clone(), seq: seq as u64 };
    Ok(Outcome::Applied { event: Some(event), duplicate: false })
}
