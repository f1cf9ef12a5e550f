//! The `/ws` handshake: everything that can refuse a client happens here,
//! before the upgrade, as a plain HTTP error with a JSON body.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::auth::{AuthError, Claims};
use crate::events::Handshake;
use crate::hub::UserSlot;
use crate::session;
use crate::state::EdgeState;

/// Why a handshake was refused. The response names the reason, never internals.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    #[error("too many connections for this user on this node")]
    TooManyConnections,
    #[error("node is draining; connect to another node")]
    Draining,
}

#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: String,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            HandshakeError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            HandshakeError::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            HandshakeError::TooManyConnections => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
            HandshakeError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        };
        (status, Json(ErrorBody { code, message: self.to_string() })).into_response()
    }
}

impl HandshakeError {
    fn outcome(&self) -> Handshake {
        match self {
            HandshakeError::Unauthorized(_) => Handshake::Unauthorized,
            HandshakeError::OriginNotAllowed(_) => Handshake::OriginNotAllowed,
            HandshakeError::TooManyConnections => Handshake::TooManyConnections,
            HandshakeError::Draining => Handshake::Draining,
        }
    }
}

/// `GET /ws?token=...`
pub async fn upgrade(
    State(state): State<Arc<EdgeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, HandshakeError> {
    let (claims, slot) = admit(&state, &query, &headers).await.inspect_err(|e| state.events.handshake(e.outcome()))?;
    state.events.handshake(Handshake::Ok);
    let limit = state.config.max_frame_bytes;
    let tracker = state.tracker.clone();
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(state.config.read_buffer_bytes)
        // The connection is a task of its own, not the future axum's upgrade
        // task awaits: that task would keep axum's settings, the callback
        // and the protocol (about 200 bytes) beside it for the connection's
        // life.
        .on_upgrade(move |socket| {
            tracker.spawn(session::run(state, socket, claims, slot));
            std::future::ready(())
        }))
}

/// Everything that can refuse a client, in order: draining, origin, token, cap.
async fn admit(
    state: &Arc<EdgeState>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Claims, UserSlot), HandshakeError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(HandshakeError::Draining);
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !origin_allowed(&state.config.allowed_origins, origin)
    {
        return Err(HandshakeError::OriginNotAllowed(origin.to_owned()));
    }
    let token = query.get("token").map(String::as_str).or_else(|| bearer(headers)).ok_or(AuthError::Missing)?;
    let claims = state.auth.verify(token).await?;
    let slot = state
        .hub
        .reserve_user(&Arc::from(claims.sub.as_str()), state.config.max_connections_per_user)
        .ok_or(HandshakeError::TooManyConnections)?;
    Ok((claims, slot))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// `*` allows any origin; otherwise an exact match of scheme://host[:port].
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let allowed = vec!["https://chat.example.com".to_owned()];
        assert!(origin_allowed(&allowed, "https://chat.example.com"));
        assert!(!origin_allowed(&allowed, "https://evil.example.com"));
        assert!(!origin_allowed(&[], "https://chat.example.com"), "deny by default");
        assert!(origin_allowed(&["*".to_owned()], "http://anything"));
    }
}
