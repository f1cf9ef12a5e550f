//! `sbctl probe`: one client's round trip through a running deployment,
//! which is what the Helm chart's `helm test` runs. It signs a short-lived
//! token with the edges' key, connects to an edge over WebSocket, joins a
//! room of its own, sends a message and waits for it to come back through
//! the whole pipeline (edge → sb.inbound → persister → SQL → sb.events →
//! router → the edge's delivery topic → the socket). Exit 0 when it does;
//! otherwise a message that names the step that failed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_core::config::{Secret, parse_duration};
use switchboard_edge::auth::{Claims, issue_hs256};
use switchboard_schemas::protocol::{AckStatus, ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

use crate::error::SbctlError;

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The edge's WebSocket endpoint, e.g. ws://switchboard-edge:80/ws.
    #[arg(long)]
    pub url: String,
    /// The HS256 key the edges verify client tokens with.
    #[arg(long = "jwt-secret", env = "SB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Secret,
    /// How long the whole round trip may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The user the probe connects as.
    #[arg(long, default_value = "sbctl-probe")]
    pub user: String,
}

pub async fn run(args: ProbeArgs) -> Result<(), SbctlError> {
    let started = std::time::Instant::now();
    let timeout = args.timeout;
    match tokio::time::timeout(timeout, round_trip(&args)).await {
        Ok(Ok(seq)) => {
            println!("probe ok: message stored as seq {seq} and delivered back in {:?}", started.elapsed());
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SbctlError::Refused(format!(
            "no round trip within {timeout:?}: the edge took the connection but the message did not come back \
             (are the persister and the router running and ready?)"
        ))),
    }
}

/// Returns the seq the message was stored as.
async fn round_trip(args: &ProbeArgs) -> Result<u64, SbctlError> {
    let failed = |step: &str, detail: String| SbctlError::Refused(format!("{step}: {detail}"));
    let exp = switchboard_core::clock::now_ms() as u64 / 1000 + args.timeout.as_secs() + 60;
    let token = issue_hs256(
        args.jwt_secret.expose().as_bytes(),
        &Claims { sub: args.user.clone(), name: Some("sbctl probe".into()), exp },
    );
    let separator = if args.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}token={token}", args.url);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| failed("connect", format!("{} refused the WebSocket handshake: {e}", args.url)))?;

    // A room of its own per run, so nothing else is in it.
    let room = format!("sbctl-probe-{}", switchboard_core::clock::now_ms());
    let client_id = format!("probe-{}", fastrand::u64(..));
    let frames = [
        ClientFrame::Join { reference: "join".into(), room: room.clone(), since: None, epoch: None, presence: false },
        ClientFrame::Send {
            reference: "send".into(),
            room: room.clone(),
            client_id: client_id.clone(),
            body: "probe".into(),
            traceparent: None,
        },
    ];
    for frame in frames {
        let text = serde_json::to_string(&frame).expect("client frames serialize");
        ws.send(Message::text(text)).await.map_err(|e| failed("send", e.to_string()))?;
    }
    let (mut joined, mut acked) = (false, false);
    while let Some(message) = ws.next().await {
        let message = message.map_err(|e| failed("connection", e.to_string()))?;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => return Err(failed("connection", format!("closed by the edge: {frame:?}"))),
            _ => continue,
        };
        let frame: ServerFrame = serde_json::from_str(&text)
            .map_err(|e| failed("protocol", format!("the edge sent a frame this sbctl does not know ({e}): {text}")))?;
        match frame {
            ServerFrame::Joined { .. } => joined = true,
            ServerFrame::Ack { status: AckStatus::Accepted, .. } => acked = true,
            ServerFrame::Error { code, message, .. } => {
                return Err(failed("refused", format!("the edge answered {code:?}: {message}")));
            }
            ServerFrame::Message(m) if m.room == room && m.client_id == client_id => {
                if !(joined && acked) {
                    return Err(failed("protocol", "the message came back before its join or ack".into()));
                }
                let _ = ws.close(None).await;
                return Ok(m.seq);
            }
            _ => {}
        }
    }
    Err(failed("connection", "closed before the message came back".into()))
}
