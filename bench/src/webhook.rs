//! A push service stand-in for the notifier's benchmark (bench/notifier.sh):
//! answers every POST 200 at once and counts requests and recipients;
//! `GET /count` says `<requests> <recipients>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    recipients: AtomicU64,
}

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let app = Router::new().route("/push", post(receive)).route("/count", get(count)).with_state(counts);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(counts): State<Arc<Counts>>, body: Bytes) {
    #[derive(serde::Deserialize)]
    struct Notification {
        recipients: Vec<serde::de::IgnoredAny>,
    }
    counts.requests.fetch_add(1, Ordering::Relaxed);
    if let Ok(n) = serde_json::from_slice::<Notification>(&body) {
        counts.recipients.fetch_add(n.recipients.len() as u64, Ordering::Relaxed);
    }
}

async fn count(State(counts): State<Arc<Counts>>) -> String {
    format!("{} {}\n", counts.requests.load(Ordering::Relaxed), counts.recipients.load(Ordering::Relaxed))
}
