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
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let h = start_with(|c| {
        c.send_queue_frames = 16;
        c.send_queue_bytes = 32 * 1024;
        c.rate_per_second = 10_000;
        c.rate_burst = 10_000;
    })
    .await;
    // The slow client has a tiny receive buffer and never reads after joining.
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
        for i in 0..3000 {
            let frame = json!({"type": "send", "ref": format!("s{i}"), "room": "flood", "client_id": format!("f{i}"), "body": body});
            if sink.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
        }
        sink
    });

    // Read the slow socket only now: queued frames first, then the close code.
    let mut slow = Client::from_stream(slow);
    assert_eq!(slow.recv_close().await, 4008);
    flood.abort();
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
