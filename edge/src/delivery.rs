//! Delivery: the edge consumes only its own `sb.deliver.<node>` (assigned,
//! from the end), encodes each event once, and pushes the shared bytes to the
//! room's local connections.
//!
//! Per room the hub knows the lowest seq any local member has been sent. A
//! message above that + 1 reveals a gap (routes that landed after a join, a
//! router restart); the gap is filled from SQL before the message is pushed.
//! After a room gets its first local member, a catch-up check does the same
//! for messages that were routed before the route existed: the checks
//! waiting at one time ask SQL for their rooms' last seqs together, and read
//! messages only for rooms that have moved on.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use backon::{ExponentialBuilder, Retryable};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use switchboard_core::dead_letter::DeadLetter;
use switchboard_core::kafka::{consume_error, trace_of};
use switchboard_core::store::{Access, Store};
use switchboard_core::traces::{self, Attribute};
use switchboard_schemas::envelope::Event;
use switchboard_schemas::protocol::{MessageFrame, ServerFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::EdgeEvents;
use crate::hub::Hub;
use crate::presence::Presence;

/// Most rows read from SQL per backfill query.
const BACKFILL_CHUNK: u32 = 500;

/// Most catch-up checks taken together: one query for all of them, then a
/// backfill of each room that moved on, before live deliveries go on.
const CATCH_UPS_PER_TURN: usize = 500;

/// Work the delivery task does besides consuming.
#[derive(Debug)]
pub enum DeliveryCommand {
    /// Push anything stored in this room beyond what local members have.
    CatchUp(String),
}

pub struct Delivery {
    pub consumer: StreamConsumer,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub store: Store,
    pub node: String,
    pub dead_letter: DeadLetter,
    pub events: Arc<EdgeEvents>,
}

impl Delivery {
    pub async fn run(self, mut commands: mpsc::Receiver<DeliveryCommand>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(DeliveryCommand::CatchUp(room)) = commands.recv() => {
                    let mut rooms = vec![room];
                    while rooms.len() < CATCH_UPS_PER_TURN
                        && let Ok(DeliveryCommand::CatchUp(room)) = commands.try_recv()
                    {
                        rooms.push(room);
                    }
                    self.catch_up(rooms).await
                }
                received = self.consumer.recv() => match received {
                    Ok(record) => match record.payload().map(serde_json::from_slice::<Event>) {
                        Some(Ok(event)) => self.handle(event, &record).await,
                        Some(Err(e)) => self.reject(&record, &format!("undecodable: {e}")).await,
                        None => self.reject(&record, "empty payload").await,
                    },
                    Err(e) => consume_error("deliveries", &e).await,
                },
            }
        }
    }

    async fn reject(&self, record: &BorrowedMessage<'_>, reason: &str) {
        if let Err(e) = self.dead_letter.send(record, reason).await {
            tracing::error!(error = %e, "could not dead-letter a delivery record");
        }
    }

    async fn handle(&self, event: Event, record: &BorrowedMessage<'_>) {
        match event {
            Event::Message(stored) => {
                // The last hop of a traced message: a span only when exporting
                // and the record carries a trace (see `switchboard_core::traces`).
                let hop = traces::enabled()
                    .then(|| trace_of(record))
                    .flatten()
                    .map(|parent| traces::consumer_hop("deliver", record, Some(&parent), |_| {}));
                let recipients = self.deliver_message(stored.message).await;
                if let Some(mut hop) = hop {
                    hop.set(|| Attribute::new("switchboard.recipients", recipients as i64));
                }
            }
            Event::Typing { room, user } => {
                let frame = Utf8Bytes::from(ServerFrame::Typing { room: room.clone(), user: user.clone() }.to_json());
                self.hub.deliver_ephemeral(&room, Some(&user), &frame);
            }
            Event::Rejected { origin, code, message, .. } => {
                if origin.node == self.node {
                    let frame = ServerFrame::error(Some(origin.reference), code, message);
                    self.hub.send_to(origin.conn, Utf8Bytes::from(frame.to_json()));
                }
            }
            Event::MemberRemoved { room, user } => self.remove_member(room, &user).await,
            // The reader's own connections too: a read on the phone clears
            // the badge on the laptop.
            Event::Read { room, user, seq } => {
                let frame = Utf8Bytes::from(ServerFrame::Read { room: room.clone(), user, seq }.to_json());
                self.hub.deliver_ephemeral(&room, None, &frame);
            }
            Event::Presence(update) => self.presence.apply(&update, switchboard_core::clock::now_ms()),
            Event::HistoryReset { room, epoch } => {
                let frame = Utf8Bytes::from(ServerFrame::Reset { room: room.clone(), epoch }.to_json());
                self.hub.reset(&room, epoch, &frame);
            }
        }
    }

    /// Takes a removed user's local connections out of the room, if the
    /// user may no longer read it. Asking the store, not trusting the event
    /// alone, keeps a replayed old removal (the user was added back since)
    /// or one from a public room from shutting anyone out. A store that
    /// cannot answer counts as "may not": privacy first.
    async fn remove_member(&self, room: String, user: &str) {
        if !self.hub.has_user(&room, user) {
            return;
        }
        let ask = || self.store.access(&room, user);
        let access = ask
            .retry(store_retry())
            .notify(|e, _| tracing::warn!(room, error = %e, "removal: access check failed; retrying"))
            .await;
        if matches!(access, Ok(Access::Granted(_))) {
            return;
        }
        let frame = Utf8Bytes::from(ServerFrame::Removed { room: room.clone() }.to_json());
        self.events.removed_from_room(self.hub.remove_user(&room, user, &frame));
    }

    /// Returns to how many local connections the message went.
    async fn deliver_message(&self, message: MessageFrame) -> usize {
        let Some(lowest) = self.hub.lowest_seq(&message.room) else { return 0 };
        if message.seq <= lowest {
            return 0; // every local member has it already
        }
        if message.seq > lowest + 1 {
            self.backfill(&message.room, lowest, message.seq - 1).await;
        }
        let room = message.room.clone();
        self.push(&room, message)
    }

    /// Queues `message` to the room's local connections that lack it and
    /// counts it, live or filled from SQL alike; returns to how many.
    fn push(&self, room: &str, message: MessageFrame) -> usize {
        let (seq, sent_at) = (message.seq, message.sent_at);
        let recipients = self.hub.deliver(room, seq, &encode(message));
        self.events.delivered(sent_at, recipients);
        recipients
    }

    /// Pushes what was stored in `rooms` beyond what their local members
    /// have: one query for the rooms' last seqs (a join storm schedules
    /// thousands of checks, and one read per room held deliveries up), then
    /// a backfill of the rooms that moved on.
    async fn catch_up(&self, mut rooms: Vec<String>) {
        rooms.sort_unstable();
        rooms.dedup();
        let lowest: Vec<(String, u64)> =
            rooms.into_iter().filter_map(|room| self.hub.lowest_seq(&room).map(|seq| (room, seq))).collect();
        if lowest.is_empty() {
            return;
        }
        let names: Vec<&str> = lowest.iter().map(|(room, _)| room.as_str()).collect();
        let read = || self.store.last_seqs(&names);
        let stored = match read
            .retry(store_retry())
            .notify(|e, _| tracing::warn!(error = %e, "catch-up read failed; retrying"))
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                // The next message of each room finds its gap and fills it.
                tracing::error!(rooms = names.len(), error = %e, "catch-up gave up; database unavailable");
                return;
            }
        };
        for (room, lowest) in &lowest {
            if let Some(&last) = stored.get(room)
                && last > *lowest
            {
                self.backfill(room, *lowest, last).await;
            }
        }
    }

    /// Pushes stored messages with `after < seq <= upto`, in order.
    async fn backfill(&self, room: &str, mut after: u64, upto: u64) {
        while after < upto {
            let rows = match self.read_with_retry(room, after, upto).await {
                Some(rows) => rows,
                None => return,
            };
            let Some(last) = rows.last().map(|m| m.seq) else { return };
            tracing::debug!(room, after, upto = last, rows = rows.len(), "backfilled from SQL");
            self.events.backfilled(rows.len());
            for message in rows {
                self.push(room, message);
            }
            after = last;
        }
    }

    /// Reads a backfill range, retrying briefly while the database is unavailable.
    async fn read_with_retry(&self, room: &str, after: u64, upto: u64) -> Option<Vec<MessageFrame>> {
        let read = || self.store.messages_between(room, after, upto, BACKFILL_CHUNK);
        let retried = read
            .retry(store_retry())
            .notify(|e, _| tracing::warn!(room, error = %e, "gap backfill read failed; retrying"))
            .await;
        match retried {
            Ok(rows) => Some(rows),
            Err(e) => {
                // Members keep their last seq, so the next message retries the
                // gap; a client can also rejoin with `since`.
                tracing::error!(room, after, upto, error = %e, "gap backfill gave up; database unavailable");
                None
            }
        }
    }
}

/// How delivery retries a store read: briefly (about a second), since the
/// delivery task waits meanwhile.
fn store_retry() -> ExponentialBuilder {
    ExponentialBuilder::default().with_min_delay(Duration::from_millis(50)).with_max_times(4)
}

/// One encoding per message per node, shared by every local connection.
fn encode(message: MessageFrame) -> Utf8Bytes {
    Utf8Bytes::from(ServerFrame::Message(message).to_json())
}
