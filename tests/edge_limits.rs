//! What the edge refuses, and how: handshake errors as HTTP statuses before
//! the upgrade, bad frames as typed `error` frames on a connection that stays
//! usable, oversized frames with close code 1009.

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::{Client, start, start_with};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn handshake_status(request: impl IntoClientRequest + Unpin) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("handshake unexpectedly succeeded"),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_valid_token_get_401() {
    let h = start().await;
    let addr = h.edge(0);
    assert_eq!(handshake_status(format!("ws://{addr}/ws")).await, 401, "missing token");
    assert_eq!(handshake_status(format!("ws://{addr}/ws?token=garbage")).await, 401, "malformed token");
    let forged = switchboard_edge::auth::issue_hs256(
        b"some-other-secret-0123456789",
        &switchboard_edge::auth::Claims { sub: "eve".into(), name: None, exp: 4_000_000_000 },
    );
    assert_eq!(handshake_status(format!("ws://{addr}/ws?token={forged}")).await, 401, "wrong key");

    // The same token in an Authorization header is accepted.
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", support::token("alice")).parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_origins_and_extra_connections_are_refused() {
    let h = start_with(|c| {
        c.allowed_origins = vec!["https://chat.example.com".into()];
        c.max_connections_per_user = 1;
    })
    .await;
    let addr = h.edge(0);
    let url = format!("ws://{addr}/ws?token={}", support::token("alice"));
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("origin", "https://evil.example.com".parse().unwrap());
    assert_eq!(handshake_status(request).await, 403);

    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("origin", "https://chat.example.com".parse().unwrap());
    let (_first, _) = tokio_tungstenite::connect_async(request).await.expect("allowed origin connects");
    assert_eq!(handshake_status(url.as_str()).await, 429, "second connection of the same user");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_typed_errors_and_the_connection_stays_usable() {
    let h = start().await;
    let mut c = Client::connect(h.edge(0), "alice").await;
    let cases = [
        ("{not json", None, "bad_json"),
        ("[1,2,3]", None, "bad_json"),
        (r#"{"ref":"1"}"#, Some("1"), "unknown_type"),
        (r#"{"type":"dance","ref":"2"}"#, Some("2"), "unknown_type"),
        (r#"{"type":"join","ref":"3"}"#, Some("3"), "invalid_frame"),
        (r#"{"type":"send","ref":"4","room":"r","client_id":"c"}"#, Some("4"), "invalid_frame"),
        (r#"{"type":"join","ref":"5","room":"no/slashes"}"#, Some("5"), "invalid_room"),
        (r#"{"type":"send","ref":"6","room":"r","client_id":"c","body":"x"}"#, Some("6"), "not_joined"),
    ];
    for (text, reference, code) in cases {
        c.send_text(text).await;
        let err = c.recv().await;
        assert_eq!(err["type"], "error", "{text} -> {err}");
        assert_eq!(err["code"], code, "{text} -> {err}");
        assert_eq!(err["ref"].as_str(), reference, "{text} -> {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    c.join("r", None).await;
    let big = "x".repeat(5 * 1024);
    c.send_json(json!({"type": "send", "ref": "7", "room": "r", "client_id": "c", "body": big})).await;
    let err = c.recv().await;
    assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("body_too_large"), Some("7")));

    c.ws_send(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(c.recv().await["code"], "binary_frame");

    // Still usable after all of that.
    c.send_json(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "ref": "p"}));
    c.say("r", "ok-1", "fine").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_1009() {
    let h = start().await;
    let mut c = Client::connect(h.edge(0), "alice").await;
    let huge = format!(r#"{{"type":"ping","ref":"{}"}}"#, "x".repeat(64 * 1024));
    c.send_text(huge).await;
    assert_eq!(c.recv_close().await, 1009);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_rate_limit_are_dropped_with_an_error() {
    let h = start_with(|c| {
        c.rate_per_second = 1;
        c.rate_burst = 3;
    })
    .await;
    let mut c = Client::connect(h.edge(0), "alice").await;
    for i in 0..6 {
        c.send_json(json!({"type": "ping", "ref": format!("p{i}")})).await;
    }
    let mut pongs = 0;
    let mut limited = Vec::new();
    for _ in 0..6 {
        let frame = c.recv().await;
        match frame["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                limited.push(frame["ref"].as_str().unwrap().to_owned());
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(pongs, 3, "the burst passes");
    assert_eq!(limited, vec!["p3", "p4", "p5"]);
    // Malformed frames count too: they cost a parse and a reply each.
    c.send_text(r#"{"type":"dance","ref":"d"}"#).await;
    let frame = c.recv().await;
    assert_eq!((frame["code"].as_str(), frame["ref"].as_str()), (Some("rate_limited"), Some("d")), "{frame}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_4008_when_it_reads_again_and_costs_bounded_memory() {
    // The default send queue (1 MiB): large enough that a burst of
    // deliveries does not overflow it while the socket still drains, so it
    // overflows only once the client has stopped reading and every buffer
    // on the way to it is full.
    let h = start_with(|c| {
        c.rate_per_second = 10_000;
        c.rate_burst = 10_000;
    })
    .await;
    let config = &h.embedded.edge_states[1].config;
    // The slow client has a tiny receive buffer and stops reading after joining.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(h.edge(1)).await.unwrap();
    let url = format!("ws://{}/ws?token={}", h.edge(1), support::token("slow"));
    let (mut slow, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    slow.send(Message::text(r#"{"type":"join","ref":"j","room":"flood"}"#)).await.unwrap();

    // The sender reads everything it gets, in its own task.
    let url = format!("ws://{}/ws?token={}", h.edge(0), support::token("sender"));
    let (sender, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (mut sink, mut stream) = futures_util::StreamExt::split(sender);
    let reader = tokio::spawn(async move { while futures_util::StreamExt::next(&mut stream).await.is_some() {} });
    sink.send(Message::text(r#"{"type":"join","ref":"j","room":"flood"}"#)).await.unwrap();
    let body = "y".repeat(3000);
    let flood = tokio::spawn(async move {
        for i in 0..6000 {
            let frame = json!({"type": "send", "ref": format!("s{i}"), "room": "flood", "client_id": format!("f{i}"), "body": body});
            if sink.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
        }
        sink
    });

    // The server notices the overflow while the client still is not reading...
    let slow_closed = r#"switchboard_edge_disconnects_total{reason="slow_consumer"}"#;
    support::eventually(support::TIMEOUT, std::time::Duration::from_millis(20), async || {
        match support::metric(h.edge(1), slow_closed).await {
            0.0 => Err("the slow client was never closed".into()),
            _ => Ok(()),
        }
    })
    .await;
    flood.abort();
    // ...and the client goes on not reading for a while, as a stalled app
    // would (within the close timeout).
    tokio::time::sleep(config.close_timeout / 3).await;

    // Reading again: what was already on its way, then the close code.
    let mut received = 0;
    let code = loop {
        let message = tokio::time::timeout(support::TIMEOUT, futures_util::StreamExt::next(&mut slow))
            .await
            .expect("close within timeout");
        match message {
            Some(Ok(Message::Text(text))) => received += text.len(),
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code after {received} bytes"),
            Some(Err(e)) => panic!("error instead of a close frame after {received} bytes: {e}"),
            Some(Ok(_)) => continue,
        }
    };
    assert_eq!(code, 4008);
    // What the client still got is what was already on its way: the
    // WebSocket write buffer (128 KiB and a frame), the kernel's send buffer
    // (twice SO_SNDBUF) and the client's own receive buffer, not the queued
    // frames, nor megabytes of an autotuned kernel buffer.
    let bound = 128 * 1024 + 16 * 1024 + 2 * config.socket_send_buffer_bytes + 64 * 1024;
    assert!(received <= bound, "{received} bytes arrived after the client stopped reading (bound {bound})");
    // The frames still queued behind the close were dropped unsent, and counted.
    support::eventually(support::TIMEOUT, std::time::Duration::from_millis(20), async || {
        match support::metric(h.edge(1), "switchboard_edge_frames_dropped_total").await {
            0.0 => Err("no dropped frames counted".into()),
            _ => Ok(()),
        }
    })
    .await;
    reader.abort();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let h = start_with(|c| {
        c.idle_timeout = std::time::Duration::from_millis(500);
        c.ping_interval = std::time::Duration::from_secs(30);
    })
    .await;
    let mut c = Client::connect(h.edge(0), "quiet").await;
    assert_eq!(c.recv_close().await, 4001);
    h.stop().await;
}

/// The idle timeout counts from the client's last frame: frames sent past
/// the first deadline keep the connection open, and silence after them
/// still closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_talking_is_not_closed_as_idle() {
    let h = start_with(|c| {
        c.idle_timeout = std::time::Duration::from_millis(500);
        c.ping_interval = std::time::Duration::from_secs(30);
    })
    .await;
    let mut c = Client::connect(h.edge(0), "chatty").await;
    for i in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        c.send_json(json!({"type": "ping", "ref": format!("p{i}")})).await;
        assert_eq!(c.recv_type("pong").await["ref"], format!("p{i}"), "still open after {} ms", 250 * (i + 1));
    }
    assert_eq!(c.recv_close().await, 4001);
    h.stop().await;
}

/// The server pings each interval, and a client that does nothing but
/// answer them (its library does, as it reads) stays open well past the
/// idle timeout. (A client that stops answering is the silent one above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_answers_pings_stays_open() {
    let h = start_with(|c| {
        c.idle_timeout = std::time::Duration::from_millis(600);
        c.ping_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let mut c = Client::connect(h.edge(0), "ponging").await;
    let pings = c.pings_for(std::time::Duration::from_millis(1_500)).await;
    assert!((5..=8).contains(&pings), "{pings} pings in 1.5 s, one every 200 ms expected");
    c.send_json(json!({"type": "ping", "ref": "still-open"})).await;
    assert_eq!(c.recv_type("pong").await["ref"], "still-open");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_handshake_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start_with(|c| c.handshake_timeout = std::time::Duration::from_millis(300)).await;
    let mut stream = tokio::net::TcpStream::connect(h.edge(0)).await.unwrap();
    // Half a request line, then silence.
    stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await;
    let n = read.expect("the server gives up within the handshake timeout").unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "unexpected reply {reply:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let h = start().await;
    let mut c = Client::connect(h.edge(0), "alice").await;
    let payload = b"{\"type\":\"ping\",\"ref\":\"\xff\xfe\xfd\"}".to_vec();
    c.ws_send(Message::Frame(Frame::message(payload, OpCode::Data(Data::Text), true))).await;
    assert_eq!(c.recv_close().await, 1007, "RFC 6455: invalid UTF-8 in a text message");
    // The node goes on serving others.
    let mut other = Client::connect(h.edge(0), "bob").await;
    other.send_json(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(other.recv().await, json!({"type": "pong", "ref": "p"}));
    h.stop().await;
}

/// The status code of a plain HTTP GET.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_real_secret_the_dev_token_endpoint_and_open_origins_are_off() {
    let h = support::start_configured(|c| {
        *c = c.clone().with_access(Some(support::SECRET.into()), false, None).unwrap();
    })
    .await;
    let addr = h.edge(0);
    assert_eq!(http_status(addr, "/dev/token?user=mallory").await, 404, "no tokens for anyone");
    assert_eq!(http_status(addr, "/").await, 404, "no demo page");
    let url = format!("ws://{addr}/ws?token={}", support::token("alice"));
    for origin in ["null", "https://evil.example.com"] {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        assert_eq!(handshake_status(request).await, 403, "origin {origin}");
    }
    // Native clients send no Origin and are served as before.
    Client::connect(addr, "alice").await;
    h.stop().await;

    // Dev mode (the embedded default without a secret) keeps both, and asks for them loudly.
    let h = start().await;
    assert_eq!(http_status(h.edge(0), "/dev/token?user=alice").await, 200);
    h.stop().await;
}

#[test]
fn dev_mode_is_on_only_with_the_generated_secret_or_when_asked_for() {
    use switchboard::embedded::EmbeddedConfig;
    let any = "127.0.0.1:0".parse().unwrap();
    let base = || EmbeddedConfig::new("x.db".into(), [any, any]);
    let secret = Some(support::SECRET.to_owned());

    let generated = base().with_access(None, false, None).unwrap();
    assert!(generated.dev_mode);
    assert_eq!(generated.allowed_origins, vec!["*"]);

    let real = base().with_access(secret.clone(), false, None).unwrap();
    assert!(!real.dev_mode);
    assert!(real.allowed_origins.is_empty(), "browsers refused unless origins are listed");
    assert_eq!(real.jwt_secret, support::SECRET);

    let listed = base().with_access(secret.clone(), false, Some(vec!["https://chat.example.com".into()])).unwrap();
    assert_eq!(listed.allowed_origins, vec!["https://chat.example.com"]);

    let asked = base().with_access(secret, true, None).unwrap();
    assert!(asked.dev_mode);

    assert!(base().with_access(Some("short".into()), false, None).is_err(), "a short secret is refused");
}
