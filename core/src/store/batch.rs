//! One persister batch as a handful of statements, whatever its size: the
//! rooms are locked and their seqs advanced in one UPDATE and the new
//! messages written in one `COPY` on PostgreSQL, in multi-row INSERTs on
//! SQLite (PostgreSQL looks the already-stored sends up only when the COPY
//! meets one, see [`persist`]). A statement
//! per message made the store the pipeline's bottleneck (about 2 round
//! trips per message plus 2 per room).
//!
//! Statements are built with the backend's parameter marks (see [`Marks`])
//! and split so no statement binds more than `MAX_BINDS`.

use std::collections::{BTreeMap, HashMap, HashSet};

use switchboard_schemas::envelope::{InboundSend, StoredMessage};
use switchboard_schemas::ids::message_id;
use switchboard_schemas::protocol::{ErrorCode, MessageFrame};

use super::tx::{Columns, Statement, Tx};
use super::{Outcome, PRIVATE, PUBLIC, StoreError, is_sqlite, message_from_row};

/// Below SQLite's limit of 32,766 bound values (PostgreSQL allows 65,535).
pub(super) const MAX_BINDS: usize = 1_000;

/// A room as the batch holds it: locked and advanced by one UPDATE, its
/// seqs then handed out in memory.
struct Room {
    private: bool,
    epoch: u64,
    /// The last seq handed out so far (before the batch, at first).
    last_seq: i64,
    /// What the UPDATE set `last_seq` to: room for every send of the batch.
    reserved: i64,
}

/// The idempotency key of a send.
type Key<'a> = (&'a str, &'a str, &'a str);

fn key(send: &InboundSend) -> Key<'_> {
    (&send.room, &send.sender, &send.client_id)
}

/// Nothing here reads the clock: every time stored comes from the records
/// (the edge's `received_at`), so a replay of the topic writes the same rows.
///
/// Almost no batch holds a send that is stored already (that takes a retry
/// after a lost ack, a rebalance, or a replay over stored rows), yet looking
/// every send up by id was a quarter of a batch's SQL. So a batch is first
/// written as if none were stored, inside a savepoint; only when a row
/// turns out to exist (the COPY fails on its id) is that undone and the
/// batch written again after the lookup. On SQLite, where a lookup is a
/// call into the same process, the savepoint and an upsert cost more than
/// they saved (sbbench store, one run: 24,500-25,900 rows/s
/// looking first, 22,900-24,000 not), so it looks first.
pub(super) async fn persist(
    tx: &mut Tx,
    sends: &[&InboundSend],
    names: &mut Names,
) -> Result<Vec<Outcome>, StoreError> {
    if tx.postgres().is_some() {
        tx.execute(Statement::new("SAVEPOINT persist_batch")).await?;
        let written = write(tx, sends, Lookup::AfterConflict, names).await?;
        if written.is_none() {
            tx.execute(Statement::new("ROLLBACK TO SAVEPOINT persist_batch")).await?;
        }
        tx.execute(Statement::new("RELEASE SAVEPOINT persist_batch")).await?;
        if let Some(outcomes) = written {
            return Ok(outcomes);
        }
    }
    Ok(write(tx, sends, Lookup::First, names).await?.expect("a batch written after the lookup meets no stored row"))
}

/// Users' display names as one transaction sees them: read from the table
/// once per user, changed in memory as sends bring new ones, and written
/// once, at the end ([`Names::write`]). Transactions of other lanes or
/// persisters change names too, and each writes its changes in one
/// statement in id order, so they wait for each other instead of
/// deadlocking; an upsert per run of sends (a transaction has several when
/// read markers or commands come between) locked them in several orders.
#[derive(Debug, Default)]
pub(super) struct Names {
    /// The latest name of each user this transaction has looked up or set.
    known: HashMap<String, String>,
    /// The names this transaction changed, to be written.
    changed: BTreeMap<String, String>,
}

impl Names {
    /// A user's latest name: changed by this batch (`renamed`), else known to the transaction.
    fn latest<'a>(&'a self, renamed: &HashMap<&str, &'a str>, user: &str) -> Option<&'a str> {
        renamed.get(user).copied().or_else(|| self.known.get(user).map(String::as_str))
    }

    /// Takes in the names a batch changed, once the batch is written.
    fn renamed(&mut self, renamed: HashMap<&str, &str>) {
        for (user, name) in renamed {
            self.known.insert(user.to_owned(), name.to_owned());
            self.changed.insert(user.to_owned(), name.to_owned());
        }
    }

    /// Writes the changed names (see [`upsert_names`]).
    pub(super) async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        upsert_names(tx, &self.changed).await
    }
}

/// When [`write`] looks the batch's sends up among the stored messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Not at all: the rows go in with ON CONFLICT DO NOTHING, and a row
    /// that was not inserted makes the write give up (`None`).
    AfterConflict,
    /// Before anything is written; a conflict then is an error.
    First,
}

async fn write(
    tx: &mut Tx,
    sends: &[&InboundSend],
    lookup: Lookup,
    names: &mut Names,
) -> Result<Option<Vec<Outcome>>, StoreError> {
    let mut rooms = reserve_seqs(tx, sends).await?;
    let members = private_members(tx, sends, &rooms).await?;
    let stored = match lookup {
        Lookup::First => already_stored(tx, sends).await?,
        Lookup::AfterConflict => HashMap::new(),
    };
    let erased = erased_by_resets(tx, sends, &rooms, &stored).await?;
    load_names(tx, sends, names).await?;

    let mut outcomes = Vec::with_capacity(sends.len());
    // Names this batch changes, each sender's latest: taken into `names`
    // only once the batch is written (a write given up leaves them out).
    let mut renamed: HashMap<&str, &str> = HashMap::new();
    // Index into outcomes of each send this batch stores, for repeats within it.
    let mut stored_now: HashMap<Key<'_>, usize> = HashMap::new();
    for &send in sends {
        let room = rooms.get_mut(send.room.as_str()).expect("every room of the batch is locked");
        if room.private && !members.contains(&(send.room.as_str(), send.sender.as_str())) {
            outcomes.push(Outcome::Rejected {
                code: ErrorCode::Forbidden,
                message: format!("you are not a member of room {:?}", send.room),
            });
            continue;
        }
        let epoch = room.epoch;
        if erased.contains(&key(send)) {
            outcomes.push(Outcome::Erased);
            continue;
        }
        if let Some(message) = stored.get(&key(send)) {
            outcomes
                .push(Outcome::Stored { message: StoredMessage { epoch, message: message.clone() }, duplicate: true });
            continue;
        }
        if let Some(&index) = stored_now.get(&key(send)) {
            let Outcome::Stored { message, .. } = &outcomes[index] else { unreachable!("indexes a stored send") };
            let message = message.clone();
            outcomes.push(Outcome::Stored { message, duplicate: true });
            continue;
        }
        // The token's name (stored for later when it changed), else the latest one known.
        let sender_name = match &send.sender_name {
            Some(name) => {
                if names.latest(&renamed, &send.sender) != Some(name) {
                    renamed.insert(&send.sender, name);
                }
                name.clone()
            }
            None => names.latest(&renamed, &send.sender).unwrap_or(&send.sender).to_owned(),
        };
        room.last_seq += 1;
        let message = MessageFrame {
            room: send.room.clone(),
            seq: room.last_seq as u64,
            id: message_id(&send.room, &send.sender, &send.client_id).to_string(),
            client_id: send.client_id.clone(),
            sender: send.sender.clone(),
            sender_name,
            body: send.body.clone(),
            // When the edge accepted the send, from the record, not this
            // clock: a replay of the topic stores the same row.
            sent_at: send.received_at,
        };
        stored_now.insert(key(send), outcomes.len());
        outcomes.push(Outcome::Stored { message: StoredMessage { epoch, message }, duplicate: false });
    }

    let new_rows: Vec<&MessageFrame> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Stored { message, duplicate: false } => Some(&message.message),
            _ => None,
        })
        .collect();
    let inserted = insert_messages(tx, &new_rows, lookup).await?;
    if inserted < new_rows.len() {
        return Ok(None);
    }
    give_back_unused_seqs(tx, &rooms).await?;
    names.renamed(renamed);
    Ok(Some(outcomes))
}

/// Locks every room of the batch and, in the same UPDATE, advances its
/// `last_seq` by the number of sends the batch has for it, as if all were
/// stored; [`give_back_unused_seqs`] corrects the rooms where some were not.
/// The row lock holds to the end of the transaction, so no other persister
/// assigns seqs in these rooms meanwhile. One write per room per batch: a
/// separate lock and write-back doubled the room updates, the largest part
/// of a batch's time on PostgreSQL. Public rooms that do not exist yet come
/// into being with their first message, created when that message was sent.
async fn reserve_seqs<'a>(tx: &mut Tx, sends: &[&'a InboundSend]) -> Result<HashMap<&'a str, Room>, StoreError> {
    let marks = tx.marks();
    // Sends per room: how far each room's `last_seq` moves.
    let mut counts: HashMap<&'a str, i64> = HashMap::new();
    let mut first_sent: HashMap<&'a str, i64> = HashMap::new();
    for send in sends {
        *counts.entry(send.room.as_str()).or_default() += 1;
        first_sent.entry(send.room.as_str()).or_insert(send.received_at);
    }
    let wanted: Vec<&str> = distinct(sends.iter().map(|s| s.room.as_str()));
    let mut rooms = HashMap::with_capacity(wanted.len());
    advance_existing(tx, &wanted, &counts, &mut rooms).await?;
    let missing: Vec<&str> = wanted.iter().copied().filter(|r| !rooms.contains_key(r)).collect();
    if !missing.is_empty() {
        for chunk in missing.chunks(MAX_BINDS / 3) {
            let sql = format!(
                "INSERT INTO rooms (id, kind, created_at) VALUES {} ON CONFLICT (id) DO NOTHING",
                marks.tuples(chunk.len(), 3)
            );
            let mut statement = Statement::new(sql);
            for room in chunk {
                statement = statement.text(room).text(PUBLIC).int(first_sent[room]);
            }
            tx.execute(statement).await?;
        }
        advance_existing(tx, &missing, &counts, &mut rooms).await?;
    }
    Ok(rooms)
}

/// Advances each existing room of `wanted` by its count of sends and records it in `rooms`.
async fn advance_existing<'a>(
    tx: &mut Tx,
    wanted: &[&'a str],
    counts: &HashMap<&'a str, i64>,
    rooms: &mut HashMap<&'a str, Room>,
) -> Result<(), StoreError> {
    let marks = tx.marks();
    for chunk in wanted.chunks(MAX_BINDS / 2) {
        // VALUES columns are named column1, column2 in both PostgreSQL and SQLite.
        let sql = format!(
            "UPDATE rooms SET last_seq = last_seq + v.column2 FROM (VALUES {}) AS v WHERE rooms.id = v.column1 \
             RETURNING id, kind, epoch, last_seq",
            marks.tuples(chunk.len(), 2)
        );
        let mut statement = Statement::new(sql);
        for room in chunk {
            statement = statement.text(room).int(counts[room]);
        }
        for row in tx.fetch_all(statement).await? {
            let id = row.text("id")?;
            let Some((&name, &count)) = counts.get_key_value(id.as_str()) else { continue };
            let reserved = row.int("last_seq")?;
            let room = Room {
                private: row.text("kind")? == PRIVATE,
                epoch: row.int("epoch")? as u64,
                last_seq: reserved - count,
                reserved,
            };
            rooms.insert(name, room);
        }
    }
    Ok(())
}

/// (room, user) pairs of the batch's senders that are members of its private rooms.
async fn private_members<'a>(
    tx: &mut Tx,
    sends: &[&'a InboundSend],
    rooms: &HashMap<&str, Room>,
) -> Result<HashSet<(&'a str, &'a str)>, StoreError> {
    let marks = tx.marks();
    let asking: Vec<(&str, &str)> =
        distinct(sends.iter().filter(|s| rooms[s.room.as_str()].private).map(|s| (s.room.as_str(), s.sender.as_str())));
    let mut members = HashSet::new();
    for chunk in asking.chunks(MAX_BINDS / 2) {
        let private: Vec<&str> = distinct(chunk.iter().map(|(room, _)| *room));
        let users: Vec<&str> = distinct(chunk.iter().map(|(_, user)| *user));
        let sql = format!(
            "SELECT room, user_id FROM room_members WHERE room IN ({}) AND user_id IN ({})",
            marks.list(1, private.len()),
            marks.list(1 + private.len(), users.len())
        );
        for row in tx.fetch_all(Statement::new(sql).texts(&private).texts(&users)).await? {
            let (room, user) = (row.text("room")?, row.text("user_id")?);
            if let Some(pair) = chunk.iter().find(|(r, u)| *r == room && *u == user) {
                members.insert(*pair);
            }
        }
    }
    Ok(members)
}

/// Messages of the batch that an earlier attempt already stored, by key.
async fn already_stored<'a>(
    tx: &mut Tx,
    sends: &[&'a InboundSend],
) -> Result<HashMap<Key<'a>, MessageFrame>, StoreError> {
    let marks = tx.marks();
    let by_id: HashMap<String, Key<'a>> =
        sends.iter().map(|&s| (message_id(&s.room, &s.sender, &s.client_id).to_string(), key(s))).collect();
    let ids: Vec<&str> = by_id.keys().map(String::as_str).collect();
    let mut stored = HashMap::new();
    for chunk in ids.chunks(MAX_BINDS) {
        let sql = format!(
            "SELECT room, seq, id, client_id, sender, sender_name, body, sent_at FROM messages WHERE id IN ({})",
            marks.list(1, chunk.len())
        );
        for row in tx.fetch_all(Statement::new(sql).texts(chunk)).await? {
            let message = message_from_row(&row)?;
            // The id is derived from the key; matching on the key itself keeps
            // the answer exact even for ids written by something else.
            if let Some(&key) = by_id.get(&message.id)
                && key == (message.room.as_str(), message.sender.as_str(), message.client_id.as_str())
            {
                stored.insert(key, message);
            }
        }
    }
    Ok(stored)
}

/// Sends of the batch that were stored once and deleted by a history
/// reset since. Only rooms that were ever reset (epoch above 1) can have
/// them, so at steady load this is no statement at all.
async fn erased_by_resets<'a>(
    tx: &mut Tx,
    sends: &[&'a InboundSend],
    rooms: &HashMap<&str, Room>,
    stored: &HashMap<Key<'a>, MessageFrame>,
) -> Result<HashSet<Key<'a>>, StoreError> {
    let marks = tx.marks();
    let by_id: HashMap<String, Key<'a>> = sends
        .iter()
        .filter(|s| rooms[s.room.as_str()].epoch > 1 && !stored.contains_key(&key(s)))
        .map(|&s| (message_id(&s.room, &s.sender, &s.client_id).to_string(), key(s)))
        .collect();
    let ids: Vec<&str> = by_id.keys().map(String::as_str).collect();
    let mut erased = HashSet::new();
    for chunk in ids.chunks(MAX_BINDS) {
        let sql = format!("SELECT id FROM reset_messages WHERE id IN ({})", marks.list(1, chunk.len()));
        for row in tx.fetch_all(Statement::new(sql).texts(chunk)).await? {
            if let Some(key) = by_id.get(&row.text("id")?) {
                erased.insert(*key);
            }
        }
    }
    Ok(erased)
}

/// Looks up the stored display names of the batch's senders that the
/// transaction has not seen yet: the name of those who send without one,
/// and what those who send with one would change. Read without a lock, so
/// a name that did not change is not written: an upsert locks its row even
/// when it changes nothing, and users are shared by every room, so
/// transactions of other partitions (another persister) waited on each
/// other's commits for the same users.
async fn load_names(tx: &mut Tx, sends: &[&InboundSend], names: &mut Names) -> Result<(), StoreError> {
    let marks = tx.marks();
    let senders: Vec<&str> = distinct(sends.iter().map(|s| s.sender.as_str()))
        .into_iter()
        .filter(|s| !names.known.contains_key(*s))
        .collect();
    for chunk in senders.chunks(MAX_BINDS) {
        let sql = format!("SELECT id, display_name FROM users WHERE id IN ({})", marks.list(1, chunk.len()));
        for row in tx.fetch_all(Statement::new(sql).texts(chunk)).await? {
            names.known.insert(row.text("id")?, row.text("display_name")?);
        }
    }
    Ok(())
}

/// The names a transaction changed, each user's latest. One row per user
/// per statement: PostgreSQL refuses to update a row twice in one INSERT.
/// Users are written in id order, so transactions of other lanes and
/// partitions that change the same users wait for each other instead of
/// deadlocking.
async fn upsert_names(tx: &mut Tx, named: &BTreeMap<String, String>) -> Result<(), StoreError> {
    let marks = tx.marks();
    let named: Vec<(&String, &String)> = named.iter().collect();
    for chunk in named.chunks(MAX_BINDS / 2) {
        let sql = format!(
            "INSERT INTO users (id, display_name) VALUES {} ON CONFLICT (id) DO UPDATE \
             SET display_name = excluded.display_name WHERE users.display_name <> excluded.display_name",
            marks.tuples(chunk.len(), 2)
        );
        let mut statement = Statement::new(sql);
        for (user, name) in chunk {
            statement = statement.text(user).text(name);
        }
        tx.execute(statement).await?;
    }
    Ok(())
}

/// Inserts the rows and returns how many went in: fewer than asked only
/// when a message with the same id is stored already and `lookup` says the
/// batch was written without looking (the batch is then written again, see
/// [`persist`]).
async fn insert_messages(tx: &mut Tx, rows: &[&MessageFrame], lookup: Lookup) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    match tx.postgres() {
        Some(conn) => copy_messages(conn, rows, lookup).await,
        // SQLite looks the batch up first (see [`persist`]): no row is stored already.
        None => insert_messages_as_values(tx, rows).await,
    }
}

/// PostgreSQL: the rows go in through `COPY ... FROM STDIN` in binary
/// format (see [`copy_data`]), PostgreSQL's bulk path: it takes the rows
/// as they are, with no statement or text to parse, and writes them a page
/// at a time. The INSERT before it took each column as a JSON array that
/// the server zipped back into rows: parsing the arrays was a quarter of
/// the server's time in a replay (perf), and the server used twice the CPU
/// per row of a plain `COPY` of the same rows. The store alone (`sbbench
/// store --lanes 2`), against the INSERT in the same run: 87,800-90,500 ->
/// 90,300-99,700 rows/s in batches of 1,000 over 1,000 rooms,
/// 154,700-171,000 -> 189,100-197,000 in batches of 5,000 over 100 rooms.
/// A stored id fails the COPY (`messages_id_key`) inside the batch's
/// savepoint, which [`persist`] then rolls back; no ON CONFLICT clause,
/// which would look every row up first.
async fn copy_messages(
    conn: &mut sqlx::PgConnection,
    rows: &[&MessageFrame],
    lookup: Lookup,
) -> Result<usize, StoreError> {
    let data = copy_data(rows)?;
    let mut copy = conn
        .copy_in_raw(
            "COPY messages (room, seq, id, sender, sender_name, client_id, body, sent_at) FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(data).await?;
    match copy.finish().await {
        Ok(copied) => Ok(copied as usize),
        Err(sqlx::Error::Database(e))
            if lookup == Lookup::AfterConflict
                && e.code().as_deref() == Some(UNIQUE_VIOLATION)
                && e.constraint() == Some("messages_id_key") =>
        {
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}

/// Rows in `COPY`'s binary format, in the column order of
/// [`copy_messages`]: a signature, then per row its field count and each
/// field as a length and its bytes (text as UTF-8, bigint as 8 bytes, big
/// endian), then -1. No escaping: a body is its bytes whatever it holds.
fn copy_data(rows: &[&MessageFrame]) -> Result<Vec<u8>, sqlx::Error> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    const FIELDS: i16 = 8;
    fn text(out: &mut Vec<u8>, value: &str) -> Result<(), sqlx::Error> {
        let len = i32::try_from(value.len())
            .map_err(|_| sqlx::Error::Encode(format!("a text of {} bytes is too long to store", value.len()).into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    fn int(out: &mut Vec<u8>, value: i64) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    let texts: usize = rows
        .iter()
        .map(|m| m.room.len() + m.id.len() + m.sender.len() + m.sender_name.len() + m.client_id.len() + m.body.len())
        .sum();
    let mut out = Vec::with_capacity(SIGNATURE.len() + 10 + rows.len() * (2 + 6 * 4 + 2 * 12) + texts);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
    for m in rows {
        out.extend_from_slice(&FIELDS.to_be_bytes());
        text(&mut out, &m.room)?;
        int(&mut out, m.seq as i64);
        text(&mut out, &m.id)?;
        text(&mut out, &m.sender)?;
        text(&mut out, &m.sender_name)?;
        text(&mut out, &m.client_id)?;
        text(&mut out, &m.body)?;
        int(&mut out, m.sent_at);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

/// PostgreSQL's code for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// SQLite: multi-row VALUES, as many rows per statement as its bind limit allows.
async fn insert_messages_as_values(tx: &mut Tx, rows: &[&MessageFrame]) -> Result<usize, StoreError> {
    let mut inserted = 0;
    for chunk in rows.chunks(MAX_BINDS / 8) {
        let sql = format!(
            "INSERT INTO messages (room, seq, id, sender, sender_name, client_id, body, sent_at) VALUES {}",
            Marks::Positional.tuples(chunk.len(), 8)
        );
        let mut statement = Statement::new(sql);
        for m in chunk {
            statement = statement
                .text(&m.room)
                .int(m.seq as i64)
                .text(&m.id)
                .text(&m.sender)
                .text(&m.sender_name)
                .text(&m.client_id)
                .text(&m.body)
                .int(m.sent_at);
        }
        inserted += tx.execute(statement).await? as usize;
    }
    Ok(inserted)
}

/// Sets `last_seq` back to the last seq handed out, in the rooms where
/// some sends were not stored (repeats, refusals), so seqs stay gapless. At
/// steady load no room needs it and this is no statement at all.
async fn give_back_unused_seqs(tx: &mut Tx, rooms: &HashMap<&str, Room>) -> Result<(), StoreError> {
    let marks = tx.marks();
    let unused: Vec<(&str, i64)> = rooms
        .iter()
        .filter(|(_, room)| room.last_seq != room.reserved)
        .map(|(id, room)| (*id, room.last_seq))
        .collect();
    for chunk in unused.chunks(MAX_BINDS / 2) {
        let sql = format!(
            "UPDATE rooms SET last_seq = v.column2 FROM (VALUES {}) AS v WHERE rooms.id = v.column1",
            marks.tuples(chunk.len(), 2)
        );
        let mut statement = Statement::new(sql);
        for (room, seq) in chunk {
            statement = statement.text(room).int(*seq);
        }
        tx.execute(statement).await?;
    }
    Ok(())
}

/// How a statement marks its parameters: `$1, $2, ...` for PostgreSQL,
/// plain `?` for SQLite. SQLite looks each `$N` up among the names before
/// it, when it parses the statement and again when sqlx binds it, so a
/// 1,000-parameter statement cost half a million string comparisons twice
/// (7% of the embedded default's CPU at saturation, perf). Every statement
/// here binds its values in order, so `?` says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marks {
    Numbered,
    Positional,
}

impl Marks {
    /// The marks of the connection's backend.
    pub(super) fn of(conn: &sqlx::AnyConnection) -> Self {
        if is_sqlite(conn) { Marks::Positional } else { Marks::Numbered }
    }

    /// `count` parameters, numbered from `first`: `$3, $4` or `?, ?`.
    pub(super) fn list(self, first: usize, count: usize) -> String {
        match self {
            Marks::Numbered => (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", "),
            Marks::Positional => vec!["?"; count].join(", "),
        }
    }

    /// `rows` tuples of `width` parameters: `($1, $2), ($3, $4)` or `(?, ?), (?, ?)`.
    fn tuples(self, rows: usize, width: usize) -> String {
        (0..rows).map(|r| format!("({})", self.list(1 + r * width, width))).collect::<Vec<_>>().join(", ")
    }
}

/// The distinct values, in first-seen order.
fn distinct<T: Eq + std::hash::Hash + Copy>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_marks() {
        assert_eq!(Marks::Numbered.list(3, 2), "$3, $4");
        assert_eq!(Marks::Numbered.tuples(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Marks::Positional.tuples(2, 2), "(?, ?), (?, ?)");
    }
}
