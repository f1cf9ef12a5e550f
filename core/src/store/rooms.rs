//! Room administration applied in the persister's transaction, in the
//! room's order with its messages (commands and sends share `sb.inbound`'s
//! partition). Like messages, nothing here reads the clock: a room a
//! command creates is created at the command's `issued_at`.

use switchboard_schemas::envelope::Event;
use switchboard_schemas::room_command::{RoomAction, RoomCommand, RoomKind};

use super::tx::{Columns, Statement, Tx};
use super::{Outcome, StoreError};

/// Applies one command, once: a command already applied (its id is in
/// `room_commands`) changes nothing and yields the event it yielded then,
/// so a batch retried because its events were not published publishes them.
pub(super) async fn apply(tx: &mut Tx, command: &RoomCommand) -> Result<Outcome, StoreError> {
    let room = command.room.as_str();
    let applied =
        tx.fetch_optional(Statement::new("SELECT epoch FROM room_commands WHERE id = $1").text(&command.id)).await?;
    if let Some(row) = applied {
        let epoch = row.int("epoch")? as u64;
        let event = match &command.action {
            RoomAction::RemoveMember { user } => {
                Some(Event::MemberRemoved { room: room.to_owned(), user: user.clone() })
            }
            RoomAction::ResetHistory if epoch > 0 => Some(Event::HistoryReset { room: room.to_owned(), epoch }),
            _ => None,
        };
        return Ok(Outcome::Applied { event, duplicate: true });
    }
    let event = match &command.action {
        RoomAction::Create { kind, members } => {
            tx.execute(
                Statement::new(
                    "INSERT INTO rooms (id, kind, epoch, last_seq, created_at) VALUES ($1, $2, 1, 0, $3) \
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind",
                )
                .text(room)
                .text(kind.as_str())
                .int(command.issued_at),
            )
            .await?;
            for member in members {
                add_member(tx, room, member).await?;
            }
            None
        }
        RoomAction::AddMember { user } => {
            tx.execute(
                Statement::new(
                    "INSERT INTO rooms (id, kind, epoch, last_seq, created_at) VALUES ($1, $2, 1, 0, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .text(room)
                .text(RoomKind::Private.as_str())
                .int(command.issued_at),
            )
            .await?;
            add_member(tx, room, user).await?;
            None
        }
        RoomAction::RemoveMember { user } => {
            let removed = tx
                .execute(
                    Statement::new("DELETE FROM room_members WHERE room = $1 AND user_id = $2").text(room).text(user),
                )
                .await?;
            (removed > 0).then(|| Event::MemberRemoved { room: room.to_owned(), user: user.clone() })
        }
        RoomAction::ResetHistory => {
            let row = tx
                .fetch_optional(
                    Statement::new("UPDATE rooms SET epoch = epoch + 1, last_seq = 0 WHERE id = $1 RETURNING epoch")
                        .text(room),
                )
                .await?;
            match row {
                Some(row) => {
                    tx.execute(
                        Statement::new(
                            "INSERT INTO reset_messages (id, room) SELECT id, room FROM messages WHERE room = $1",
                        )
                        .text(room),
                    )
                    .await?;
                    tx.execute(Statement::new("DELETE FROM messages WHERE room = $1").text(room)).await?;
                    // The new epoch's seqs start again at 1: nothing is read yet.
                    tx.execute(Statement::new("DELETE FROM read_positions WHERE room = $1").text(room)).await?;
                    let epoch = row.int("epoch")? as u64;
                    Some(Event::HistoryReset { room: room.to_owned(), epoch })
                }
                // A room nobody wrote to has no history to reset.
                None => None,
            }
        }
    };
    let epoch = tx.fetch_optional(Statement::new("SELECT epoch FROM rooms WHERE id = $1").text(room)).await?;
    let epoch = match epoch {
        Some(row) => row.int("epoch")?,
        None => 0,
    };
    tx.execute(
        Statement::new(
            "INSERT INTO room_commands (id, room, action, issued_by, issued_at, epoch) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .text(&command.id)
        .text(room)
        .text(command.action_name())
        .text(&command.issued_by)
        .int(command.issued_at)
        .int(epoch),
    )
    .await?;
    Ok(Outcome::Applied { event, duplicate: false })
}

async fn add_member(tx: &mut Tx, room: &str, user: &str) -> Result<(), StoreError> {
    tx.execute(
        Statement::new("INSERT INTO room_members (room, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .text(room)
            .text(user),
    )
    .await?;
    Ok(())
}
