//! Rough end-to-end figure for the embedded default: senders on edge-1,
//! receivers on both edges, every message through Kafka (mock cluster), the
//! persister (SQLite), the router and the delivery topics. Prints accepted
//! messages/s, deliveries/s and send→deliver latency percentiles.
//!
//! `cargo run --release --example throughput -- [rooms] [messages-per-room] [receivers-per-room]`
//!
//! This is a smoke figure, not the benchmark: the `bench/` driver (open-loop
//! load, HDR histograms, peers) is where targets are measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::embedded::{Embedded, EmbeddedConfig};
use switchboard_edge::auth::{Claims, issue_hs256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "throughput-example-secret-0123456789";

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

async fn connect(addr: SocketAddr, user: &str) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let token = issue_hs256(SECRET.as_bytes(), &Claims { sub: user.into(), name: None, exp: 4_000_000_000 });
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.unwrap();
    ws
}

fn now_us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rooms = arg(1, 20);
    let per_room = arg(2, 500);
    let receivers = arg(3, 4);
    let dir = tempfile::tempdir()?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let mut config = EmbeddedConfig::new(dir.path().join("bench.db"), [any, any]);
    config.jwt_secret = SECRET.into();
    config.tune_edge = |c| {
        c.rate_per_second = 100_000;
        c.rate_burst = 100_000;
        c.max_connections_per_user = 10_000;
    };
    let embedded = Embedded::start(config).await?;
    let edges = embedded.edges.clone();
    let start = Instant::now();

    // Receivers: half on each edge; each counts deliveries and latencies.
    let mut receiver_tasks = Vec::new();
    for room in 0..rooms {
        for r in 0..receivers {
            let mut ws = connect(edges[r % 2], &format!("rx{room}-{r}")).await;
            ws.send(Message::text(json!({"type":"join","ref":"j","room":format!("room{room}")}).to_string())).await?;
            receiver_tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_room);
                while latencies.len() < per_room {
                    let Some(Ok(Message::Text(text))) = ws.next().await else { break };
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["type"] == "message" {
                        let sent: u64 = frame["body"].as_str().unwrap().split(':').next().unwrap().parse().unwrap();
                        latencies.push(now_us(start).saturating_sub(sent));
                    }
                }
                latencies
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // let joins and routes settle

    let send_start = Instant::now();
    let mut sender_tasks = Vec::new();
    for room in 0..rooms {
        let mut ws = connect(edges[0], &format!("tx{room}")).await;
        sender_tasks.push(tokio::spawn(async move {
            ws.send(Message::text(json!({"type":"join","ref":"j","room":format!("room{room}")}).to_string())).await.unwrap();
            let (mut sink, mut stream) = ws.split();
            let acks = tokio::spawn(async move {
                let mut acks = 0;
                while acks < per_room {
                    let Some(Ok(Message::Text(text))) = stream.next().await else { break };
                    if text.contains("\"type\":\"ack\"") {
                        acks += 1;
                    }
                }
                acks
            });
            for i in 0..per_room {
                let body = format!("{}:payload-{i}", now_us(start));
                let frame = json!({"type":"send","ref":i.to_string(),"room":format!("room{room}"),"client_id":format!("c{i}"),"body":body});
                sink.send(Message::text(frame.to_string())).await.unwrap();
            }
            acks.await.unwrap()
        }));
    }
    let mut accepted = 0;
    for task in sender_tasks {
        accepted += task.await?;
    }
    let accept_time = send_start.elapsed();
    let mut latencies = Vec::new();
    for task in receiver_tasks {
        latencies.extend(task.await?);
    }
    let deliver_time = send_start.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!("rooms={rooms} messages/room={per_room} receivers/room={receivers} (half on each edge)");
    println!(
        "accepted: {accepted} messages in {:.2}s = {:.0} msg/s",
        accept_time.as_secs_f64(),
        accepted as f64 / accept_time.as_secs_f64()
    );
    println!(
        "delivered: {} of {} in {:.2}s = {:.0} deliveries/s ({:.0} msg/s end to end)",
        latencies.len(),
        rooms * per_room * receivers,
        deliver_time.as_secs_f64(),
        latencies.len() as f64 / deliver_time.as_secs_f64(),
        accepted as f64 / deliver_time.as_secs_f64()
    );
    println!(
        "send->deliver latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    embedded.stop().await;
    Ok(())
}
