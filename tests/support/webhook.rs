//! A webhook receiver for the notifier's tests: a real HTTP server on
//! loopback that answers as each test scripts it and keeps every request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use switchboard_workers::notifier::sign;

pub const WEBHOOK_SECRET: &str = "webhook-test-secret-0123456789abcdef";

/// How the receiver answers a request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    /// Answers 200, but only after this long.
    Late(Duration),
}

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub key: String,
    pub signed: bool,
    pub body: Value,
}

/// A webhook receiver: answers each room's requests as scripted (200 once
/// the script is used up) and keeps every request.
#[derive(Clone, Default)]
pub struct Receiver {
    script: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
    got: Arc<Mutex<Vec<Received>>>,
    /// How long every answer takes (0 unless set).
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = Router::new().route("/push", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    pub fn script(&self, room: &str, answers: &[Answer]) {
        self.script.lock().unwrap().insert(room.to_owned(), answers.iter().copied().collect());
    }

    /// Every answer comes this late from now on.
    pub fn delay(&self, by: Duration) {
        *self.delay.lock().unwrap() = by;
    }

    pub fn got(&self, room: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.body["room"] == room).cloned().collect()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let signed = header("x-switchboard-signature") == sign(WEBHOOK_SECRET.as_bytes(), &body);
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    let room = body["room"].as_str().unwrap_or_default().to_owned();
    receiver.got.lock().unwrap().push(Received { key: header("idempotency-key"), signed, body });
    let answer = receiver.script.lock().unwrap().get_mut(&room).and_then(VecDeque::pop_front);
    let delay = *receiver.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    match answer {
        Some(Answer::Status(code)) => StatusCode::from_u16(code).unwrap(),
        Some(Answer::Late(after)) => {
            tokio::time::sleep(after).await;
            StatusCode::OK
        }
        None => StatusCode::OK,
    }
}
