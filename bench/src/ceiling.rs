//! The ceiling: the least a WebSocket room-broadcast server can do on this
//! machine. No Kafka, no SQL, no auth; one process. Clients send
//! `{"type":"join","room"}` (answered `{"type":"joined"}`) and
//! `{"type":"send","room","body"}`: every member of the room, the sender
//! too, gets `{"type":"message","room","body"}` and the sender an
//! `{"type":"ack"}`. Each broadcast is encoded once and shared.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Members = Vec<(u64, mpsc::UnboundedSender<Message>)>;

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    body: Option<String>,
}

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = TcpListener::bind(listen).await?;
    println!("ceiling listening on {listen}");
    let rooms: Arc<Mutex<HashMap<String, Members>>> = Arc::default();
    let mut next_id = 0u64;
    loop {
        // Out of file descriptors is not fatal: wait for connections to close.
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        tokio::spawn(connection(stream, next_id, rooms.clone()));
    }
}

async fn connection(stream: tokio::net::TcpStream, id: u64, rooms: Arc<Mutex<HashMap<String, Members>>>) {
    // The same read buffer as Switchboard's edge default, so both do the same reads.
    let config = WebSocketConfig::default().read_buffer_size(switchboard_edge::config::DEFAULT_READ_BUFFER_BYTES);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let ack = Message::Text(Utf8Bytes::from_static(r#"{"type":"ack"}"#));
    let mut joined = Vec::new();
    while let Some(Ok(message)) = source.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
        let Some(room) = frame.room else { continue };
        match frame.kind.as_str() {
            "join" => {
                rooms.lock().expect("rooms lock").entry(room.clone()).or_default().push((id, tx.clone()));
                joined.push(room);
                let _ = tx.send(Message::Text(Utf8Bytes::from_static(r#"{"type":"joined"}"#)));
            }
            "send" => {
                let out: Utf8Bytes =
                    json!({"type": "message", "room": room, "body": frame.body.unwrap_or_default()}).to_string().into();
                if let Some(members) = rooms.lock().expect("rooms lock").get(&room) {
                    for (_, member) in members {
                        let _ = member.send(Message::Text(out.clone()));
                    }
                }
                let _ = tx.send(ack.clone());
            }
            _ => {}
        }
    }
    let mut rooms = rooms.lock().expect("rooms lock");
    for room in joined {
        if let Some(members) = rooms.get_mut(&room) {
            members.retain(|(member, _)| *member != id);
        }
    }
    drop(rooms);
    writer.abort();
}
