//! Paged history: a room's stored messages, newest first, for scrolling
//! back. One implementation answers the socket's `history` frame and
//! `GET /v1/rooms/{room}/messages?before=&limit=` (the same token, the same
//! read permission as `join`; the connection need not be in the room). Reads
//! go to SQL through the edge's pool, and every page is bounded: at most
//! [`MAX_HISTORY_LIMIT`] messages and [`MAX_HISTORY_BYTES`] of encoded
//! messages (on the socket, also half the connection's send queue, so a
//! page never trips the slow-consumer close).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use switchboard_core::store::{Access, Store};
use switchboard_schemas::ids::validate_id;
use switchboard_schemas::protocol::{
    DEFAULT_HISTORY_LIMIT, ErrorCode, MAX_HISTORY_BYTES, MAX_HISTORY_LIMIT, MessageFrame,
};
use thiserror::Error;

use crate::auth::AuthError;
use crate::handshake::{ErrorBody, bearer};
use crate::state::EdgeState;

/// One page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub room: String,
    pub epoch: u64,
    pub messages: Vec<MessageFrame>,
    /// Older messages exist: ask with `before` = the last seq of this page.
    pub has_more: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("room: {0}")]
    InvalidRoom(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("you may not read room {0:?}")]
    Forbidden(String),
    #[error("history unavailable; retry")]
    Unavailable,
}

impl HistoryError {
    /// The protocol's error code for the socket's answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            HistoryError::InvalidRoom(_) => ErrorCode::InvalidRoom,
            HistoryError::InvalidRequest(_) => ErrorCode::InvalidFrame,
            HistoryError::Forbidden(_) => ErrorCode::Forbidden,
            HistoryError::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// Reads the page of `room` before `before` (a seq; the newest without it)
/// that `user` may read. `limit` defaults to [`DEFAULT_HISTORY_LIMIT`] and is
/// capped at [`MAX_HISTORY_LIMIT`]; 0 is refused. The page ends early once
/// its messages, encoded, pass `max_bytes` (never before its first).
pub async fn page(
    store: &Store,
    user: &str,
    room: &str,
    before: Option<u64>,
    limit: Option<u32>,
    max_bytes: usize,
) -> Result<Page, HistoryError> {
    validate_id(room).map_err(|e| HistoryError::InvalidRoom(e.to_string()))?;
    let limit = match limit {
        Some(0) => return Err(HistoryError::InvalidRequest("`limit` must be at least 1".into())),
        Some(n) => n.min(MAX_HISTORY_LIMIT),
        None => DEFAULT_HISTORY_LIMIT,
    };
    let state = match store.access(room, user).await {
        Ok(Access::Granted(state)) => state,
        Ok(Access::Forbidden) => return Err(HistoryError::Forbidden(room.to_owned())),
        Err(e) => {
            tracing::warn!(error = %e, "history: database unavailable");
            return Err(HistoryError::Unavailable);
        }
    };
    // One more than asked tells whether older messages exist.
    let mut messages = store.messages_before(room, before, limit + 1).await.map_err(|e| {
        tracing::warn!(error = %e, "history: read failed");
        HistoryError::Unavailable
    })?;
    let mut has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    let mut bytes = 0;
    if let Some(cut) = messages.iter().position(|m| {
        bytes += serde_json::to_vec(m).map_or(0, |v| v.len());
        bytes > max_bytes
    }) {
        messages.truncate(cut.max(1));
        has_more = true;
    }
    Ok(Page { room: room.to_owned(), epoch: state.epoch, messages, has_more })
}

/// Requests `GET /v1/rooms/{room}/messages` serves at once on one edge; more
/// are answered 429 at once. Socket `history` frames are bounded by each
/// connection's rate limit; this bounds what HTTP clients can take of the
/// database pool the edge's joins and gap backfill also use.
const MAX_CONCURRENT_HTTP_PAGES: usize = 4;

static HTTP_PAGES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HTTP_PAGES);

pub fn routes() -> axum::Router<Arc<EdgeState>> {
    axum::Router::new().route("/v1/rooms/{room}/messages", get(http_page))
}

/// `GET /v1/rooms/{room}/messages?before=<seq>&limit=<n>` with
/// `Authorization: Bearer <token>`: 200 with a [`Page`], or a typed error.
async fn http_page(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let refuse = |status: StatusCode, code: &'static str, message: String| {
        (status, Json(ErrorBody { code, message })).into_response()
    };
    let Ok(_permit) = HTTP_PAGES.try_acquire() else {
        let busy = "too many history requests at once on this edge; retry shortly".to_owned();
        return refuse(StatusCode::TOO_MANY_REQUESTS, "busy", busy);
    };
    let Some(token) = bearer(&headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", AuthError::Missing.to_string());
    };
    let claims = match state.auth.verify(token).await {
        Ok(claims) => claims,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
    };
    let number = |name: &str| -> Result<Option<u64>, String> {
        query.get(name).map(|v| v.parse::<u64>().map_err(|_| format!("`{name}` must be a whole number"))).transpose()
    };
    let (before, limit) = match (number("before"), number("limit")) {
        (Ok(before), Ok(limit)) => (before, limit.map(|l| l.min(u64::from(u32::MAX)) as u32)),
        (Err(e), _) | (_, Err(e)) => return refuse(StatusCode::BAD_REQUEST, "invalid_request", e),
    };
    if let Some(unknown) = query.keys().find(|k| *k != "before" && *k != "limit") {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", format!("unknown parameter `{unknown}`"));
    }
    match page(&state.store, &claims.sub, &room, before, limit, MAX_HISTORY_BYTES).await {
        Ok(page) => (StatusCode::OK, Json(page)).into_response(),
        Err(e) => {
            let status = match e {
                HistoryError::InvalidRoom(_) | HistoryError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
                HistoryError::Forbidden(_) => StatusCode::FORBIDDEN,
                HistoryError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            refuse(status, e.code().as_str(), e.to_string())
        }
    }
}
