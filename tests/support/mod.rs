//! Test harness: an embedded deployment on port 0 with a temporary SQLite
//! file, and a small WebSocket client speaking protocol v1.

#![allow(dead_code, unreachable_pub)]

pub mod binaries;
pub mod cluster;
pub mod presence;
pub mod webhook;
pub mod workload;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::embedded::{Embedded, EmbeddedConfig};
use switchboard_edge::auth::{Claims, issue_hs256};
use switchboard_edge::config::EdgeConfig;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const SECRET: &str = "integration-test-secret-0123456789";

pub struct Harness {
    pub embedded: Embedded,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(tune_edge: fn(&mut EdgeConfig)) -> Harness {
    start_configured(|config| config.tune_edge = tune_edge).await
}

pub async fn start_configured(tune: impl FnOnce(&mut EmbeddedConfig)) -> Harness {
    telemetry();
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = EmbeddedConfig::new(dir.path().join("chat.db"), [any, any]);
    config.jwt_secret = SECRET.into();
    tune(&mut config);
    let embedded = Embedded::start(config).await.expect("embedded deployment starts");
    Harness { embedded, _dir: dir }
}

/// Logging, and trace export when the test process itself has an OTLP
/// endpoint: started once, and kept for the whole run (dropping the
/// exporter would stop it).
pub fn telemetry() {
    static EXPORTER: std::sync::OnceLock<switchboard_core::traces::Exporter> = std::sync::OnceLock::new();
    EXPORTER.get_or_init(|| switchboard_core::telemetry::init("switchboard-tests"));
}

impl Harness {
    pub fn edge(&self, i: usize) -> SocketAddr {
        self.embedded.edges[i]
    }

    pub async fn stop(self) {
        self.embedded.stop().await;
    }
}

pub fn token(user: &str) -> String {
    issue_hs256(SECRET.as_bytes(), &Claims { sub: user.into(), name: Some(format!("{user} name")), exp: 4_000_000_000 })
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for another kind, kept in arrival order.
    buffered: VecDeque<Value>,
    refs: u64,
    pub user: String,
}

impl Client {
    /// Connects as `user` and consumes the `welcome` frame.
    pub async fn connect(addr: SocketAddr, user: &str) -> Client {
        Client::connect_with_token(addr, user, &token(user)).await
    }

    /// Connects as `user` and joins `room` from its current end.
    pub async fn in_room(addr: SocketAddr, user: &str, room: &str) -> Client {
        let mut client = Client::connect(addr, user).await;
        client.join(room, None).await;
        client
    }

    /// Wraps an already connected stream (frames are read as they come).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { ws, buffered: VecDeque::new(), refs: 0, user: String::new() }
    }

    pub fn next_ref(&mut self) -> String {
        self.refs += 1;
        format!("r{}", self.refs)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.expect("send frame");
    }

    pub async fn ws_send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send frame");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Next text frame as JSON (pings are skipped).
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.buffered.pop_front() {
            return frame;
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("frame within timeout")
                .expect("connection open")
                .expect("frame ok");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Next frame of the given type; frames of other types stay buffered
    /// for later calls.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        if let Some(i) = self.buffered.iter().position(|f| f["type"] == kind) {
            return self.buffered.remove(i).unwrap();
        }
        loop {
            let frame = self.recv_wire().await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(frame["type"] != "error", "unexpected error while waiting for {kind}: {frame}");
            self.buffered.push_back(frame);
        }
    }

    /// Reads for `period` and returns how many pings came (the library
    /// answers each as it reads on); anything else fails the test.
    pub async fn pings_for(&mut self, period: Duration) -> usize {
        let until = tokio::time::Instant::now() + period;
        let mut pings = 0;
        while let Ok(message) = tokio::time::timeout_at(until, self.ws.next()).await {
            match message {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("expected only pings, got {other:?}"),
            }
        }
        pings
    }

    /// Waits for the close frame; returns its code.
    pub async fn recv_close(&mut self) -> u16 {
        loop {
            let message = tokio::time::timeout(TIMEOUT, self.ws.next()).await.expect("close within timeout");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
                Some(Err(e)) => panic!("error instead of close: {e}"),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Joins and returns the `joined` frame.
    pub async fn join(&mut self, room: &str, since: Option<u64>) -> Value {
        let reference = self.next_ref();
        let mut frame = json!({"type": "join", "ref": reference, "room": room});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        self.send_json(frame).await;
        let joined = self.recv_type("joined").await;
        assert_eq!(joined["ref"], reference.as_str());
        joined
    }

    /// Sends a message and waits for its `ack`; returns the message id.
    pub async fn say(&mut self, room: &str, client_id: &str, body: &str) -> String {
        let reference = self.say_no_wait(room, client_id, body).await;
        let ack = self.recv_type("ack").await;
        assert_eq!(ack["ref"], reference.as_str(), "{ack}");
        assert_eq!(ack["status"], "accepted");
        ack["id"].as_str().unwrap().to_owned()
    }

    pub async fn say_no_wait(&mut self, room: &str, client_id: &str, body: &str) -> String {
        let reference = self.next_ref();
        self.send_json(json!({"type": "send", "ref": reference, "room": room, "client_id": client_id, "body": body}))
            .await;
        reference
    }

    /// Collects the next `n` `message` frames of `room`; other frames stay buffered.
    pub async fn messages(&mut self, room: &str, n: usize) -> Vec<Value> {
        let is_wanted = |f: &Value| f["type"] == "message" && f["room"] == room;
        let mut got = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(frame) = self.buffered.pop_front() {
            if got.len() < n && is_wanted(&frame) { got.push(frame) } else { kept.push_back(frame) }
        }
        self.buffered = kept;
        while got.len() < n {
            let frame = self.recv_wire().await;
            if is_wanted(&frame) { got.push(frame) } else { self.buffered.push_back(frame) }
        }
        got
    }
}

pub fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// The body of a plain HTTP GET to one of the edges (status must be 200).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http(addr, "GET", path, &[], "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// One plain HTTP/1.1 request; the status and the body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8(reply).expect("a text reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

/// A token for the admin API (`admin: true`).
pub fn admin_token(user: &str) -> String {
    issue_hs256(SECRET.as_bytes(), &json!({"sub": user, "admin": true, "exp": 4_000_000_000u64}))
}

/// A request to an edge's admin API with an admin token; the status and
/// the JSON body.
pub async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {}", admin_token("ops"));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, text) = http(addr, method, path, &headers, &body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl Harness {
    /// Issues a room command through the admin API (202 expected) and waits
    /// until the persister has applied it.
    pub async fn room_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, command) = admin(self.edge(0), method, path, body).await;
        assert_eq!(status, 202, "{method} {path}: {command}");
        let id = command["id"].as_str().expect("the command's id").to_owned();
        eventually(TIMEOUT, Duration::from_millis(20), async || match self.embedded.store.command_applied(&id).await {
            Ok(true) => Ok(()),
            _ => Err(format!("command {id} not applied within {TIMEOUT:?}")),
        })
        .await;
        command
    }
}

/// Asks `check` every `every` until it answers `Ok`, and returns that
/// value; after `within`, fails with what its last `Err` said was still wrong.
pub async fn eventually<T>(within: Duration, every: Duration, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(still) => assert!(tokio::time::Instant::now() < deadline, "{still}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// The value of one series (`name` or `name{labels}`, exactly as exported)
/// scraped from an edge's `/metrics`; 0 when the series is absent.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = http_get(addr, "/metrics").await;
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// The series' value once it reaches `want`, or its last value after 10 s: a
/// process may count a delivery report a moment after the client saw it.
pub async fn metric_reaching(addr: SocketAddr, series: &str, want: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = metric(addr, series).await;
        if got == want || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An edge started next to the embedded ones (the same mock cluster, store
/// and workers) with settings a test chooses, e.g. an identity provider's
/// JWKS URL. Stop it before the harness.
pub struct ExtraEdge {
    pub addr: SocketAddr,
    pub state: std::sync::Arc<switchboard_edge::state::EdgeState>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Starts edge `node` with the embedded default's edge settings (HS256
    /// with [`SECRET`]), changed by `tune`; `Edge::start`'s error if it fails.
    pub async fn start_edge(
        &self,
        node: &str,
        tune: impl FnOnce(&mut EdgeConfig),
    ) -> Result<ExtraEdge, switchboard_edge::server::EdgeError> {
        let embedded = &self.embedded;
        embedded.brokers().create_topic(&embedded.topics.deliver(node), 1).expect("delivery topic");
        let kafka = embedded.kafka.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = EdgeConfig::for_node(node, addr, SECRET);
        config.drain_grace = Duration::from_secs(1);
        tune(&mut config);
        config.validate().expect("valid edge settings");
        let events = std::sync::Arc::new(switchboard_edge::events::EdgeEvents::new(
            &switchboard_core::metrics::Metrics::default(),
        ));
        let edge = switchboard_edge::server::Edge::start(
            config,
            &kafka,
            embedded.topics.clone(),
            embedded.store.clone(),
            events,
        )
        .await?;
        let state = edge.state().clone();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = edge.serve(listener, token).await {
                tracing::error!(error = %e, "extra edge failed");
            }
        });
        Ok(ExtraEdge { addr, state, shutdown, task })
    }
}

impl ExtraEdge {
    /// Drains and stops the edge.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

impl Client {
    /// Connects with `token` (whose `sub` is `user`) and consumes the `welcome` frame.
    pub async fn connect_with_token(addr: SocketAddr, user: &str, token: &str) -> Client {
        let url = format!("ws://{addr}/ws?token={token}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        let mut client = Client { ws, buffered: VecDeque::new(), refs: 0, user: user.into() };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["user"], user);
        client
    }
}

/// A handshake with `token` that the edge must refuse: its HTTP status and
/// the JSON body naming the reason.
pub async fn refused_handshake(addr: SocketAddr, token: &str) -> (u16, Value) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await {
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        Ok(_) => panic!("the handshake was accepted"),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}
