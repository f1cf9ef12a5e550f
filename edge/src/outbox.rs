//! A connection's send queue, bounded in frames and in bytes. Pushing never
//! waits: when the client reads too slowly and the queue is full, the
//! connection is closed with `SLOW_CONSUMER` instead of buffering without bound.
//!
//! The queue is a `VecDeque` behind a mutex, not a tokio channel: every
//! connection has one, mostly idle and empty, and a bounded channel costs
//! 1.5 KiB from the start (a cache-padded channel and a first block of 32
//! slots), where an empty deque costs nothing and one emptied after a
//! burst gives its memory back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::future::Either;
use switchboard_schemas::protocol::{ServerFrame, close};
use tokio::sync::Notify;

use crate::keepalive::Liveness;

/// An emptied queue keeps room for this many frames; a bigger one (after a
/// burst, a join's replay) is freed.
const KEPT_CAPACITY: usize = 16;

/// Why the server closes a connection: a WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const SLOW_CONSUMER: Self = Self { code: close::SLOW_CONSUMER, reason: "slow consumer" };
    pub const TOO_BIG: Self = Self { code: close::MESSAGE_TOO_BIG, reason: "frame too large" };
    pub const INVALID_UTF8: Self = Self { code: close::INVALID_PAYLOAD, reason: "text frame is not valid UTF-8" };
    pub const PROTOCOL_ERROR: Self = Self { code: close::PROTOCOL_ERROR, reason: "websocket protocol error" };
    pub const IDLE: Self = Self { code: close::IDLE_TIMEOUT, reason: "idle timeout" };
    pub const RESTART: Self = Self { code: close::SERVICE_RESTART, reason: "node draining; reconnect" };
}

/// Shared by the reader, the writer and everyone who pushes frames.
#[derive(Clone)]
pub struct Outbox {
    queue: Arc<Queue>,
}

/// What the pushing and the writing sides share: one allocation per
/// connection, its close state included.
#[derive(Default)]
struct Queue {
    frames: Mutex<Frames>,
    max_frames: usize,
    max_bytes: usize,
    /// Tells the writer a frame came (one waiter: `notify_one` keeps the
    /// wake-up for it when it is not waiting yet).
    ready: Notify,
    bytes: AtomicUsize,
    /// Paced pushes waiting for room ([`Outbox::push_paced`]): only while
    /// there are any does the writer tell `drained` of each frame it takes.
    /// `notify_waiters` locks a mutex, too much for every frame written.
    pacers: AtomicUsize,
    drained: Notify,
    /// The node's keepalive asks for a ping ([`Outbox::ping`]); the writer
    /// sends it before the frames queued.
    ping: AtomicBool,
    liveness: Liveness,
    closing: Closing,
}

/// Counts a paced push as waiting while it lives.
struct Pacing<'q>(&'q Queue);

impl<'q> Pacing<'q> {
    fn new(queue: &'q Queue) -> Self {
        queue.pacers.fetch_add(1, Ordering::Relaxed);
        Pacing(queue)
    }
}

impl Drop for Pacing<'_> {
    fn drop(&mut self) {
        self.0.pacers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Set once: the first reason to close wins. A `Notify` and the reason,
/// not a `CancellationToken`, which allocates a tree node of its own (112
/// bytes more for every connection, idle or not). The reason is one of the
/// constants, by reference: 8 bytes, where a copy would be 24.
#[derive(Default)]
pub struct Closing {
    reason: OnceLock<Option<&'static CloseReason>>,
    closed: Notify,
}

impl Closing {
    /// Ends the connection; `None` means the peer is gone (nothing to send).
    pub fn close(&self, reason: Option<&'static CloseReason>) {
        let _ = self.reason.set(reason);
        self.closed.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Waits until the connection is closed (at once if it is).
    ///
    /// A `Notified` receives `notify_waiters` from the moment it is made,
    /// polled or not, so making it before looking at the reason loses no
    /// close. Not an async fn with a loop: that kept `self` twice and a pin
    /// beside the `Notified`, 104 bytes in each connection's two waits (an
    /// async block would keep it twice too, as itself and as its await).
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        let notified = self.closed.notified();
        if self.is_closed() { Either::Left(std::future::ready(())) } else { Either::Right(notified) }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied().flatten().copied()
    }
}

#[derive(Default)]
struct Frames {
    queued: VecDeque<Utf8Bytes>,
    /// The writer takes no more: pushes fail.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Frames> {
        // Nothing panics while holding it; if something did, the frames are still whole.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's end of an [`Outbox`].
pub struct OutboxReceiver {
    queue: Arc<Queue>,
}

impl OutboxReceiver {
    pub fn closing(&self) -> &Closing {
        &self.queue.closing
    }

    /// The next message to write, waiting for one: a ping asked for, or
    /// else the next frame; `None` once discarded.
    pub async fn recv(&self) -> Option<Message> {
        loop {
            // First, so that a stream of frames does not hold a ping back.
            // (A ping asked for is rare: the lock on its path costs nothing.)
            if self.queue.ping.swap(false, Ordering::Relaxed) && !self.queue.lock().closed {
                return Some(Message::Ping(Default::default()));
            }
            if let Some(frame) = self.try_recv() {
                return Some(Message::Text(frame));
            }
            if self.queue.lock().closed {
                return None;
            }
            // A push (or a ping asked for) since the checks above left its
            // wake-up stored.
            self.queue.ready.notified().await;
        }
    }

    /// The next frame's text (tests: a ping here is a mistake).
    #[cfg(test)]
    pub async fn recv_text(&self) -> Option<String> {
        match self.recv().await? {
            Message::Text(text) => Some(text.to_string()),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// A frame already queued, without waiting.
    pub fn try_recv(&self) -> Option<Utf8Bytes> {
        let frame = {
            let mut frames = self.queue.lock();
            let frame = frames.queued.pop_front()?;
            if frames.queued.is_empty() && frames.queued.capacity() > KEPT_CAPACITY {
                frames.queued = VecDeque::new();
            }
            frame
        };
        self.taken(&frame);
        Some(frame)
    }

    fn taken(&self, frame: &Utf8Bytes) {
        self.queue.bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        // Pairs with the fence in `push_paced`: either that push sees the
        // room this frame made, or this sees the push waiting and wakes it.
        fence(Ordering::SeqCst);
        if self.queue.pacers.load(Ordering::Relaxed) > 0 {
            self.queue.drained.notify_waiters();
        }
    }

    /// Takes no more frames and frees those still queued: a closing
    /// connection sends its close frame next, and holds no memory for
    /// frames it will never send while that close waits for a slow reader.
    /// Returns how many it dropped.
    pub fn discard(&mut self) -> usize {
        let dropped = {
            let mut frames = self.queue.lock();
            frames.closed = true;
            std::mem::take(&mut frames.queued)
        };
        for frame in &dropped {
            self.taken(frame);
        }
        dropped.len()
    }
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> (Self, OutboxReceiver) {
        let queue = Arc::new(Queue { max_frames, max_bytes, ..Queue::default() });
        let outbox = Self { queue: queue.clone() };
        (outbox, OutboxReceiver { queue })
    }

    /// Queues an encoded frame (shared bytes: one encoding serves a whole
    /// room). Returns false if the connection is closing or was just closed
    /// for being too slow.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        if self.closing().is_closed() {
            return false;
        }
        let len = frame.len();
        let queue = &self.queue;
        {
            let mut frames = queue.lock();
            if frames.closed {
                return false;
            }
            // Pushes take turns under the lock and the writer only takes
            // away, so the count cannot grow between this check and the add.
            if frames.queued.len() >= queue.max_frames || queue.bytes.load(Ordering::Relaxed) + len > queue.max_bytes {
                drop(frames);
                self.closing().close(Some(&CloseReason::SLOW_CONSUMER));
                return false;
            }
            queue.bytes.fetch_add(len, Ordering::Relaxed);
            frames.queued.push_back(frame);
        }
        queue.ready.notify_one();
        true
    }

    /// Queues `frame` once the queue is at most half full, waiting for the
    /// writer to make room: a bulk of frames the server chose to send (a
    /// join's replay) goes at the client's reading pace without ever
    /// overflowing the queue, and the other half stays free for live
    /// traffic. A client that takes nothing for `patience` is closed as a
    /// slow consumer. Returns false if the connection is closing.
    pub async fn push_paced(&self, frame: Utf8Bytes, patience: Duration) -> bool {
        // The common case, a queue with room: no waiter to register, so the
        // writer is not made to wake anyone for the frames it takes.
        if self.closing().is_closed() {
            return false;
        }
        if self.has_room_for(frame.len()) {
            return self.push(frame);
        }
        let deadline = tokio::time::Instant::now() + patience;
        let _pacing = Pacing::new(&self.queue);
        loop {
            let drained = self.queue.drained.notified();
            tokio::pin!(drained);
            // Registered (and counted) before the check, so a frame taken in
            // between still wakes us (see `OutboxReceiver::taken`).
            drained.as_mut().enable();
            fence(Ordering::SeqCst);
            if self.closing().is_closed() {
                return false;
            }
            if self.has_room_for(frame.len()) {
                return self.push(frame);
            }
            tokio::select! {
                _ = &mut drained => {}
                _ = self.closing().closed() => return false,
                _ = tokio::time::sleep_until(deadline) => {
                    self.closing().close(Some(&CloseReason::SLOW_CONSUMER));
                    return false;
                }
            }
        }
    }

    /// True while the queue is at most half full, in bytes and in frames.
    fn has_room_for(&self, len: usize) -> bool {
        self.queue.bytes.load(Ordering::Relaxed) + len <= self.queue.max_bytes / 2
            && self.queue.lock().queued.len() < self.queue.max_frames / 2
    }

    /// Encodes and queues a frame meant for this connection only.
    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push(Utf8Bytes::from(frame.to_json()))
    }

    /// Asks the writer to send a ping (see `crate::keepalive`).
    pub fn ping(&self) {
        self.queue.ping.store(true, Ordering::Relaxed);
        self.queue.ready.notify_one();
    }

    /// When the client was last heard from and last pinged.
    pub fn liveness(&self) -> &Liveness {
        &self.queue.liveness
    }

    pub fn closing(&self) -> &Closing {
        &self.queue.closing
    }

    pub fn close(&self, reason: &'static CloseReason) {
        self.closing().close(Some(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_in_frames_closes_as_slow_consumer() {
        let (outbox, rx) = Outbox::new(2, 1 << 20);
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert!(!outbox.push("c".into()));
        assert_eq!(outbox.closing().reason(), Some(CloseReason::SLOW_CONSUMER));
        assert_eq!(rx.recv_text().await.as_deref(), Some("a"));
        assert!(!outbox.push("d".into()), "a closed outbox takes nothing");
    }

    #[tokio::test]
    async fn overflow_in_bytes_closes_as_slow_consumer() {
        let (outbox, rx) = Outbox::new(100, 10);
        assert!(outbox.push("12345".into()));
        assert!(outbox.push("12345".into()));
        // Reading frees room.
        assert_eq!(rx.recv_text().await.as_deref(), Some("12345"));
        assert!(outbox.push("123".into()));
        assert!(!outbox.push("12345".into()));
        assert_eq!(outbox.closing().reason(), Some(CloseReason::SLOW_CONSUMER));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_push_waits_for_the_writer_instead_of_overflowing() {
        let (outbox, rx) = Outbox::new(100, 10);
        assert!(outbox.push("12345".into()), "half the bytes");
        let pusher = outbox.clone();
        let paced = tokio::spawn(async move { pusher.push_paced("123".into(), Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!paced.is_finished(), "waits while the queue is half full");
        assert_eq!(rx.recv_text().await.as_deref(), Some("12345"));
        assert!(paced.await.unwrap(), "queued once the writer took a frame");
        assert_eq!(rx.recv_text().await.as_deref(), Some("123"));
        assert_eq!(outbox.closing().reason(), None, "never closed");
    }

    #[tokio::test]
    async fn an_emptied_queue_gives_back_a_bursts_memory_and_a_discarded_one_takes_nothing() {
        let (outbox, rx) = Outbox::new(1_000, 1 << 20);
        let waiting = tokio::spawn(async move {
            let first = rx.recv_text().await;
            (rx, first)
        });
        assert!(outbox.push("woken".into()));
        let (mut rx, first) = waiting.await.unwrap();
        assert_eq!(first.as_deref(), Some("woken"), "a push wakes a waiting writer");
        for i in 0..500 {
            assert!(outbox.push(i.to_string().into()));
        }
        assert!(outbox.queue.lock().queued.capacity() >= 500);
        for i in 0..500 {
            assert_eq!(rx.recv_text().await.as_deref(), Some(i.to_string().as_str()), "in order");
        }
        assert_eq!(outbox.queue.lock().queued.capacity(), 0, "freed once empty");
        assert_eq!(outbox.queue.bytes.load(Ordering::Relaxed), 0);

        assert!(outbox.push("a".into()) && outbox.push("b".into()));
        assert_eq!(rx.discard(), 2);
        assert!(!outbox.push("c".into()), "a discarded queue takes nothing");
        assert!(rx.recv().await.is_none());
        assert_eq!(outbox.closing().reason(), None, "discarding is not closing for a reason");
    }

    #[tokio::test]
    async fn a_ping_asked_for_wakes_the_writer_and_goes_before_the_frames_queued() {
        let (outbox, rx) = Outbox::new(8, 1 << 16);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            (rx, first)
        });
        tokio::task::yield_now().await;
        outbox.ping();
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        let (rx, first) = woken.expect("the ping wakes the waiting writer").unwrap();
        assert!(matches!(first, Some(Message::Ping(_))), "{first:?}");
        assert!(outbox.push("a".into()));
        outbox.ping();
        let next = rx.recv().await;
        assert!(matches!(next, Some(Message::Ping(_))), "the ping first: {next:?}");
        assert_eq!(rx.recv_text().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_push_to_a_client_that_reads_nothing_closes_it_as_slow() {
        let (outbox, _rx) = Outbox::new(100, 10);
        assert!(outbox.push("123456".into()));
        assert!(!outbox.push_paced("1".into(), Duration::from_secs(5)).await);
        assert_eq!(outbox.closing().reason(), Some(CloseReason::SLOW_CONSUMER));
    }
}
