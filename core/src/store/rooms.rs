//! Room administration applied in the persister's transaction, in the
//! room's order with its messages (commands and sends share `sb.inbound`'s
//! partition). Like messages, nothing here reads the clock: a room a
//! command creates is created at the command's `issued_at`.

use sqlx::{Any, Row, Transaction};
use switchboard_schemas::envelope::Event;
use switchboard_schemas::room_command::{RoomAction, RoomCommand, RoomKind};

use super::{Outcome, StoreError};

type Tx = Transaction<'static, Any>;

/// Applies one command, once: a command already applied (its id is in
/// `room_commands`) changes nothing and yields the event it yielded then,
/// so a batch retried because its events were not published publishes them.
pub(super) async fn apply(tx: &mut Tx, command: &RoomCommand) -> Result<Outcome, StoreError> {
    let room = command.room.as_str();
    let applied = sqlx::query("SELECT epoch FROM room_commands WHERE id = $1")
        .bind(command.id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(row) = applied {
        let epoch = row.try_get::<i64, _>("epoch")? as u64;
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
            sqlx::query(
                "INSERT INTO rooms (id, kind, epoch, last_seq, created_at) VALUES ($1, $2, 1, 0, $3) \
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind",
            )
            .bind(room)
            .bind(kind.as_str())
            .bind(command.issued_at)
            .execute(&mut **tx)
            .await?;
            for member in members {
                add_member(tx, room, member).await?;
            }
            None
        }
        RoomAction::AddMember { user } => {
            sqlx::query(
                "INSERT INTO rooms (id, kind, epoch, last_seq, created_at) VALUES ($1, $2, 1, 0, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(room)
            .bind(RoomKind::Private.as_str())
            .bind(command.issued_at)
            .execute(&mut **tx)
            .await?;
            add_member(tx, room, user).await?;
            None
        }
        RoomAction::RemoveMember { user } => {
            let removed = sqlx::query("DELETE FROM room_members WHERE room = $1 AND user_id = $2")
                .bind(room)
                .bind(user.as_str())
                .execute(&mut **tx)
                .await?;
            (removed.rows_affected() > 0).then(|| Event::MemberRemoved { room: room.to_owned(), user: user.clone() })
        }
        RoomAction::ResetHistory => {
            let row = sqlx::query("UPDATE rooms SET epoch = epoch + 1, last_seq = 0 WHERE id = $1 RETURNING epoch")
                .bind(room)
                .fetch_optional(&mut **tx)
                .await?;
            match row {
                Some(row) => {
                    sqlx::query("INSERT INTO reset_messages (id, room) SELECT id, room FROM messages WHERE room = $1")
                        .bind(room)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query("DELETE FROM messages WHERE room = $1").bind(room).execute(&mut **tx).await?;
                    // The new epoch's seqs start again at 1: nothing is read yet.
                    sqlx::query("DELETE FROM read_positions WHERE room = $1").bind(room).execute(&mut **tx).await?;
                    let epoch = row.try_get::<i64, _>("epoch")? as u64;
                    Some(Event::HistoryReset { room: room.to_owned(), epoch })
                }
                // A room nobody wrote to has no history to reset.
                None => None,
            }
        }
    };
    let epoch = sqlx::query("SELECT epoch FROM rooms WHERE id = $1").bind(room).fetch_optional(&mut **tx).await?;
    let epoch = match epoch {
        Some(row) => row.try_get::<i64, _>("epoch")?,
        None => 0,
    };
    sqlx::query(
        "INSERT INTO room_commands (id, room, action, issued_by, issued_at, epoch) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(command.id.as_str())
    .bind(room)
    .bind(command.action_name())
    .bind(command.issued_by.as_str())
    .bind(command.issued_at)
    .bind(epoch)
    .execute(&mut **tx)
    .await?;
    Ok(Outcome::Applied { event, duplicate: false })
}

async fn add_member(tx: &mut Tx, room: &str, user: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO room_members (room, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(room)
        .bind(user)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
