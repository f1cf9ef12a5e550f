//! The SQL store (sqlx `Any`: PostgreSQL in production, SQLite for the
//! embedded default). One dialect serves both: `$N` parameters, TEXT/BIGINT
//! columns, `ON CONFLICT`, `RETURNING`. What differs: a batch's large
//! statements mark parameters as each backend parses fastest, PostgreSQL
//! takes a batch's messages through `COPY` on a native connection
//! (`store/batch.rs`, `store/tx.rs`), and PostgreSQL leaves room in the
//! rooms table's pages and compares text as bytes ([`Store::migrate`]).
//!
//! Rooms own a gapless sequence (`rooms.last_seq`); messages are unique on
//! their id, the UUID v5 of their idempotency key (room, sender, client id),
//! so persisting the same command twice returns the first stored message
//! unchanged.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Row};
use switchboard_schemas::envelope::{Event, Inbound, InboundSend, StoredMessage};
use switchboard_schemas::protocol::{ErrorCode, MessageFrame};
use thiserror::Error;

mod batch;
mod reads;
mod rooms;
mod tx;

use tx::{Columns, Tx};

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Migrations failed: an operator must look.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
}

impl StoreError {
    /// True when the same call may succeed later (connection lost, pool
    /// exhausted, lock contention), false for a bug or a bad schema.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Migrate(_) => false,
            StoreError::Query(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                ) || is_transient_database_error(e)
            }
        }
    }
}

/// Database errors worth retrying: PostgreSQL serialization failure,
/// deadlock, shutdown and connection limits; SQLite busy/locked. Others
/// (constraint violations, invalid text) fail the same way every time.
fn is_transient_database_error(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else { return false };
    matches!(
        db.code().as_deref(),
        Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "08006" | "08003" | "5" | "6")
    )
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => StoreError::Unavailable(e),
            other => StoreError::Query(other),
        }
    }
}

/// What a room looks like to a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomState {
    pub epoch: u64,
    pub last_seq: u64,
    /// Members only: an edge checks again after a join, since a removal
    /// may have been applied meanwhile.
    pub private: bool,
}

/// Answer to "may this user read this room?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Allowed; the room's current state (a public room not created yet is
    /// epoch 1, seq 0).
    Granted(RoomState),
    Forbidden,
}

/// Result of applying one record of `sb.inbound`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A send stored now, or found already stored under the same idempotency key.
    Stored { message: StoredMessage, duplicate: bool },
    /// A send refused for a reason the sender must hear about.
    Rejected { code: ErrorCode, message: String },
    /// A send stored once and then deleted by a history reset: applied
    /// again, it stays deleted (nothing to store or publish).
    Erased,
    /// A room command applied now, or found applied before (`duplicate`);
    /// `event` is what the room's connections must hear of it.
    Applied { event: Option<Event>, duplicate: bool },
}

impl Outcome {
    /// What this outcome puts on `sb.events`: the stored message, or what
    /// the room command did. `None` for a refusal (it goes to the sender's
    /// node, not to the room) and for an outcome with nothing to say.
    pub fn into_event(self) -> Option<Event> {
        match self {
            Outcome::Stored { message, .. } => Some(Event::Message(message)),
            Outcome::Applied { event, .. } => event,
            Outcome::Rejected { .. } | Outcome::Erased => None,
        }
    }
}

/// SQLite, not PostgreSQL: see the module's note on what differs.
fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("sqlite")
}

const PUBLIC: &str = "public";
const PRIVATE: &str = "private";

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// PostgreSQL only: the native connections [`Store::apply`] writes
    /// through, for `COPY` (see `store/tx.rs`), as many as `pool` may have.
    /// Opened on first use: a process that only reads (an edge) opens none,
    /// and one that writes keeps `pool` for its migration and reads (a
    /// persister: one connection more than its lanes).
    writer: Option<PgPool>,
}

impl Store {
    /// Connects to `url` (`postgres://...` or `sqlite://...`). SQLite gets WAL
    /// mode so the edge's readers and the persister's writer do not block
    /// each other.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if is_sqlite(conn) {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(StoreError::Unavailable)?;
        let sqlite = pool.connect_options().database_url.scheme().eq_ignore_ascii_case("sqlite");
        let writer = match sqlite {
            true => None,
            false => Some(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy(url)
                    .map_err(StoreError::Unavailable)?,
            ),
        };
        Ok(Self { pool, writer })
    }

    /// How many transactions that write may usefully run at once: one on
    /// SQLite, which takes one writer at a time (a second one that read
    /// first fails with SQLITE_BUSY instead of waiting), the writing
    /// pool's size on PostgreSQL.
    pub fn concurrent_writers(&self) -> usize {
        match &self.writer {
            Some(writer) => writer.options().get_max_connections() as usize,
            None => 1,
        }
    }

    /// Applies the migrations in `core/migrations` (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        let mut conn = self.pool.acquire().await?;
        if !is_sqlite(&conn) {
            // Every batch rewrites its rooms' `last_seq`. With full pages
            // PostgreSQL put each new row version on another page and
            // indexed it again: 4% of room updates were in place, and a
            // 1,000-room update took 9 ms. Half-full pages keep 87% in place
            // and took it to 6 ms. PostgreSQL-only syntax, so not in the
            // shared migrations; setting it again is harmless.
            sqlx::query("ALTER TABLE rooms SET (fillfactor = 50)").execute(&mut *conn).await?;
            drop(conn);
            self.compare_bytes().await?;
        }
        Ok(())
    }

    /// PostgreSQL: gives every text column of the store the "C" collation,
    /// so ids, rooms and users compare as bytes. Under the database's
    /// collation (anything but "C", even "C.UTF-8") every comparison in the
    /// indexes went through the locale (strcoll): the store alone gained 3%
    /// without it (`sbbench store --lanes 2`, one run: 84,100 -> 87,000 and
    /// 77,800 -> 80,600 rows/s), more under a richer locale than this
    /// machine's. Ids have no linguistic order, so nothing reads differently.
    /// On a database made before, this rebuilds the tables' indexes once,
    /// with the tables locked meanwhile: run `sbctl migrate` before rolling
    /// out a version that brings it to a large database. SQLite compares
    /// bytes already; the statement is PostgreSQL's, so it is here and not
    /// in the shared migrations. Runs once: the columns already in "C" are
    /// skipped, and an advisory lock keeps two processes starting together
    /// from rebuilding the indexes twice.
    async fn compare_bytes(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('switchboard collation'))").execute(&mut *tx).await?;
        // One statement per table: its indexes are rebuilt once.
        for (table, columns) in text_columns_not_in_bytes(&mut *tx).await? {
            let alters: Vec<String> =
                columns.iter().map(|c| format!("ALTER COLUMN \"{c}\" TYPE text COLLATE \"C\"")).collect();
            sqlx::query(&format!("ALTER TABLE \"{table}\" {}", alters.join(", "))).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
    }

    /// Whether `user` may read `room`, and the room's current state.
    pub async fn access(&self, room: &str, user: &str) -> Result<Access, StoreError> {
        let row = sqlx::query("SELECT kind, epoch, last_seq FROM rooms WHERE id = $1")
            .bind(room)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(Access::Granted(RoomState { epoch: 1, last_seq: 0, private: false }));
        };
        let kind: String = row.try_get("kind")?;
        let state = RoomState {
            epoch: row.try_get::<i64, _>("epoch")? as u64,
            last_seq: row.try_get::<i64, _>("last_seq")? as u64,
            private: kind == PRIVATE,
        };
        if kind == PRIVATE && !self.is_member(room, user).await? {
            return Ok(Access::Forbidden);
        }
        Ok(Access::Granted(state))
    }

    async fn is_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(IS_MEMBER).bind(room).bind(user).fetch_optional(&self.pool).await?.is_some())
    }

    /// Messages with `after < seq <= upto`, oldest first, at most `limit`.
    pub async fn messages_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<MessageFrame>, StoreError> {
        let rows = sqlx::query(
            "SELECT room, seq, id, client_id, sender, sender_name, body, sent_at FROM messages \
             WHERE room = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .bind(room)
        .bind(after as i64)
        .bind(upto as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// The last seq of each room of `rooms` that exists, one query per
    /// thousand rooms: after a join storm the edge checks thousands of
    /// rooms for messages routed before their route, and reading each
    /// room's messages one query at a time held up its deliveries.
    pub async fn last_seqs(&self, rooms: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let mut last = HashMap::with_capacity(rooms.len());
        let mut conn = self.pool.acquire().await?;
        let marks = batch::Marks::of(&conn);
        for chunk in rooms.chunks(batch::MAX_BINDS) {
            let sql = format!("SELECT id, last_seq FROM rooms WHERE id IN ({})", marks.list(1, chunk.len()));
            let query = chunk.iter().fold(sqlx::query(&sql), |query, room| query.bind(*room));
            for row in query.fetch_all(&mut *conn).await? {
                last.insert(row.try_get::<String, _>("id")?, row.try_get::<i64, _>("last_seq")? as u64);
            }
        }
        Ok(last)
    }

    /// Up to `limit` messages of a room, newest first: those before
    /// `before` (a seq), or the newest ones.
    pub async fn messages_before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<MessageFrame>, StoreError> {
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let rows = sqlx::query(
            "SELECT room, seq, id, client_id, sender, sender_name, body, sent_at FROM messages \
             WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(room)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// The last seq `user` has read in `room` (0: nothing yet).
    pub async fn read_position(&self, room: &str, user: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT seq FROM read_positions WHERE room = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("seq")? as u64,
            None => 0,
        })
    }

    /// Who hears of a room's messages when away, sorted: a private room's
    /// members; for a public room, which has no member list, the users who
    /// have read it (a read position), that is, who follow it.
    pub async fn audience(&self, room: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id FROM room_members WHERE room = $1 \
             AND EXISTS (SELECT 1 FROM rooms WHERE id = $1 AND kind = 'private') \
             UNION SELECT user_id FROM read_positions WHERE room = $1 \
             AND NOT EXISTS (SELECT 1 FROM rooms WHERE id = $1 AND kind = 'private') ORDER BY 1",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get::<String, _>(0)?)).collect()
    }

    /// Whether the persister has applied the room command with this id.
    pub async fn command_applied(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM room_commands WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Number of stored messages in a room (operators, tests).
    pub async fn count_messages(&self, room: &str) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM messages WHERE room = $1").bind(room).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Applies a batch of `sb.inbound` records in one transaction, in
    /// order: sends (permission check, idempotent insert, gapless seq,
    /// enrichment) and room commands. Outcomes are in input order. Each run
    /// of sends between commands costs a few statements, not a few per
    /// message (see `store/batch.rs`); commands are rare and go one by one.
    pub async fn apply<R: Borrow<Inbound> + Sync>(&self, records: &[R]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = match &self.writer {
            Some(writer) => Tx::Postgres(writer.begin().await?),
            None => Tx::Sqlite(self.pool.begin().await?),
        };
        let mut outcomes = Vec::with_capacity(records.len());
        let mut names = batch::Names::default();
        let mut rest = records;
        while let Some(first) = rest.first() {
            // Commands and markers one by one; a run of sends as one batch.
            let single = match first.borrow() {
                Inbound::Room(command) => Some(rooms::apply(&mut tx, command).await?),
                Inbound::Read(marker) => Some(reads::apply(&mut tx, marker).await?),
                Inbound::Send(_) => None,
            };
            if let Some(outcome) = single {
                outcomes.push(outcome);
                rest = &rest[1..];
                continue;
            }
            let sends: Vec<&InboundSend> = rest
                .iter()
                .map_while(|r| match r.borrow() {
                    Inbound::Send(send) => Some(send),
                    Inbound::Room(_) | Inbound::Read(_) => None,
                })
                .collect();
            outcomes.extend(batch::persist(&mut tx, &sends, &mut names).await?);
            rest = &rest[sends.len()..];
        }
        names.write(&mut tx).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Every row of every table, in a fixed order, one line per row: what
    /// two databases must agree on to hold the same rooms, members, names
    /// and messages (`sbctl replay` checks, the recovery tests compare).
    pub async fn dump(&self) -> Result<Vec<String>, StoreError> {
        let tables = [
            ("rooms", "id, kind, epoch, last_seq, created_at", "id"),
            ("room_members", "room, user_id", "room, user_id"),
            ("users", "id, display_name", "id"),
            ("messages", "room, seq, id, sender, sender_name, client_id, body, sent_at", "room, seq"),
            ("room_commands", "id, room, action, issued_by, issued_at, epoch", "id"),
            ("reset_messages", "id, room", "id"),
            ("read_positions", "room, user_id, seq", "room, user_id"),
        ];
        let mut lines = Vec::new();
        for (table, columns, order) in tables {
            // Column lists are constants above, never input.
            let sql = format!("SELECT {columns} FROM {table} ORDER BY {order}");
            let mut rows = sqlx::query(&sql).fetch(&self.pool);
            while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                let mut line = String::from(table);
                for i in 0..row.len() {
                    line.push('\t');
                    match row.try_get::<String, _>(i) {
                        Ok(text) => line.push_str(&serde_json::to_string(&text).expect("strings serialize")),
                        Err(_) => line.push_str(&row.try_get::<i64, _>(i)?.to_string()),
                    }
                }
                lines.push(line);
            }
        }
        Ok(lines)
    }
}

/// PostgreSQL: the store's text columns whose collation is not "C", by table.
async fn text_columns_not_in_bytes<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = current_schema() AND data_type = 'text' AND table_name <> '_sqlx_migrations' \
         AND collation_name IS DISTINCT FROM 'C' ORDER BY 1, 2",
    )
    .fetch_all(executor)
    .await?;
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        by_table.entry(row.try_get("t")?).or_default().push(row.try_get("c")?);
    }
    Ok(by_table)
}

/// A row when `user` ($2) is a member of `room` ($1): read on the pool
/// ([`Store::access`]) and inside the write transaction (`store/reads.rs`).
const IS_MEMBER: &str = "SELECT 1 FROM room_members WHERE room = $1 AND user_id = $2";

fn message_from_row(row: &impl Columns) -> Result<MessageFrame, StoreError> {
    Ok(MessageFrame {
        room: row.text("room")?,
        seq: row.int("seq")? as u64,
        id: row.text("id")?,
        client_id: row.text("client_id")?,
        sender: row.text("sender")?,
        sender_name: row.text("sender_name")?,
        body: row.text("body")?,
        sent_at: row.int("sent_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_schemas::envelope::Origin;
    use switchboard_schemas::room_command::{RoomAction, RoomCommand, RoomKind};

    impl Store {
        /// Sends only, as the persister would apply them.
        async fn persist(&self, sends: &[InboundSend]) -> Result<Vec<Outcome>, StoreError> {
            self.apply(&sends.iter().cloned().map(Inbound::Send).collect::<Vec<_>>()).await
        }
    }

    fn command(room: &str, action: RoomAction) -> Inbound {
        Inbound::Room(RoomCommand {
            id: format!("cmd-{:x}", fastrand::u64(..)),
            room: room.into(),
            issued_by: "test".into(),
            issued_at: RECEIVED_AT,
            action,
        })
    }

    async fn sqlite() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        (store, dir)
    }

    /// PostgreSQL named by `SB_TEST_POSTGRES_URL` (the real-cluster suite sets it).
    async fn postgres() -> Store {
        let url = std::env::var("SB_TEST_POSTGRES_URL").expect("SB_TEST_POSTGRES_URL names a test database");
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Room names unique to one run, so runs can share a database.
    fn room(name: &str) -> String {
        format!("{name}-{:x}", fastrand::u64(..))
    }

    fn send(room: &str, sender: &str, client_id: &str) -> InboundSend {
        InboundSend {
            room: room.into(),
            sender: sender.into(),
            sender_name: Some(sender.to_uppercase()),
            client_id: client_id.into(),
            body: format!("body {client_id}"),
            origin: Origin { node: "n".into(), conn: 1, reference: "r".into() },
            received_at: RECEIVED_AT,
        }
    }

    /// When the test's edge took its sends: far from this test's clock.
    const RECEIVED_AT: i64 = 1_700_000_000_123;

    fn seq_of(outcome: &Outcome) -> u64 {
        match outcome {
            Outcome::Stored { message, .. } => message.message.seq,
            other => panic!("not stored: {other:?}"),
        }
    }

    async fn seqs_are_gapless_and_idempotent(store: &Store) {
        let (r, q) = (room("r"), room("q"));
        let out = store.persist(&[send(&r, "a", "1"), send(&r, "b", "1"), send(&q, "a", "1")]).await.unwrap();
        assert_eq!(out.iter().map(seq_of).collect::<Vec<_>>(), vec![1, 2, 1]);

        // The same idempotency key again: alone, and twice inside one batch.
        let again = store.persist(&[send(&r, "a", "1"), send(&r, "a", "2"), send(&r, "a", "2")]).await.unwrap();
        assert_eq!(again.iter().map(seq_of).collect::<Vec<_>>(), vec![1, 3, 3]);
        assert!(matches!(again[0], Outcome::Stored { duplicate: true, .. }));
        assert!(matches!(again[2], Outcome::Stored { duplicate: true, .. }));
        assert_eq!(store.count_messages(&r).await.unwrap(), 3);

        let history = store.messages_between(&r, 1, 3, 10).await.unwrap();
        assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
        // Pages back through history, newest first.
        let seqs = |page: Vec<MessageFrame>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.messages_before(&r, None, 2).await.unwrap()), vec![3, 2]);
        assert_eq!(seqs(store.messages_before(&r, Some(2), 10).await.unwrap()), vec![1]);
        assert_eq!(seqs(store.messages_before(&r, Some(1), 10).await.unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(store.messages_before(&r, Some(u64::MAX), 1).await.unwrap()), vec![3]);
        assert_eq!(history[0].sender_name, "B");
        // The edge's time from the record, never the store's clock, so a
        // replay of the topic writes the same row.
        assert!(history.iter().all(|m| m.sent_at == RECEIVED_AT), "{history:?}");
        assert_eq!(
            store.access(&r, "z").await.unwrap(),
            Access::Granted(RoomState { epoch: 1, last_seq: 3, private: false })
        );

        // A new name is stored and given to the sender's later nameless sends.
        let mut renamed = send(&q, "b", "2");
        renamed.sender_name = Some("Bea".into());
        let mut nameless = send(&q, "b", "3");
        nameless.sender_name = None;
        store.persist(&[renamed]).await.unwrap();
        let out = store.persist(&[nameless]).await.unwrap();
        let Outcome::Stored { message, .. } = &out[0] else { panic!("{out:?}") };
        assert_eq!(message.message.sender_name, "Bea");
    }

    async fn private_rooms_need_membership(store: &Store) {
        let secret = room("secret");
        let create = command(&secret, RoomAction::Create { kind: RoomKind::Private, members: vec!["alice".into()] });
        store.apply(&[create]).await.unwrap();
        assert_eq!(store.access(&secret, "mallory").await.unwrap(), Access::Forbidden);
        assert!(matches!(store.access(&secret, "alice").await.unwrap(), Access::Granted(_)));
        let out = store.persist(&[send(&secret, "mallory", "1"), send(&secret, "alice", "1")]).await.unwrap();
        assert!(matches!(out[0], Outcome::Rejected { code: ErrorCode::Forbidden, .. }));
        assert_eq!(seq_of(&out[1]), 1, "a rejection consumes no seq");
        assert_eq!(
            store.access(&secret, "alice").await.unwrap(),
            Access::Granted(RoomState { epoch: 1, last_seq: 1, private: true })
        );
        // Commands and sends in one batch apply in their order: alice's
        // first send is stored, the one after her removal refused.
        let remove = command(&secret, RoomAction::RemoveMember { user: "alice".into() });
        let out = store
            .apply(&[
                Inbound::Send(send(&secret, "alice", "2")),
                remove.clone(),
                Inbound::Send(send(&secret, "alice", "3")),
            ])
            .await
            .unwrap();
        assert_eq!(seq_of(&out[0]), 2);
        let removed = Event::MemberRemoved { room: secret.clone(), user: "alice".into() };
        assert_eq!(out[1], Outcome::Applied { event: Some(removed.clone()), duplicate: false });
        assert!(matches!(out[2], Outcome::Rejected { code: ErrorCode::Forbidden, .. }));
        // The same command again (a replayed batch): nothing changes, the event is the same.
        let again = store.apply(&[remove]).await.unwrap();
        assert_eq!(again[0], Outcome::Applied { event: Some(removed), duplicate: true });

        // Adding a member to a room nobody made creates it private.
        let fresh = room("fresh");
        store.apply(&[command(&fresh, RoomAction::AddMember { user: "bob".into() })]).await.unwrap();
        assert_eq!(store.access(&fresh, "alice").await.unwrap(), Access::Forbidden);
        assert!(matches!(store.access(&fresh, "bob").await.unwrap(), Access::Granted(_)));
    }

    fn marker(room: &str, user: &str, seq: u64) -> Inbound {
        Inbound::Read(switchboard_schemas::read_marker::ReadMarker {
            room: room.into(),
            user: user.into(),
            seq,
            origin: Origin { node: "n".into(), conn: 1, reference: "r".into() },
        })
    }

    /// Read positions move forward only, stop at the room's last seq (as
    /// the log had it at that point), are refused in a private room the
    /// user may not read, and are part of what a replay must rebuild.
    async fn read_positions_move_forward_only(store: &Store) {
        let r = room("reads");
        let read = |user: &str, seq| marker(&r, user, seq);
        let event = |seq| Outcome::Applied {
            event: Some(Event::Read { room: r.clone(), user: "a".into(), seq }),
            duplicate: false,
        };
        let unchanged = Outcome::Applied { event: None, duplicate: true };
        // Before any message there is nothing to have read.
        assert_eq!(store.apply(&[read("a", 3)]).await.unwrap(), std::slice::from_ref(&unchanged));
        let batch = [Inbound::Send(send(&r, "b", "1")), read("a", 5), Inbound::Send(send(&r, "b", "2")), read("a", 2)];
        let out = store.apply(&batch).await.unwrap();
        assert_eq!(out[1], event(1), "capped at the last seq when it was applied");
        assert_eq!(out[3], event(2));
        assert_eq!(store.apply(&[read("a", 1), read("a", 2)]).await.unwrap(), [unchanged.clone(), unchanged.clone()]);
        assert_eq!(store.read_position(&r, "a").await.unwrap(), 2);
        assert_eq!(store.read_position(&r, "nobody").await.unwrap(), 0);
        assert!(store.dump().await.unwrap().iter().any(|l| l.starts_with("read_positions\t") && l.contains(&r)));

        let secret = room("reads-private");
        store
            .apply(&[command(&secret, RoomAction::Create { kind: RoomKind::Private, members: vec!["a".into()] })])
            .await
            .unwrap();
        let out = store.apply(&[marker(&secret, "eve", 1)]).await.unwrap();
        assert!(matches!(out[0], Outcome::Rejected { code: ErrorCode::Forbidden, .. }), "{out:?}");

        store.apply(&[command(&r, RoomAction::ResetHistory)]).await.unwrap();
        assert_eq!(store.read_position(&r, "a").await.unwrap(), 0, "a reset clears the room's positions");
    }

    /// The catch-up's question: how far each room has got, for many rooms
    /// at once; rooms never written to are left out.
    async fn last_seqs_of_many_rooms(store: &Store) {
        let (a, b) = (room("last-a"), room("last-b"));
        store.persist(&[send(&a, "u", "1"), send(&a, "u", "2"), send(&b, "u", "1")]).await.unwrap();
        let mut asked: Vec<String> = (0..2_500).map(|i| room(&format!("last-none{i}"))).collect();
        asked.push(a.clone());
        asked.push(b.clone());
        let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
        let last = store.last_seqs(&asked).await.unwrap();
        assert_eq!(last, HashMap::from([(a, 2), (b, 1)]));
    }

    #[tokio::test]
    async fn sqlite_last_seqs_of_many_rooms() {
        last_seqs_of_many_rooms(&sqlite().await.0).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_last_seqs_of_many_rooms() {
        last_seqs_of_many_rooms(&postgres().await).await;
    }

    #[tokio::test]
    async fn sqlite_read_positions_move_forward_only() {
        read_positions_move_forward_only(&sqlite().await.0).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_read_positions_move_forward_only() {
        read_positions_move_forward_only(&postgres().await).await;
    }

    /// A reset starts a new epoch whose messages start at seq 1; applied
    /// twice (a retried batch) it starts one epoch, not two.
    async fn a_history_reset_starts_a_new_epoch_once(store: &Store) {
        let r = room("reset");
        store.persist(&[send(&r, "a", "1"), send(&r, "a", "2")]).await.unwrap();
        let reset = command(&r, RoomAction::ResetHistory);
        let batch = [reset.clone(), Inbound::Send(send(&r, "a", "3"))];
        let out = store.apply(&batch).await.unwrap();
        let reset_event = Event::HistoryReset { room: r.clone(), epoch: 2 };
        assert_eq!(out[0], Outcome::Applied { event: Some(reset_event.clone()), duplicate: false });
        let Outcome::Stored { message, .. } = &out[1] else { panic!("{out:?}") };
        assert_eq!((message.epoch, message.message.seq), (2, 1));
        assert_eq!(store.count_messages(&r).await.unwrap(), 1, "the old history is gone");

        // The sends from before the reset, applied again (a replay over this
        // database): they stay deleted.
        let old = store.persist(&[send(&r, "a", "1"), send(&r, "a", "2")]).await.unwrap();
        assert_eq!(old, vec![Outcome::Erased, Outcome::Erased]);
        let again = store.apply(&batch).await.unwrap();
        assert_eq!(again[0], Outcome::Applied { event: Some(reset_event), duplicate: true });
        assert!(matches!(again[1], Outcome::Stored { duplicate: true, .. }));
        assert_eq!(
            store.access(&r, "z").await.unwrap(),
            Access::Granted(RoomState { epoch: 2, last_seq: 1, private: false })
        );
    }

    /// Applying the same records to two empty databases writes the same rows:
    /// nothing stored comes from the clock.
    async fn the_same_records_write_the_same_rows(a: &Store, b: &Store) {
        let r = room("twin");
        let records = vec![
            command(&r, RoomAction::Create { kind: RoomKind::Private, members: vec!["a".into(), "b".into()] }),
            Inbound::Send(send(&r, "a", "1")),
            Inbound::Send(send(&r, "b", "1")),
            command(&r, RoomAction::RemoveMember { user: "b".into() }),
            Inbound::Send(send(&r, "b", "2")),
            Inbound::Send(send(&room("pub"), "c", "1")),
        ];
        a.apply(&records).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // One at a time, as a replay with other batch boundaries would.
        for record in &records {
            b.apply(std::slice::from_ref(record)).await.unwrap();
        }
        assert_eq!(a.dump().await.unwrap(), b.dump().await.unwrap());
    }

    #[tokio::test]
    async fn sqlite_a_history_reset_starts_a_new_epoch_once() {
        a_history_reset_starts_a_new_epoch_once(&sqlite().await.0).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_a_history_reset_starts_a_new_epoch_once() {
        a_history_reset_starts_a_new_epoch_once(&postgres().await).await;
    }

    #[tokio::test]
    async fn sqlite_the_same_records_write_the_same_rows() {
        let (a, _da) = sqlite().await;
        let (b, _db) = sqlite().await;
        the_same_records_write_the_same_rows(&a, &b).await;
    }

    /// A batch larger than one INSERT may bind (so it is split), over many
    /// rooms, with senders that send without a name after naming themselves.
    async fn large_batches_split_and_keep_order(store: &Store) {
        let rooms: Vec<String> = (0..40).map(|i| room(&format!("big{i}"))).collect();
        let mut sends = Vec::new();
        for i in 0..5_000 {
            let mut s = send(&rooms[i % rooms.len()], &format!("u{}", i % 70), &format!("c{i}"));
            if i >= 70 {
                s.sender_name = None;
            }
            sends.push(s);
        }
        let out = store.persist(&sends).await.unwrap();
        let mut next = vec![1u64; rooms.len()];
        for (i, outcome) in out.iter().enumerate() {
            assert_eq!(seq_of(outcome), next[i % rooms.len()], "send {i}");
            next[i % rooms.len()] += 1;
        }
        let Outcome::Stored { message, .. } = &out[4_999] else { panic!() };
        assert_eq!(message.message.sender_name, format!("U{}", 4_999 % 70), "the name given earlier is kept");
        for r in &rooms {
            assert_eq!(store.count_messages(r).await.unwrap(), 125);
            assert_eq!(
                store.access(r, "z").await.unwrap(),
                Access::Granted(RoomState { epoch: 1, last_seq: 125, private: false })
            );
        }
        // Replayed whole: nothing new, the same seqs.
        let again = store.persist(&sends).await.unwrap();
        assert!(again.iter().all(|o| matches!(o, Outcome::Stored { duplicate: true, .. })));
        assert_eq!(again.iter().map(seq_of).collect::<Vec<_>>(), out.iter().map(seq_of).collect::<Vec<_>>());
        for r in &rooms {
            let state = store.access(r, "z").await.unwrap();
            assert_eq!(
                state,
                Access::Granted(RoomState { epoch: 1, last_seq: 125, private: false }),
                "a replay hands out no seq"
            );
        }
        // New sends and, in a later statement of the batch, one stored
        // already: what the first statements wrote is undone, and the batch
        // written again around the stored one, without a gap.
        let mut mixed: Vec<InboundSend> =
            (0..1_000).map(|i| send(&rooms[i % rooms.len()], &format!("u{}", i % 70), &format!("d{i}"))).collect();
        mixed.push(sends[4_999].clone());
        let out = store.persist(&mixed).await.unwrap();
        let mut next = vec![126u64; rooms.len()];
        for (i, outcome) in out[..1_000].iter().enumerate() {
            assert!(matches!(outcome, Outcome::Stored { duplicate: false, .. }), "send {i}: {outcome:?}");
            assert_eq!(seq_of(outcome), next[i % rooms.len()], "send {i}");
            next[i % rooms.len()] += 1;
        }
        assert!(matches!(out[1_000], Outcome::Stored { duplicate: true, .. }));
        assert_eq!(seq_of(&out[1_000]), 125);
        for r in &rooms {
            assert_eq!(store.count_messages(r).await.unwrap(), 150);
        }
    }

    #[tokio::test]
    async fn sqlite_large_batches_split_and_keep_order() {
        large_batches_split_and_keep_order(&sqlite().await.0).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_large_batches_split_and_keep_order() {
        large_batches_split_and_keep_order(&postgres().await).await;
    }

    #[tokio::test]
    async fn sqlite_seqs_are_gapless_and_idempotent() {
        seqs_are_gapless_and_idempotent(&sqlite().await.0).await;
    }

    #[tokio::test]
    async fn sqlite_private_rooms_need_membership() {
        private_rooms_need_membership(&sqlite().await.0).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_seqs_are_gapless_and_idempotent() {
        seqs_are_gapless_and_idempotent(&postgres().await).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_private_rooms_need_membership() {
        private_rooms_need_membership(&postgres().await).await;
    }

    fn sender_name(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Stored { message, .. } => &message.message.sender_name,
            other => panic!("not stored: {other:?}"),
        }
    }

    /// A transaction writes the names it changed once, at its end, and its
    /// later sends (after a read marker, in another run of sends) already
    /// carry them; the next transaction reads them from the table.
    async fn names_changed_in_a_transaction_carry_over(store: &Store) {
        let (r, user) = (room("names"), room("user"));
        let named = |client_id: &str, name: Option<&str>| {
            Inbound::Send(InboundSend { sender_name: name.map(str::to_owned), ..send(&r, &user, client_id) })
        };
        let out = store
            .apply(&[
                named("1", Some("First")),
                marker(&r, "reader", 1),
                named("2", None),
                named("3", Some("Second")),
                marker(&r, "reader", 3),
                named("4", None),
            ])
            .await
            .unwrap();
        let names: Vec<&str> = [0, 2, 3, 5].iter().map(|&i| sender_name(&out[i])).collect();
        assert_eq!(names, ["First", "First", "Second", "Second"]);
        let next = store.apply(&[named("5", None)]).await.unwrap();
        assert_eq!(sender_name(&next[0]), "Second", "the transaction's last name was stored");
    }

    #[tokio::test]
    async fn sqlite_names_changed_in_a_transaction_carry_over() {
        names_changed_in_a_transaction_carry_over(&sqlite().await.0).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_names_changed_in_a_transaction_carry_over() {
        names_changed_in_a_transaction_carry_over(&postgres().await).await;
    }

    /// Text the store must keep byte for byte: quotes, backslashes, JSON
    /// escapes, control characters and characters outside the BMP, in
    /// every text column (PostgreSQL's batch carries its rows as `COPY`'s
    /// binary fields).
    async fn text_is_stored_as_sent(store: &Store) {
        let odd = "\"quoted\" \\ back\\slash \\u0041 \n\t\u{7f}\u{1} {\"a\":[1]} ✓ 😀";
        let r = room(odd);
        let mut first = send(&r, &format!("{odd} sender"), odd);
        first.sender_name = Some(format!("{odd} name"));
        first.body = odd.to_owned();
        let mut second = send(&r, "plain", "2");
        second.body = String::new();
        let out = store.persist(&[first.clone(), second]).await.unwrap();
        let stored = store.messages_between(&r, 0, 2, 10).await.unwrap();
        let Outcome::Stored { message, .. } = &out[0] else { panic!("{out:?}") };
        assert_eq!(stored[0], message.message);
        assert_eq!(
            (stored[0].room.as_str(), stored[0].sender.as_str(), stored[0].client_id.as_str()),
            (r.as_str(), first.sender.as_str(), odd)
        );
        assert_eq!((stored[0].body.as_str(), stored[0].sender_name.as_str()), (odd, format!("{odd} name").as_str()));
        assert_eq!(stored[1].body, "");
        // Sent again, the same key finds the stored row.
        let again = store.persist(&[first]).await.unwrap();
        assert!(matches!(again[0], Outcome::Stored { duplicate: true, .. }), "{again:?}");
    }

    #[tokio::test]
    async fn sqlite_text_is_stored_as_sent() {
        let (store, _dir) = sqlite().await;
        text_is_stored_as_sent(&store).await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_text_is_stored_as_sent() {
        text_is_stored_as_sent(&postgres().await).await;
    }

    /// Every text column compares bytes (collation "C"), whatever the
    /// database's collation, and migrating again changes nothing.
    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_text_columns_compare_bytes() {
        let store = postgres().await;
        store.migrate().await.unwrap();
        let other: Vec<String> = text_columns_not_in_bytes(&store.pool)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|(table, columns)| columns.into_iter().map(move |c| format!("{table}.{c}")))
            .collect();
        assert_eq!(other, Vec::<String>::new());
    }

    /// Two transactions at once (the persister's lanes) over different
    /// rooms, each changing the same two users' names, in opposite orders
    /// and split by read markers into several runs of sends: both commit.
    /// Written run by run, the names were locked in opposite orders and
    /// PostgreSQL broke the deadlock by failing one transaction.
    #[tokio::test]
    #[ignore = "needs PostgreSQL at SB_TEST_POSTGRES_URL; run by the real-cluster suite"]
    async fn postgres_lanes_changing_the_same_names_both_commit() {
        let store = postgres().await;
        let (one, two) = (room("one"), room("two"));
        for round in 0..10 {
            let (a, b) = (room("lane-a"), room("lane-b"));
            let renamed = |r: &str, user: &str, name: String| {
                Inbound::Send(InboundSend { sender_name: Some(name), ..send(r, user, &format!("{user}-{round}")) })
            };
            let lane_a = [
                renamed(&a, &one, format!("a{round}")),
                marker(&a, "reader", 1),
                renamed(&a, &two, format!("a{round}")),
            ];
            let lane_b = [
                renamed(&b, &two, format!("b{round}")),
                marker(&b, "reader", 1),
                renamed(&b, &one, format!("b{round}")),
            ];
            let (from_a, from_b) = tokio::join!(store.apply(&lane_a), store.apply(&lane_b));
            from_a.unwrap();
            from_b.unwrap();
        }
    }
}
