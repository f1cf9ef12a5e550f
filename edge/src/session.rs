//! One client connection: a reader task that validates and handles frames,
//! and a writer task that drains the connection's outbox (frames, and the
//! pings the node's keepalive asks for). Either ending ends the other.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use switchboard_core::clock::now_ms;
use switchboard_core::store::Access;
use switchboard_schemas::PROTOCOL_VERSION;
use switchboard_schemas::envelope::{Event, InboundSend, Origin};
use switchboard_schemas::headers::TraceParent;
use switchboard_schemas::ids::{message_id, validate_id};
use switchboard_schemas::protocol::{AckStatus, ClientFrame, ErrorCode, MAX_HISTORY_BYTES, ServerFrame};
use switchboard_schemas::read_marker::ReadMarker;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tracing::Instrument;

use crate::auth::Claims;
use crate::history;
use crate::hub::UserSlot;
use crate::joined::Joined;
use crate::outbox::{CloseReason, Outbox, OutboxReceiver};
use crate::publish;
use crate::state::EdgeState;

/// Rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 256;

/// Messages read from SQL at a time for a join's replay.
const REPLAY_CHUNK: u32 = 100;

/// Times a join's replay looks again for messages stored while it was sent.
const REPLAY_CATCH_UP_ROUNDS: u32 = 3;

/// A connection publishes at most one read marker per room in this time; a
/// higher position read meanwhile waits for the end of it, so a client that
/// marks every message read as it scrolls costs one record (and one `read`
/// frame to each member) a second, not one per message.
const READ_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection's rate limiter, on the std clock, not governor's default:
/// the default carries a calibrated clock of its own, 32 bytes more in
/// every connection. (The session's other times are tokio's.)
type Limiter = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// Runs a connection until either side ends it.
///
/// The setup is done here, outside the connection's future, so that future
/// holds only what the connection needs while it lives (an async fn's state
/// would keep its arguments, the socket above all, to the end).
pub fn run(state: Arc<EdgeState>, socket: WebSocket, claims: Claims, slot: UserSlot) -> impl Future<Output = ()> {
    let conn = state.next_conn_id();
    // Debug level: an enabled span lives as long as its connection, and at
    // info the log subscriber kept about 420 bytes per idle connection for
    // it (its fields formatted, a map, a slot; heap profile, 4,000
    // connections). The warnings below name the connection themselves.
    let span = tracing::debug_span!("conn", conn, user = %claims.sub);
    let _entered = span.enter();
    let (sink, stream) = socket.split();
    let config = &state.config;
    let (outbox, receiver) = Outbox::new(config.send_queue_frames, config.send_queue_bytes);
    outbox.liveness().open(state.keepalive.now());
    state.hub.register(conn, outbox.clone());
    state.events.connected();
    tracing::debug!("connected");

    outbox.push_frame(&ServerFrame::Welcome {
        node: state.node.clone(),
        user: claims.sub.clone(),
        protocol: PROTOCOL_VERSION,
        limits: config.limits(),
    });

    let writer = tokio::spawn(write_loop(sink, receiver, config.close_timeout));
    let mut session = Session::new(state, conn, slot, claims.name, outbox);
    drop(_entered);
    // A block, not an async fn: an async fn's state holds its arguments and
    // its locals made from them, twice the session in every task.
    async move {
        session.read_loop(stream).await;
        // A position read just before the end is not lost to the window.
        Box::pin(session.flush_reads(true)).await;

        let (state, outbox) = (&session.state, &session.outbox);
        outbox.closing().close(None);
        state.events.disconnected(outbox.closing().reason());
        if let Ok(dropped) = writer.await {
            state.events.frames_dropped(dropped);
        }
        state.hub.unregister(session.conn, session.rooms.rooms());
        tracing::debug!(reason = ?outbox.closing().reason(), "disconnected");
        // The session's user slot goes last, with it: the user's count of
        // connections drops only once the hub has forgotten this one.
    }
    .instrument(span)
}

/// Sends queued frames and the pings the node's keepalive asks for; on
/// close, sends the close frame with the recorded reason.
///
/// Returns how many queued frames were dropped unsent.
///
/// The close frame goes out behind the bytes already handed to the socket
/// (the WebSocket write buffer and the kernel's send buffer), never behind
/// the frames still queued: those are dropped at once. A client that stopped
/// reading therefore finds the close code as soon as it reads again, as
/// long as it does so within `close_timeout`; after that the TCP connection
/// is dropped (the client then sees no code, 1006).
///
/// A fn returning a block, not an async fn: an async fn's state keeps its
/// arguments beside the locals moved out of them (the sink twice, 104 bytes
/// of every connection's writer task).
#[allow(clippy::manual_async_fn, reason = "an async fn would keep its arguments twice (above)")]
pub fn write_loop<S>(
    mut sink: S,
    mut outbox: OutboxReceiver,
    close_timeout: std::time::Duration,
) -> impl Future<Output = usize>
where
    S: Sink<Message> + Unpin,
{
    async move {
        loop {
            let message = tokio::select! {
                biased;
                _ = outbox.closing().closed() => break,
                message = outbox.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            // A client that stops reading blocks this send; closing must still win.
            let sent = tokio::select! {
                _ = outbox.closing().closed() => break,
                sent = send_queued(&mut sink, message, &outbox) => sent,
            };
            if sent.is_err() {
                outbox.closing().close(None);
                return outbox.discard();
            }
        }
        let dropped = outbox.discard();
        // Boxed: a connection closes once, and inline the close's timeout
        // would size every connection's writer task for it while it idles.
        Box::pin(close(sink, outbox.closing().reason(), close_timeout)).await;
        dropped
    }
}

/// Sends the close frame for `reason` and closes the sink, within
/// `close_timeout`; with no reason (the peer is gone) only closes it.
async fn close<S>(mut sink: S, reason: Option<CloseReason>, close_timeout: std::time::Duration)
where
    S: Sink<Message> + Unpin,
{
    let Some(reason) = reason else {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.close()).await;
        return;
    };
    let frame = CloseFrame { code: reason.code, reason: Utf8Bytes::from_static(reason.reason) };
    let close = async {
        sink.send(Message::Close(Some(frame))).await?;
        sink.close().await
    };
    if tokio::time::timeout(close_timeout, close).await.is_err() {
        tracing::debug!(code = reason.code, "close frame not read within the close timeout; dropping the connection");
    }
}

/// Most frames written to the socket with one flush.
const FRAMES_PER_FLUSH: usize = 64;

/// Writes `first` and the frames already queued behind it (up to
/// [`FRAMES_PER_FLUSH`]), then flushes once: a burst of deliveries costs one
/// socket write instead of one per frame.
///
/// Polled by hand, not an async fn: that kept `first` beside the `feed`
/// holding it, 88 bytes more in every connection's writer task, which is
/// sized for this future (it is awaited beside the wait for a close).
fn send_queued<'a, S>(
    sink: &'a mut S,
    first: Message,
    outbox: &'a OutboxReceiver,
) -> impl Future<Output = Result<(), S::Error>> + 'a
where
    S: Sink<Message> + Unpin,
{
    let mut next = Some(first);
    let mut fed = 0;
    std::future::poll_fn(move |cx| {
        while next.is_some() {
            std::task::ready!(sink.poll_ready_unpin(cx))?;
            sink.start_send_unpin(next.take().expect("checked by the loop"))?;
            fed += 1;
            if fed < FRAMES_PER_FLUSH {
                next = outbox.try_recv().map(Message::Text);
            }
        }
        sink.poll_flush_unpin(cx)
    })
}

/// Waits for `timer`, or forever when there is none.
async fn fired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

struct Session {
    state: Arc<EdgeState>,
    conn: u64,
    /// The token's user, counted in the hub while the session lives (its
    /// name is the one copy the hub's entries share, see `UserSlot::user`),
    /// and its display name, boxed: an idle connection keeps them, and the
    /// token's other claims are spent at the handshake.
    slot: UserSlot,
    name: Option<Box<str>>,
    outbox: Outbox,
    /// Rooms this connection is in, each with the read position told in it
    /// (see [`READ_WINDOW`]); the hub is told exactly these rooms at close.
    /// One list, not a set of rooms and a map of positions (every joined
    /// room of every connection, idle or not, would have its name twice),
    /// and not a hash map (see `joined.rs`).
    rooms: Joined<ReadState>,
    limiter: Limiter,
    /// Sends awaiting Kafka's ack; when all permits are out, reading pauses.
    /// Made at the connection's first send: many connections only read.
    in_flight: Option<Arc<Semaphore>>,
    /// Fires when the earliest held read position is due: kept as positions
    /// are held and published, so reading a frame scans nothing. There only
    /// while a position is held (a timer is 112 bytes): the idle timeout is
    /// the node's keepalive's, so an idle connection keeps no timer.
    read_flush: Option<Pin<Box<Sleep>>>,
}

/// A room's read position as this connection told it: the last published,
/// and, once the client has marked the room read, its window (boxed: an
/// idle connection keeps this for every room it is in, 16 bytes instead of
/// 56).
#[derive(Debug, Default)]
struct ReadState {
    published: u64,
    window: Option<Box<ReadWindow>>,
}

/// A higher position held back until the window of the last published one ends.
#[derive(Debug, Default)]
struct ReadWindow {
    /// (seq, the request `ref` that set it)
    pending: Option<(u64, String)>,
    ends: Option<tokio::time::Instant>,
}

impl ReadState {
    fn pending(&self) -> Option<&(u64, String)> {
        self.window.as_ref()?.pending.as_ref()
    }

    fn window_ends(&self) -> Option<tokio::time::Instant> {
        self.window.as_ref()?.ends
    }
}

impl Session {
    fn new(state: Arc<EdgeState>, conn: u64, slot: UserSlot, name: Option<String>, outbox: Outbox) -> Self {
        let config = &state.config;
        let quota = Quota::per_second(NonZeroU32::new(config.rate_per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN));
        Self {
            conn,
            slot,
            name: name.map(String::into_boxed_str),
            outbox,
            rooms: Joined::default(),
            limiter: RateLimiter::direct_with_clock(quota, MonotonicClock),
            in_flight: None,
            state,
            read_flush: None,
        }
    }

    fn user(&self) -> &Arc<str> {
        self.slot.user()
    }

    /// A fn returning a block, not an async fn: an async fn's state keeps
    /// its arguments beside the locals moved out of them (16 bytes of every
    /// connection's task).
    #[allow(clippy::manual_async_fn, reason = "an async fn would keep its arguments twice (above)")]
    fn read_loop<S>(&mut self, mut stream: S) -> impl Future<Output = ()>
    where
        S: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        async move {
            loop {
                let next = tokio::select! {
                    _ = self.outbox.closing().closed() => return,
                    () = fired(&mut self.read_flush) => {
                        Box::pin(self.flush_reads(false)).await;
                        continue;
                    }
                    next = stream.next() => next,
                };
                // Any frame counts as activity; one being handled keeps the
                // connection from idling out however long that takes.
                self.outbox.liveness().handling();
                match next {
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Err(e)) => {
                        if let Some(reason) = close_reason_for(e) {
                            self.outbox.close(reason);
                        }
                        return;
                    }
                    // Boxed: handling a frame awaits Kafka and SQL, whose futures
                    // are large; inline, every connection's task would be sized
                    // for them while it idles here (3.8 -> 1.x KiB a connection).
                    Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text)).await,
                    Some(Ok(Message::Binary(_))) => {
                        let (code, message) = match self.limiter.check() {
                            Ok(()) => (ErrorCode::BinaryFrame, "protocol v1 uses text frames only"),
                            Err(_) => (ErrorCode::RateLimited, "rate limit exceeded; frame dropped"),
                        };
                        self.reply(ServerFrame::error(None, code, message));
                    }
                    // Pings are answered by the WebSocket layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
                self.outbox.liveness().heard(self.state.keepalive.now());
            }
        }
    }

    fn reply(&self, frame: ServerFrame) {
        if let ServerFrame::Error { code, .. } = &frame {
            self.state.events.error_sent(*code);
        }
        self.outbox.push_frame(&frame);
    }

    fn fail(&self, reference: &str, code: ErrorCode, message: impl Into<String>) {
        self.reply(ServerFrame::error(Some(reference.to_owned()), code, message));
    }

    async fn on_text(&mut self, text: &str) {
        let parsed = ClientFrame::parse(text);
        self.state.events.frame_in(parsed.as_ref().ok().map(ClientFrame::kind));
        // Every frame counts toward the rate, malformed ones too: each costs
        // the server a parse and a reply.
        if self.limiter.check().is_err() {
            let reference = match &parsed {
                Ok(frame) => Some(frame.reference().to_owned()),
                Err(e) => e.reference.clone(),
            };
            return self.reply(ServerFrame::error(
                reference,
                ErrorCode::RateLimited,
                "rate limit exceeded; frame dropped",
            ));
        }
        let frame = match parsed {
            Ok(frame) => frame,
            Err(e) => return self.reply(ServerFrame::error(e.reference, e.code, e.message)),
        };
        match frame {
            ClientFrame::Ping { reference } => self.reply(ServerFrame::Pong { reference }),
            ClientFrame::Join { reference, room, since, epoch, presence } => {
                self.join(reference, room, since, epoch, presence).await
            }
            ClientFrame::Leave { reference, room } => {
                self.flush_room_read(&room).await;
                if self.rooms.remove(&room).is_some() && self.state.hub.leave(&room, self.conn) {
                    self.reply(ServerFrame::Left { reference, room });
                } else {
                    self.fail(&reference, ErrorCode::NotJoined, format!("not in room {room:?}"));
                }
            }
            ClientFrame::Send { reference, room, client_id, body, traceparent } => {
                // `parse` has checked it; a client's context continues its trace.
                let parent = traceparent.and_then(|t| TraceParent::parse(&t).ok());
                self.send(reference, room, client_id, body, parent).await
            }
            ClientFrame::Typing { reference, room } => self.typing(reference, room),
            ClientFrame::Read { reference, room, seq } => self.read(reference, room, seq).await,
            ClientFrame::History { reference, room, before_seq, limit } => {
                Box::pin(self.history(reference, room, before_seq, limit)).await
            }
        }
    }

    /// A page of the room's history (see `crate::history`), at most half
    /// the send queue, queued at the client's reading pace like a join's
    /// replay: it waits for the queue to be at most half full, so pages
    /// asked back to back, or a busy room's live traffic, never overflow it.
    async fn history(&mut self, reference: String, room: String, before: Option<u64>, limit: Option<u32>) {
        let max_bytes = MAX_HISTORY_BYTES.min(self.state.config.send_queue_bytes / 2);
        match history::page(&self.state.store, self.user(), &room, before, limit, max_bytes).await {
            Ok(page) => {
                let frame = ServerFrame::History {
                    reference,
                    room: page.room,
                    epoch: page.epoch,
                    messages: page.messages,
                    has_more: page.has_more,
                };
                let patience = self.state.config.close_timeout;
                self.outbox.push_paced(Utf8Bytes::from(frame.to_json()), patience).await;
            }
            Err(e) => self.fail(&reference, e.code(), e.to_string()),
        }
    }

    async fn join(&mut self, reference: String, room: String, since: Option<u64>, epoch: Option<u64>, presence: bool) {
        if let Err(e) = validate_id(&room) {
            return self.fail(&reference, ErrorCode::InvalidRoom, format!("room: {e}"));
        }
        if self.in_room(&room) {
            return self.fail(&reference, ErrorCode::AlreadyJoined, format!("already in room {room:?}"));
        }
        if self.rooms.len() >= MAX_ROOMS_PER_CONNECTION {
            return self.fail(
                &reference,
                ErrorCode::TooManyRooms,
                format!("at most {MAX_ROOMS_PER_CONNECTION} rooms per connection; leave one first"),
            );
        }
        let store = &self.state.store;
        let room_state = match store.access(&room, self.user()).await {
            Ok(Access::Granted(s)) => s,
            Ok(Access::Forbidden) => {
                return self.fail(&reference, ErrorCode::Forbidden, format!("you may not join room {room:?}"));
            }
            Err(e) => {
                tracing::warn!(conn = self.conn, user = %self.user(), error = %e, "join: database unavailable");
                return self.fail(&reference, ErrorCode::Unavailable, "history unavailable; retry the join");
            }
        };
        let max_replay = u64::from(self.state.config.max_replay);
        let last = room_state.last_seq;
        // What to replay: everything after `since` if it fits and the epoch
        // matches; otherwise the most recent `max_replay`, flagged unrecovered.
        // A `since` beyond the room's end is a history this room never had
        // (or no longer has): the client must reload, not keep its copy and
        // drop the room's next messages as duplicates of seqs it thinks it saw.
        let (replay_after, recovered) = match since {
            None => (last, true),
            Some(_) if epoch.is_some_and(|e| e != room_state.epoch) => (last.saturating_sub(max_replay), false),
            Some(since) if since > last => (last.saturating_sub(max_replay), false),
            Some(since) if since == last => (last, true),
            Some(since) if last - since <= max_replay => (since, true),
            Some(_) => (last.saturating_sub(max_replay), false),
        };
        // The first chunk is read before answering, so a database that is
        // down gets a plain `unavailable` and nothing else.
        let mut chunk = if replay_after < last {
            match store.messages_between(&room, replay_after, last, REPLAY_CHUNK).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(conn = self.conn, user = %self.user(), error = %e, "join: replay read failed");
                    return self.fail(&reference, ErrorCode::Unavailable, "history unavailable; retry the join");
                }
            }
        } else {
            Vec::new()
        };
        let read_seq = match store.read_position(&room, self.user()).await {
            Ok(seq) => seq.min(last),
            Err(e) => {
                tracing::warn!(conn = self.conn, user = %self.user(), error = %e, "join: read position unavailable");
                return self.fail(&reference, ErrorCode::Unavailable, "history unavailable; retry the join");
            }
        };
        // Who is there as this node knows it, and the joining user, who is
        // there from now on. A user that came meanwhile shows again in the
        // next `presence` frame's `joined`: harmless to a set.
        let present = presence.then(|| {
            let mut users = self.state.presence.present(&room);
            if let Err(at) = users.binary_search_by(|u| u.as_str().cmp(self.user())) {
                users.insert(at, String::from(&**self.user()));
            }
            users
        });
        let joined = ServerFrame::Joined {
            reference,
            room: room.clone(),
            epoch: room_state.epoch,
            last_seq: last,
            recovered,
            read_seq,
            unread: last - read_seq,
            present,
        };
        self.outbox.push_frame(&joined);
        let ServerFrame::Joined { present: present_told, .. } = joined else { unreachable!("built just above") };
        // The replay goes to the queue at the client's reading pace (up to
        // `max_replay` messages can be far more than the send queue holds),
        // and the connection joins the room's live stream only after it, so
        // no live message overtakes it. Messages stored while it was sent are
        // read too (a few rounds), so the live stream starts right behind it.
        let patience = self.state.config.close_timeout;
        let mut sent = replay_after;
        let mut upto = last;
        let mut rounds = 0;
        while !chunk.is_empty() {
            for message in chunk.drain(..) {
                sent = message.seq;
                if !self.outbox.push_paced(Utf8Bytes::from(ServerFrame::Message(message).to_json()), patience).await {
                    return; // closing: too slow, or gone
                }
            }
            if sent >= upto {
                rounds += 1;
                match store.access(&room, self.user()).await {
                    Ok(Access::Granted(now)) if now.last_seq > upto && rounds <= REPLAY_CATCH_UP_ROUNDS => {
                        upto = now.last_seq;
                    }
                    _ => break,
                }
            }
            chunk = match store.messages_between(&room, sent, upto, REPLAY_CHUNK).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The live stream's gap fill reads the rest at the room's next message.
                    tracing::warn!(conn = self.conn, user = %self.user(), error = %e, "join: replay read failed midway");
                    Vec::new()
                }
            };
        }
        self.state.hub.join(&room, self.conn, self.user(), &self.outbox, sent, room_state.epoch);
        if let Some(told) = present_told {
            self.state.hub.watch_presence(&room, self.conn);
            // Presence frames sent while the replay ran did not come here:
            // what changed since `joined`'s list comes in one frame now.
            let now = self.state.presence.present(&room);
            let joined: Vec<String> = now.iter().filter(|u| told.binary_search(u).is_err()).cloned().collect();
            let left: Vec<String> = told.iter().filter(|u| now.binary_search(u).is_err()).cloned().collect();
            if !joined.is_empty() || !left.is_empty() {
                self.outbox.push_frame(&ServerFrame::Presence { room: room.clone(), joined, left });
            }
        }
        // A removal applied while this join read the store found no local
        // connection to take out; this one looks again, now that it is in.
        if room_state.private && !matches!(store.access(&room, self.user()).await, Ok(Access::Granted(_))) {
            self.state.hub.leave(&room, self.conn);
            self.outbox.push_frame(&ServerFrame::Removed { room });
            return;
        }
        self.rooms.insert(room, ReadState { published: read_seq, window: None });
    }

    /// Whether this connection is in `room`. The hub has the last word: the
    /// delivery task takes a removed user's connections out of a room there
    /// (see `Delivery::remove_member`), and the session forgets it here.
    fn in_room(&mut self, room: &str) -> bool {
        if !self.rooms.contains(room) {
            return false;
        }
        if self.state.hub.is_member(room, self.conn) {
            return true;
        }
        self.rooms.remove(room);
        false
    }

    async fn send(
        &mut self,
        reference: String,
        room: String,
        client_id: String,
        body: String,
        parent: Option<TraceParent>,
    ) {
        if !self.in_room(&room) {
            return self.fail(&reference, ErrorCode::NotJoined, format!("join room {room:?} before sending"));
        }
        let max = self.state.config.max_body_bytes;
        if body.is_empty() || body.len() > max {
            return self.fail(&reference, ErrorCode::BodyTooLarge, format!("body must be 1..={max} bytes"));
        }
        if body.contains('\0') {
            return self.fail(&reference, ErrorCode::InvalidFrame, "body must not contain NUL");
        }
        if let Some(backlog) = &self.state.config.backlog
            && backlog.is_full()
        {
            return self.fail(
                &reference,
                ErrorCode::Unavailable,
                "the server is behind; retry with the same client_id",
            );
        }
        // Waiting here pauses reading this connection: backpressure, not buffering.
        let max_in_flight = self.state.config.max_in_flight;
        let in_flight = self.in_flight.get_or_insert_with(|| Arc::new(Semaphore::new(max_in_flight)));
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let id = message_id(&room, self.user(), &client_id).to_string();
        let envelope = InboundSend {
            room,
            sender: String::from(&**self.user()),
            sender_name: self.name.as_deref().map(str::to_owned),
            client_id,
            body,
            origin: Origin { node: self.state.node.clone(), conn: self.conn, reference: reference.clone() },
            received_at: now_ms(),
        };
        // Enqueued here, before the next frame is read: this is what keeps
        // the connection's sends in order (see `publish`).
        let pending = match publish::send(&self.state, &envelope, &id, parent.as_ref()).await {
            Ok(pending) => pending,
            Err(e) => {
                self.state.events.send_failed(&e);
                return self.fail(&reference, ErrorCode::Unavailable, "not accepted; retry with the same client_id");
            }
        };
        let state = self.state.clone();
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let reply = match pending.acknowledged().await {
                Ok(bytes) => {
                    if let Some(backlog) = &state.config.backlog {
                        backlog.accepted(bytes);
                    }
                    state.events.send_accepted();
                    ServerFrame::Ack { reference, status: AckStatus::Accepted, id }
                }
                Err(error) => {
                    state.events.send_failed(&error);
                    state.events.error_sent(ErrorCode::Unavailable);
                    ServerFrame::error(
                        Some(reference),
                        ErrorCode::Unavailable,
                        "not accepted; retry with the same client_id",
                    )
                }
            };
            outbox.push_frame(&reply);
            drop(permit);
        });
    }

    /// A read position: published at once if the room's window is over,
    /// otherwise held (the highest wins) until it is. A position at or below
    /// what this connection already told is dropped; the persister also
    /// keeps positions from moving back.
    async fn read(&mut self, reference: String, room: String, seq: u64) {
        if !self.in_room(&room) {
            return self.fail(&reference, ErrorCode::NotJoined, format!("not in room {room:?}"));
        }
        let now = tokio::time::Instant::now();
        let Some(state) = self.rooms.get_mut(&room) else { return };
        let told = state.pending().map_or(state.published, |(p, _)| (*p).max(state.published));
        if seq <= told {
            return;
        }
        let window = state.window.get_or_insert_default();
        window.pending = Some((seq, reference));
        match window.ends {
            Some(end) if end > now => {
                let due = self.read_flush.as_ref().map_or(end, |timer| timer.deadline().min(end));
                self.flush_reads_at(Some(due));
            }
            _ => self.flush_room_read(&room).await,
        }
    }

    /// Publishes the rooms' held read positions: all of them when `all`,
    /// otherwise those whose window has ended.
    async fn flush_reads(&mut self, all: bool) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.pending().is_some() && (all || r.window_ends().is_none_or(|end| end <= now)))
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            self.flush_room_read(&room).await;
        }
        let held = self.rooms.values().filter(|r| r.pending().is_some());
        self.flush_reads_at(held.filter_map(ReadState::window_ends).min());
    }

    /// Sets the read positions' timer to `due`: made when a position is
    /// first held, moved when the earliest one changes, dropped when none is.
    fn flush_reads_at(&mut self, due: Option<tokio::time::Instant>) {
        match (self.read_flush.as_mut(), due) {
            (_, None) => self.read_flush = None,
            (Some(timer), Some(due)) => timer.as_mut().reset(due),
            (None, Some(due)) => self.read_flush = Some(Box::pin(tokio::time::sleep_until(due))),
        }
    }

    /// Publishes `room`'s held read position, if any, and starts a window.
    async fn flush_room_read(&mut self, room: &str) {
        let Some(state) = self.rooms.get_mut(room) else { return };
        let Some(window) = state.window.as_mut() else { return };
        let Some((seq, reference)) = window.pending.take() else { return };
        window.ends = Some(tokio::time::Instant::now() + READ_WINDOW);
        state.published = seq;
        let marker = ReadMarker {
            room: room.to_owned(),
            user: String::from(&**self.user()),
            seq,
            origin: Origin { node: self.state.node.clone(), conn: self.conn, reference: reference.clone() },
        };
        if let Err(e) = publish::read_marker(&self.state, &marker).await {
            tracing::warn!(conn = self.conn, user = %self.user(), error = %e, "read marker not published");
            self.fail(&reference, ErrorCode::Unavailable, "kafka is unavailable; send the read position again");
        }
    }

    fn typing(&mut self, reference: String, room: String) {
        if !self.in_room(&room) {
            return self.fail(&reference, ErrorCode::NotJoined, format!("not in room {room:?}"));
        }
        publish::typing(&self.state, Event::Typing { room, user: String::from(&**self.user()) });
    }
}

/// The close code owed to a client whose frame the WebSocket layer refused;
/// `None` when the connection itself failed (nobody to tell).
fn close_reason_for(error: axum::Error) -> Option<&'static CloseReason> {
    use tungstenite::error::{Error, ProtocolError};
    match error.into_inner().downcast_ref::<Error>()? {
        Error::Capacity(_) => Some(&CloseReason::TOO_BIG),
        Error::Utf8(_) => Some(&CloseReason::INVALID_UTF8),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some(&CloseReason::PROTOCOL_ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::*;

    /// A sink that records what was written and each flush.
    #[derive(Default)]
    struct Recorder {
        written: Vec<Message>,
        /// Number of frames written before each flush.
        flushed_at: Vec<usize>,
    }

    impl Sink<Message> for Recorder {
        type Error = std::convert::Infallible;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.written.push(item);
            Ok(())
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            let n = self.written.len();
            if self.flushed_at.last() != Some(&n) {
                self.flushed_at.push(n);
            }
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_flush(cx)
        }
    }

    #[tokio::test]
    async fn queued_frames_are_written_in_order_with_one_flush() {
        let (outbox, receiver) = Outbox::new(200, 1 << 20);
        for i in 0..70 {
            assert!(outbox.push(Utf8Bytes::from(i.to_string())));
        }
        let mut sink = Recorder::default();
        let closing = outbox.closing();
        let writer = write_loop(&mut sink, receiver, Duration::from_secs(1));
        let stop = async {
            tokio::task::yield_now().await;
            closing.close(None);
        };
        tokio::join!(writer, stop);
        let texts: Vec<String> = sink
            .written
            .iter()
            .map(|m| match m {
                Message::Text(t) => t.to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(texts, (0..70).map(|i| i.to_string()).collect::<Vec<_>>());
        // 70 queued frames: one flush for the first 64, one for the rest.
        assert_eq!(sink.flushed_at, vec![FRAMES_PER_FLUSH, 70]);
    }
}
