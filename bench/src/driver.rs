//! The load driver: opens the connections, joins rooms, sends on a fixed
//! schedule (open loop: a late send never delays the next one) and measures
//! send→deliver latency per receiver.
//!
//! Latency is measured from each send's *intended* time, carried in its
//! body, not from when the driver got round to sending it. That is the
//! coordinated-omission correction: a stalled server cannot hide its stall
//! by slowing the driver down.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::net::TcpSocket;
use tokio::sync::{Barrier, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::procstat;
use crate::protocol::{Codec, Incoming, body, intended_us};

#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// host:port of each server process; connections are spread over them.
    pub targets: Vec<String>,
    pub connections: usize,
    pub room_size: usize,
    /// Messages per second over all connections (0: idle connections).
    pub rate: f64,
    pub payload: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Loopback source addresses 127.0.0.2.., so ephemeral ports last.
    pub sources: u8,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub connections: usize,
    pub connect_failures: u64,
    pub rooms: usize,
    pub rate_target: f64,
    /// Sends whose intended time fell in the measured window.
    pub sent: u64,
    pub accepted: u64,
    /// Every ack, in the window or not (the soak checks each one is stored).
    pub acked: u64,
    pub errors: u64,
    pub delivered: u64,
    pub expected_deliveries: u64,
    pub seconds: f64,
    pub accepted_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub server_cpu_seconds: f64,
    /// Server CPU per second of the measured window (1.0 = one core busy).
    pub server_cpu_cores: f64,
    /// The same, per server process name (two edges are one `edge` entry).
    pub server_cpu_split: BTreeMap<String, f64>,
    pub server_rss_kib_before: u64,
    pub server_rss_kib_connected: u64,
    pub rss_bytes_per_connection: f64,
    /// Latency percentiles per second of the window, for plots: (second, p50_ms, p99_ms, deliveries).
    pub timeline: Vec<(u64, f64, f64, u64)>,
}

struct Shared {
    codec: Codec,
    load: Load,
    /// Time zero of intended send times.
    epoch: Instant,
    /// Measured window, in µs since `epoch`.
    window: (u64, u64),
    sent: AtomicU64,
    accepted: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    delivered: AtomicU64,
    connect_failures: AtomicU64,
    /// Latency recorders shared by the connections (connection i uses shard
    /// i % SHARDS): a histogram is about 150 KiB, too much to keep per
    /// connection, and few shards keep lock contention low.
    latencies: Vec<Mutex<Latencies>>,
}

const SHARDS: usize = 16;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Latencies of the measured window, overall and per second of it.
struct Latencies {
    all: Histogram<u64>,
    per_second: Vec<(Histogram<u64>, u64)>,
}

impl Latencies {
    fn new() -> Self {
        Latencies { all: histogram(), per_second: Vec::new() }
    }

    fn record(&mut self, second: usize, latency_us: u64) {
        self.all.saturating_record(latency_us);
        if self.per_second.len() <= second {
            self.per_second.resize_with(second + 1, || (histogram(), 0));
        }
        self.per_second[second].0.saturating_record(latency_us);
        self.per_second[second].1 += 1;
    }

    fn add(&mut self, other: &Latencies) {
        self.all.add(&other.all).ok();
        for (second, (h, n)) in other.per_second.iter().enumerate() {
            if self.per_second.len() <= second {
                self.per_second.resize_with(second + 1, || (histogram(), 0));
            }
            self.per_second[second].0.add(h).ok();
            self.per_second[second].1 += n;
        }
    }
}

/// Runs one load and returns its figures; `pids` are the server processes to watch.
pub async fn run(mut codec: Codec, load: Load, pids: &[u32], label: &str) -> anyhow::Result<Report> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    codec.run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros());
    let before = procstat::total(pids);
    // Connections are all up before the schedule starts.
    let setup = Duration::from_secs(1 + (load.connections as u64).div_ceil(1000) * 2);
    let epoch = Instant::now() + setup;
    let window_start = load.warmup.as_micros() as u64;
    let window = (window_start, window_start + load.duration.as_micros() as u64);
    let shared = Arc::new(Shared {
        codec,
        load: load.clone(),
        epoch,
        window,
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        connect_failures: AtomicU64::new(0),
        latencies: (0..SHARDS).map(|_| Mutex::new(Latencies::new())).collect(),
    });
    let connected = Arc::new(Barrier::new(load.connections + 1));
    let opening = Arc::new(Semaphore::new(256));
    let progress = ProgressBar::new(load.connections as u64).with_style(
        ProgressStyle::with_template("{prefix:>24} {bar:30} {pos}/{len} {msg}").expect("progress template"),
    );
    progress.set_prefix(format!("{label} connect"));
    let mut tasks = Vec::with_capacity(load.connections);
    for i in 0..load.connections {
        let shared = shared.clone();
        let connected = connected.clone();
        let opening = opening.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move { connection(i, shared, connected, opening, progress).await }));
    }
    connected.wait().await;
    let at_connect = procstat::total(pids).rss_kib;
    progress.finish_and_clear();

    let total = load.warmup + load.duration;
    let cpu_at_window;
    let split_at_window;
    if load.rate > 0.0 {
        let bar = ProgressBar::new(total.as_secs()).with_style(
            ProgressStyle::with_template("{prefix:>24} {bar:30} {pos}/{len}s {msg}").expect("progress template"),
        );
        bar.set_prefix(label.to_owned());
        tokio::time::sleep_until(epoch + load.warmup).await;
        cpu_at_window = procstat::total(pids).cpu_seconds;
        split_at_window = procstat::by_name(pids);
        while Instant::now() < epoch + total {
            tokio::time::sleep(Duration::from_millis(250)).await;
            bar.set_position(epoch.elapsed().as_secs().min(total.as_secs()));
            bar.set_message(format!(
                "sent {} acked {} delivered {} errors {}",
                shared.sent.load(Ordering::Relaxed),
                shared.accepted.load(Ordering::Relaxed),
                shared.delivered.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed)
            ));
        }
        bar.finish_and_clear();
    } else {
        // Idle: hold the connections a moment so memory settles.
        tokio::time::sleep(Duration::from_secs(2)).await;
        cpu_at_window = procstat::total(pids).cpu_seconds;
        split_at_window = BTreeMap::new();
    }
    let end = procstat::total(pids);
    let split_at_end = if load.rate > 0.0 { procstat::by_name(pids) } else { BTreeMap::new() };
    // The larger of right after connecting and after the run: memory may settle late.
    let rss_connected = at_connect.max(end.rss_kib);

    for task in tasks {
        task.await.context("connection task")?;
    }
    let mut merged = Latencies::new();
    for shard in &shared.latencies {
        merged.add(&shard.lock().expect("latency shard"));
    }
    let seconds = load.duration.as_secs_f64();
    let sent = shared.sent.load(Ordering::Relaxed);
    let ms = |q: f64| merged.all.value_at_quantile(q) as f64 / 1000.0;
    let connections = load.connections;
    Ok(Report {
        connections,
        connect_failures: shared.connect_failures.load(Ordering::Relaxed),
        rooms: connections.div_ceil(load.room_size),
        rate_target: load.rate,
        sent,
        accepted: shared.accepted.load(Ordering::Relaxed),
        acked: shared.acked.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        expected_deliveries: sent * load.room_size as u64,
        seconds,
        accepted_per_sec: shared.accepted.load(Ordering::Relaxed) as f64 / seconds,
        deliveries_per_sec: shared.delivered.load(Ordering::Relaxed) as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: merged.all.max() as f64 / 1000.0,
        server_cpu_seconds: end.cpu_seconds - before.cpu_seconds,
        server_cpu_cores: if load.rate > 0.0 { (end.cpu_seconds - cpu_at_window) / seconds } else { 0.0 },
        server_cpu_split: split_at_end
            .iter()
            .map(|(name, cpu)| (name.clone(), (cpu - split_at_window.get(name).unwrap_or(cpu)) / seconds))
            .collect(),
        server_rss_kib_before: before.rss_kib,
        server_rss_kib_connected: rss_connected,
        rss_bytes_per_connection: (rss_connected.saturating_sub(before.rss_kib) * 1024) as f64
            / connections.max(1) as f64,
        timeline: merged
            .per_second
            .iter()
            .enumerate()
            .map(|(s, (h, n))| {
                (s as u64, h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0, *n)
            })
            .collect(),
    })
}

/// One client: connect, join, then send on schedule and record deliveries
/// until the window (plus a grace period for late deliveries) is over.
async fn connection(
    i: usize,
    shared: Arc<Shared>,
    connected: Arc<Barrier>,
    opening: Arc<Semaphore>,
    progress: ProgressBar,
) {
    let load = &shared.load;
    let room = format!("room-{}", i / load.room_size);
    let opened = {
        let _permit = opening.acquire().await;
        open(i, &shared.codec, &shared.load, &room).await
    };
    progress.inc(1);
    connected.wait().await;
    let Some(ws) = opened else {
        shared.connect_failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let latencies = &shared.latencies[i % SHARDS];
    let (mut sink, mut stream) = ws.split();
    let total_us = shared.window.1;
    let grace = Duration::from_secs(3);
    let end = shared.epoch + Duration::from_micros(total_us);

    // Writer: the schedule, plus protocol replies the reader asks for.
    let (replies, mut reply_rx) = mpsc::unbounded_channel::<&'static str>();
    let writer_shared = shared.clone();
    let writer = tokio::spawn(async move {
        let s = &writer_shared;
        let rate = s.load.rate;
        let interval_us = if rate > 0.0 { (s.load.connections as f64 / rate * 1e6) as u64 } else { u64::MAX };
        // Spread the connections' phases evenly over one interval.
        let mut next_us =
            if rate > 0.0 { (i as f64 / s.load.connections as f64 * interval_us as f64) as u64 } else { u64::MAX };
        let mut n = 0u64;
        loop {
            let due = s.epoch + Duration::from_micros(next_us.min(total_us + 1));
            tokio::select! {
                _ = tokio::time::sleep_until(due), if next_us < total_us => {
                    n += 1;
                    let text = s.codec.send(&room, &body(next_us, s.load.payload), n);
                    if next_us >= s.window.0 {
                        s.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    next_us += interval_us;
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                reply = reply_rx.recv() => match reply {
                    Some(text) => if sink.send(Message::text(text)).await.is_err() { break },
                    None => break,
                },
            }
        }
        let _ = sink.close().await;
    });

    let stop = end + grace;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = tokio::time::sleep_until(stop) => break,
        };
        let Some(Ok(Message::Text(text))) = frame else {
            if matches!(frame, Some(Ok(_))) {
                continue;
            }
            break;
        };
        match shared.codec.classify(&text) {
            Incoming::Message(body) => {
                let Some(intended) = intended_us(&body) else { continue };
                if intended < shared.window.0 || intended >= shared.window.1 {
                    continue;
                }
                let now_us = shared.epoch.elapsed().as_micros() as u64;
                let latency = now_us.saturating_sub(intended).max(1);
                let second = ((intended - shared.window.0) / 1_000_000) as usize;
                latencies.lock().expect("latency shard").record(second, latency);
                shared.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Ack => {
                shared.acked.fetch_add(1, Ordering::Relaxed);
                let now_us = shared.epoch.elapsed().as_micros() as u64;
                if now_us >= shared.window.0 && now_us < shared.window.1 {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Incoming::Error(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Reply(text) => {
                let _ = replies.send(text);
            }
            Incoming::Joined | Incoming::Connected | Incoming::Other => {}
        }
    }
    drop(replies);
    writer.abort();
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The driver's WebSocket settings. tungstenite zero-fills the free part of
/// its read buffer before every read; at the default 128 KiB that memset
/// was a third of the driver's CPU (perf, persistence scenario at 24,000
/// msg/s), CPU the servers it measures share. Frames here are a few hundred
/// bytes, so 4 KiB holds several per read.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024)
}

/// Connects from a loopback source address and joins `room`.
pub(crate) async fn open(i: usize, codec: &Codec, load: &Load, room: &str) -> Option<Ws> {
    let target = &load.targets[i % load.targets.len()];
    let addr: SocketAddr = target.parse().ok()?;
    let user = format!("u{i}");
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let socket = TcpSocket::new_v4().ok()?;
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % load.sources.max(1) as usize) as u8);
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
        let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr)).await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let url = codec.url(target, &user);
        let handshake = tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()));
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(Duration::from_secs(10), handshake).await else {
            continue;
        };
        let join = Message::text(codec.join(room));
        // Socket.IO first connects to the namespace and must wait for its reply.
        let first = match codec.hello() {
            Some(hello) => Message::text(hello),
            None => join.clone(),
        };
        if ws.send(first).await.is_err() {
            continue;
        }
        // Wait for the join's acknowledgement.
        let joined = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    match codec.classify(&text) {
                        Incoming::Joined => return true,
                        Incoming::Connected if ws.send(join.clone()).await.is_err() => return false,
                        Incoming::Error(_) => return false,
                        Incoming::Reply(reply) => {
                            let _ = ws.send(Message::text(reply)).await;
                        }
                        _ => {}
                    }
                }
            }
            false
        })
        .await;
        if joined == Ok(true) {
            return Some(ws);
        }
    }
    None
}

/// Opens connections `first..first + load.connections` (each joins its room)
/// and holds them idle, answering protocol pings, until `until` resolves.
/// `ready` is told how many connected and how many failed. The idle scenario
/// runs this in several processes (`sbbench hold`), as one process may hold
/// no more than 20,000 descriptors here.
pub async fn hold(
    mut codec: Codec,
    load: Load,
    first: usize,
    ready: impl FnOnce(usize, usize),
    until: impl std::future::Future<Output = ()>,
) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    codec.run = format!("hold{first}");
    let (codec, load) = (Arc::new(codec), Arc::new(load));
    let opening = Arc::new(Semaphore::new(256));
    let mut opens = Vec::with_capacity(load.connections);
    for i in first..first + load.connections {
        let (codec, load, opening) = (codec.clone(), load.clone(), opening.clone());
        opens.push(tokio::spawn(async move {
            let _permit = opening.acquire().await;
            open(i, &codec, &load, &format!("room-{}", i / load.room_size)).await
        }));
    }
    let mut held = Vec::with_capacity(opens.len());
    let mut failed = 0;
    for opened in opens {
        match opened.await.ok().flatten() {
            Some(ws) => {
                let codec = codec.clone();
                held.push(tokio::spawn(async move { idle(ws, &codec).await }));
            }
            None => failed += 1,
        }
    }
    ready(held.len(), failed);
    until.await;
    for connection in held {
        connection.abort();
    }
}

/// Reads an idle connection, answering the protocol's pings, until it closes.
async fn idle(mut ws: Ws, codec: &Codec) {
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message
            && let Incoming::Reply(reply) = codec.classify(&text)
            && ws.send(Message::text(reply)).await.is_err()
        {
            return;
        }
    }
}
