//! A chat workload that keeps going through faults, and the check of what it
//! leaves behind.
//!
//! Senders send uniquely numbered messages at a steady pace and behave like a
//! careful client: a send that was not acknowledged before its connection
//! died, or that got `unavailable`, is sent again with the same `client_id`.
//! Receivers record every seq they are shown and, when their connection dies,
//! rejoin on the other edge with `since`. A connection that fails moves to the
//! other edge, as a load balancer would move it.
//!
//! The check compares three views: what senders were told was accepted, the
//! rows in PostgreSQL, and what each receiver saw. Failures name the missing
//! client ids and seqs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::Row as _;
use sqlx::postgres::PgConnection;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::token;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Clone, Debug)]
pub struct Workload {
    pub rooms: usize,
    pub senders_per_room: usize,
    pub receivers_per_room: usize,
    pub messages_per_sender: usize,
    /// Pause between two sends of one sender.
    pub interval: Duration,
    /// Sends one sender may have awaiting their ack.
    pub window: usize,
    /// Senders give up on what is still unacknowledged after this long.
    pub send_deadline: Duration,
    /// Receivers wait this long for the last seq once sending has ended.
    pub receive_deadline: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            rooms: 3,
            senders_per_room: 2,
            receivers_per_room: 2,
            messages_per_sender: 150,
            interval: Duration::from_millis(25),
            window: 32,
            send_deadline: Duration::from_secs(120),
            receive_deadline: Duration::from_secs(60),
        }
    }
}

impl Workload {
    pub fn total(&self) -> usize {
        self.rooms * self.senders_per_room * self.messages_per_sender
    }

    pub fn room(&self, tag: &str, r: usize) -> String {
        format!("{tag}-room-{r}")
    }
}

/// What one sender ended with.
#[derive(Debug, Default)]
pub struct SenderLog {
    pub user: String,
    pub room: String,
    /// client_id → message id from the `ack`.
    pub accepted: BTreeMap<String, String>,
    /// client_ids never acknowledged before the deadline.
    pub unacknowledged: Vec<String>,
    /// `unavailable` errors received (each was retried).
    pub unavailable: u64,
    /// Any other error frame: these fail the check.
    pub other_errors: Vec<Value>,
    pub reconnects: u64,
    /// Longest wait from a send to its ack (or error).
    pub slowest_ack: Duration,
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct ReceiverLog {
    pub user: String,
    pub room: String,
    /// seq → message id, duplicates dropped.
    pub seen: BTreeMap<u64, String>,
    pub duplicates: u64,
    /// New seqs shown after a higher one (order broken).
    pub out_of_order: Vec<u64>,
    /// A seq shown twice with different ids.
    pub conflicts: Vec<(u64, String, String)>,
    pub reconnects: u64,
    pub not_recovered: u64,
}

/// A running workload; `finish` waits for it and returns the logs.
pub struct Running {
    senders: Vec<tokio::task::JoinHandle<SenderLog>>,
    receivers: Vec<tokio::task::JoinHandle<ReceiverLog>>,
    targets: watch::Sender<Option<HashMap<String, u64>>>,
    workload: Workload,
    tag: String,
    acked: Arc<AtomicU64>,
}

pub struct Outcome {
    pub senders: Vec<SenderLog>,
    pub receivers: Vec<ReceiverLog>,
    pub rows: HashMap<String, Vec<Stored>>,
}

/// One stored message.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub id: String,
    pub sender: String,
    pub client_id: String,
}

/// Connects every receiver, then starts every sender; returns while they run.
pub async fn start(edges: &[SocketAddr], tag: &str, workload: Workload) -> Running {
    let edges: Arc<Vec<SocketAddr>> = Arc::new(edges.to_vec());
    let (targets, targets_rx) = watch::channel(None);
    let mut receivers = Vec::new();
    let mut joined = Vec::new();
    for r in 0..workload.rooms {
        for k in 0..workload.receivers_per_room {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let log = ReceiverLog {
                user: format!("{tag}-r{r}-reader{k}"),
                room: workload.room(tag, r),
                ..Default::default()
            };
            receivers.push(tokio::spawn(receive(
                edges.clone(),
                k % edges.len(),
                log,
                targets_rx.clone(),
                workload.receive_deadline,
                ready_tx,
            )));
            joined.push(ready_rx);
        }
    }
    for ready in joined {
        tokio::time::timeout(Duration::from_secs(30), ready).await.expect("receivers join").expect("receiver joined");
    }
    let mut senders = Vec::new();
    let acked = Arc::new(AtomicU64::new(0));
    for r in 0..workload.rooms {
        for k in 0..workload.senders_per_room {
            let log =
                SenderLog { user: format!("{tag}-r{r}-writer{k}"), room: workload.room(tag, r), ..Default::default() };
            let at = (r + k) % edges.len();
            senders.push(tokio::spawn(send(edges.clone(), at, log, workload.clone(), acked.clone())));
        }
    }
    Running { senders, receivers, targets, workload, tag: tag.to_owned(), acked }
}

impl Running {
    /// Sends acknowledged so far, over all senders.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Proves a fault lands while the stream runs: some sends are
    /// acknowledged, not all. Returns how many.
    pub fn assert_mid_stream(&self) -> u64 {
        let acked = self.acked();
        let total = self.workload.total() as u64;
        assert!(acked > 0 && acked < total, "the fault must land mid-stream, but {acked} of {total} sends are acked");
        acked
    }

    /// Waits for the senders, reads what PostgreSQL holds, lets the receivers
    /// catch up to each room's last seq, and returns everything.
    pub async fn finish(self, db: &mut PgConnection) -> Outcome {
        let mut senders = Vec::new();
        for handle in self.senders {
            senders.push(handle.await.expect("sender task"));
        }
        // Accepted sends reach the database shortly after; wait until every
        // accepted one is there (or the deadline passes and the check names them).
        let accepted: usize = senders.iter().map(|s| s.accepted.len()).sum();
        let deadline = Instant::now() + self.workload.receive_deadline;
        let mut rows = read_rows(db, &self.workload, &self.tag).await;
        while rows.values().map(Vec::len).sum::<usize>() < accepted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rows = read_rows(db, &self.workload, &self.tag).await;
        }
        let targets = rows.iter().map(|(room, rows)| (room.clone(), rows.last().map_or(0, |r| r.seq))).collect();
        self.targets.send_replace(Some(targets));
        let mut receivers = Vec::new();
        for handle in self.receivers {
            receivers.push(handle.await.expect("receiver task"));
        }
        Outcome { senders, receivers, rows }
    }
}

async fn read_rows(db: &mut PgConnection, workload: &Workload, tag: &str) -> HashMap<String, Vec<Stored>> {
    let mut all = HashMap::new();
    for r in 0..workload.rooms {
        let room = workload.room(tag, r);
        let rows = sqlx::query("SELECT seq, id, sender, client_id FROM messages WHERE room = $1 ORDER BY seq")
            .bind(&room)
            .fetch_all(&mut *db)
            .await
            .expect("read messages");
        let rows = rows
            .iter()
            .map(|row| Stored {
                seq: row.get::<i64, _>("seq") as u64,
                id: row.get("id"),
                sender: row.get("sender"),
                client_id: row.get("client_id"),
            })
            .collect();
        all.insert(room, rows);
    }
    all
}

impl Outcome {
    /// The promises: every accepted send stored exactly once, seqs gapless
    /// per room, every receiver saw every seq, nothing refused. Panics with
    /// the names of what is missing.
    pub fn check(&self) {
        let mut problems = Vec::new();
        for s in &self.senders {
            if !s.unacknowledged.is_empty() {
                problems.push(format!("{} never got an ack for {:?}", s.user, s.unacknowledged));
            }
            if !s.other_errors.is_empty() {
                problems.push(format!("{} got errors {:?}", s.user, s.other_errors));
            }
        }
        for (room, rows) in &self.rows {
            let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
            let expected: Vec<u64> = (1..=rows.len() as u64).collect();
            if seqs != expected {
                let present: BTreeSet<u64> = seqs.iter().copied().collect();
                let gaps: Vec<u64> = (1..=seqs.last().copied().unwrap_or(0)).filter(|s| !present.contains(s)).collect();
                problems.push(format!("{room}: seqs not 1..{}: missing {gaps:?}", rows.len()));
            }
            let stored: HashMap<(&str, &str), &Stored> =
                rows.iter().map(|r| ((r.sender.as_str(), r.client_id.as_str()), r)).collect();
            if stored.len() != rows.len() {
                problems.push(format!("{room}: a (sender, client_id) is stored twice"));
            }
            let mut missing = Vec::new();
            let mut wrong_id = Vec::new();
            let mut sent = 0;
            for s in self.senders.iter().filter(|s| &s.room == room) {
                sent += s.accepted.len();
                for (client_id, id) in &s.accepted {
                    match stored.get(&(s.user.as_str(), client_id.as_str())) {
                        None => missing.push(format!("{}/{client_id}", s.user)),
                        Some(row) if &row.id != id => wrong_id.push(format!("{}/{client_id}", s.user)),
                        Some(_) => {}
                    }
                }
            }
            if !missing.is_empty() {
                problems.push(format!("{room}: accepted but not stored: {missing:?}"));
            }
            if !wrong_id.is_empty() {
                problems.push(format!("{room}: stored under another id than acked: {wrong_id:?}"));
            }
            if rows.len() != sent {
                problems.push(format!("{room}: {} rows stored, {sent} sends accepted", rows.len()));
            }
            let by_seq: HashMap<u64, &str> = rows.iter().map(|r| (r.seq, r.id.as_str())).collect();
            for receiver in self.receivers.iter().filter(|r| &r.room == room) {
                let unseen: Vec<u64> = seqs.iter().copied().filter(|s| !receiver.seen.contains_key(s)).collect();
                if !unseen.is_empty() {
                    problems.push(format!("{} in {room} never saw seqs {unseen:?}", receiver.user));
                }
                let mismatched: Vec<u64> = receiver
                    .seen
                    .iter()
                    .filter(|(seq, id)| by_seq.get(seq).is_none_or(|stored| stored != id))
                    .map(|(seq, _)| *seq)
                    .collect();
                if !mismatched.is_empty() {
                    problems
                        .push(format!("{} saw seqs {mismatched:?} that differ from the stored rows", receiver.user));
                }
                if !receiver.out_of_order.is_empty() {
                    problems.push(format!(
                        "{} was shown seqs {:?} after higher ones",
                        receiver.user, receiver.out_of_order
                    ));
                }
                if !receiver.conflicts.is_empty() {
                    problems
                        .push(format!("{} was shown one seq with two ids: {:?}", receiver.user, receiver.conflicts));
                }
            }
        }
        assert!(problems.is_empty(), "the workload's promises were broken:\n  {}", problems.join("\n  "));
    }

    pub fn summary(&self) -> String {
        let rows: usize = self.rows.values().map(Vec::len).sum();
        let unavailable = self.total_unavailable();
        let sender_reconnects: u64 = self.senders.iter().map(|s| s.reconnects).sum();
        let receiver_reconnects: u64 = self.receivers.iter().map(|r| r.reconnects).sum();
        let duplicates: u64 = self.receivers.iter().map(|r| r.duplicates).sum();
        let slowest_ack = self.senders.iter().map(|s| s.slowest_ack).max().unwrap_or_default();
        format!(
            "{rows} messages stored; {unavailable} unavailable errors retried; reconnects: {sender_reconnects} \
             senders, {receiver_reconnects} receivers; {duplicates} duplicate deliveries dropped; slowest ack \
             {slowest_ack:.1?}"
        )
    }

    pub fn total_unavailable(&self) -> u64 {
        self.senders.iter().map(|s| s.unavailable).sum()
    }

    pub fn total_reconnects(&self) -> u64 {
        self.senders.iter().map(|s| s.reconnects).sum::<u64>()
            + self.receivers.iter().map(|r| r.reconnects).sum::<u64>()
    }
}

/// Connects to `edges[*at]`, moving to the next edge after each failure,
/// until `deadline`.
async fn connect(edges: &[SocketAddr], at: &mut usize, user: &str, deadline: Instant) -> Option<Ws> {
    while Instant::now() < deadline {
        let url = format!("ws://{}/ws?token={}", edges[*at], token(user));
        if let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await
            && let Some(Ok(frame)) = next_json(&mut ws).await
            && frame["type"] == "welcome"
        {
            return Some(ws);
        }
        *at = (*at + 1) % edges.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The next text frame as JSON; `None` when the connection ended.
async fn next_json(ws: &mut Ws) -> Option<Result<Value, ()>> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).map_err(|_| ())),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Joins `room` with `since`; `None` if the connection ended or the join
/// was refused with a retryable error.
async fn join(ws: &mut Ws, room: &str, since: u64, reference: &str) -> Option<Value> {
    let frame = json!({"type": "join", "ref": reference, "room": room, "since": since});
    ws.send(Message::text(frame.to_string())).await.ok()?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), next_json(ws)).await.ok()??.ok()?;
        if frame["ref"] == reference {
            return (frame["type"] == "joined").then_some(frame);
        }
    }
}

async fn send(
    edges: Arc<Vec<SocketAddr>>,
    mut at: usize,
    mut log: SenderLog,
    workload: Workload,
    acked: Arc<AtomicU64>,
) -> SenderLog {
    let deadline = Instant::now() + workload.send_deadline;
    let mut pending: VecDeque<String> =
        (0..workload.messages_per_sender).map(|i| format!("{}-{i:05}", log.user)).collect();
    // ref → (client_id, when sent) of sends awaiting their ack.
    let mut in_flight: HashMap<String, (String, Instant)> = HashMap::new();
    let mut refs = 0u64;
    let mut first = true;
    'connection: while (!pending.is_empty() || !in_flight.is_empty()) && Instant::now() < deadline {
        if !first {
            log.reconnects += 1;
            at = (at + 1) % edges.len();
        }
        first = false;
        // Whatever was in flight on a dead connection is unknown: send it again.
        for (_, (client_id, _)) in in_flight.drain() {
            pending.push_front(client_id);
        }
        let Some(mut ws) = connect(&edges, &mut at, &log.user, deadline).await else { break };
        refs += 1;
        if join(&mut ws, &log.room, 0, &format!("j{refs}")).await.is_none() {
            continue;
        }
        let mut tick = tokio::time::interval(workload.interval);
        loop {
            if pending.is_empty() && in_flight.is_empty() {
                break 'connection;
            }
            tokio::select! {
                _ = tick.tick(), if !pending.is_empty() && in_flight.len() < workload.window => {
                    let client_id = pending.pop_front().unwrap();
                    refs += 1;
                    let reference = format!("s{refs}");
                    let frame = json!({"type": "send", "ref": reference, "room": log.room, "client_id": client_id,
                                       "body": format!("{client_id} from {}", log.user)});
                    in_flight.insert(reference, (client_id, Instant::now()));
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        continue 'connection;
                    }
                }
                frame = next_json(&mut ws) => {
                    let Some(Ok(frame)) = frame else { continue 'connection };
                    let Some(reference) = frame["ref"].as_str() else { continue };
                    let Some((client_id, sent_at)) = in_flight.remove(reference) else { continue };
                    log.slowest_ack = log.slowest_ack.max(sent_at.elapsed());
                    match (frame["type"].as_str(), frame["code"].as_str()) {
                        (Some("ack"), _) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            log.accepted.insert(client_id, frame["id"].as_str().unwrap_or_default().to_owned());
                        }
                        (Some("error"), Some("unavailable")) => {
                            log.unavailable += 1;
                            pending.push_back(client_id);
                        }
                        _ => log.other_errors.push(frame),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break 'connection,
            }
        }
    }
    log.unacknowledged = pending.into_iter().chain(in_flight.into_values().map(|(client_id, _)| client_id)).collect();
    log.unacknowledged.sort();
    log
}

async fn receive(
    edges: Arc<Vec<SocketAddr>>,
    mut at: usize,
    mut log: ReceiverLog,
    mut targets: watch::Receiver<Option<HashMap<String, u64>>>,
    receive_deadline: Duration,
    ready: tokio::sync::oneshot::Sender<()>,
) -> ReceiverLog {
    let mut ready = Some(ready);
    // Until sending ends there is no real deadline; then `receive_deadline`.
    let mut deadline = Instant::now() + Duration::from_secs(3600);
    let mut target: Option<u64> = None;
    let mut refs = 0u64;
    let done = |log: &ReceiverLog, target: Option<u64>| {
        target.is_some_and(|t| log.seen.len() as u64 >= t && log.seen.keys().next_back().copied().unwrap_or(0) >= t)
    };
    let mut first = true;
    'connection: while !done(&log, target) && Instant::now() < deadline {
        if !first {
            log.reconnects += 1;
            at = (at + 1) % edges.len();
        }
        first = false;
        let Some(mut ws) =
            connect(&edges, &mut at, &log.user, deadline.min(Instant::now() + Duration::from_secs(120))).await
        else {
            break;
        };
        refs += 1;
        // Resume after the highest seq below which nothing is missing.
        let since = contiguous_until(&log.seen);
        let Some(joined) = join(&mut ws, &log.room, since, &format!("j{refs}")).await else { continue };
        if joined["recovered"] == false {
            log.not_recovered += 1;
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        loop {
            if done(&log, target) {
                break 'connection;
            }
            tokio::select! {
                frame = next_json(&mut ws) => {
                    let Some(Ok(frame)) = frame else { continue 'connection };
                    if frame["type"] != "message" || frame["room"] != log.room.as_str() {
                        continue;
                    }
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    let id = frame["id"].as_str().unwrap_or_default().to_owned();
                    match log.seen.get(&seq) {
                        Some(known) if *known == id => log.duplicates += 1,
                        Some(known) => {
                            let known = known.clone();
                            log.conflicts.push((seq, known, id));
                        }
                        None => {
                            if log.seen.keys().next_back().is_some_and(|&highest| highest > seq) {
                                log.out_of_order.push(seq);
                            }
                            log.seen.insert(seq, id);
                        }
                    }
                }
                changed = targets.changed(), if target.is_none() => {
                    if changed.is_ok() {
                        target = targets.borrow().as_ref().and_then(|t| t.get(&log.room).copied());
                        deadline = Instant::now() + receive_deadline;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break 'connection,
            }
        }
    }
    log
}

fn contiguous_until(seen: &BTreeMap<u64, String>) -> u64 {
    let mut last = 0;
    for &seq in seen.keys() {
        if seq != last + 1 {
            break;
        }
        last = seq;
    }
    last
}
