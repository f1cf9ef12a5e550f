//! The admin HTTP API: room administration for operators and back ends.
//! Each request issues a room command to `sb.inbound` (the same path as
//! `sbctl rooms`, `switchboard_core::room_commands`) and answers 202 with
//! the command once Kafka holds it; the persister applies it in order with
//! the room's messages.
//!
//! | request | command |
//! | --- | --- |
//! | `POST /v1/rooms` `{"room", "kind": "public"\|"private", "members": [...]}` | create |
//! | `PUT /v1/rooms/{room}/members/{user}` | add a member |
//! | `DELETE /v1/rooms/{room}/members/{user}` | remove a member |
//! | `POST /v1/rooms/{room}/reset` | reset the history |
//!
//! Authorized by `Authorization: Bearer <JWT>`, verified as client tokens are
//! (HS256 with the edge's secret, or the identity provider's RS256/ES256, see
//! `crate::auth`), and carrying `admin: true`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use switchboard_core::room_commands::{IssueError, issue};
use switchboard_schemas::room_command::{RoomAction, RoomCommand, RoomKind};
use thiserror::Error;

use crate::auth::AuthError;
use crate::handshake::{ErrorBody, bearer};
use crate::state::EdgeState;

pub fn routes() -> Router<Arc<EdgeState>> {
    Router::new()
        .route("/v1/rooms", post(create))
        .route("/v1/rooms/{room}/members/{user}", put(add_member).delete(remove_member))
        .route("/v1/rooms/{room}/reset", post(reset))
}

/// Why a request was refused. The body names the reason, never internals.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("{0}")]
    Forbidden(AuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("kafka is unavailable; retry the request")]
    Unavailable,
}

impl AdminError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AdminError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AdminError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AdminError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        (status, Json(ErrorBody { code, message: self.to_string() })).into_response()
    }
}

/// Body of `POST /v1/rooms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    pub room: String,
    pub kind: RoomKind,
    #[serde(default)]
    pub members: Vec<String>,
}

async fn create(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    body: Result<Json<CreateRoom>, JsonRejection>,
) -> Response {
    let request = body.map_err(|e| AdminError::BadRequest(e.body_text()));
    let action = request.map(|Json(b)| (b.room, RoomAction::Create { kind: b.kind, members: b.members }));
    answer(&state, &headers, "create", action).await
}

async fn add_member(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path((room, user)): Path<(String, String)>,
) -> Response {
    answer(&state, &headers, "add_member", Ok((room, RoomAction::AddMember { user }))).await
}

async fn remove_member(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path((room, user)): Path<(String, String)>,
) -> Response {
    answer(&state, &headers, "remove_member", Ok((room, RoomAction::RemoveMember { user }))).await
}

async fn reset(State(state): State<Arc<EdgeState>>, headers: HeaderMap, Path(room): Path<String>) -> Response {
    answer(&state, &headers, "reset_history", Ok((room, RoomAction::ResetHistory))).await
}

/// Authorizes, issues and answers; every answer is counted.
async fn answer(
    state: &EdgeState,
    headers: &HeaderMap,
    action_name: &'static str,
    request: Result<(String, RoomAction), AdminError>,
) -> Response {
    match authorize_and_issue(state, headers, request).await {
        Ok(command) => {
            state.events.admin_request(action_name, 202, Some(&command));
            (StatusCode::ACCEPTED, Json(command)).into_response()
        }
        Err(e) => {
            state.events.admin_request(action_name, e.status_and_code().0.as_u16(), None);
            e.into_response()
        }
    }
}

async fn authorize_and_issue(
    state: &EdgeState,
    headers: &HeaderMap,
    request: Result<(String, RoomAction), AdminError>,
) -> Result<RoomCommand, AdminError> {
    // The token first: an unauthenticated caller learns nothing about its request.
    let token = bearer(headers).ok_or(AdminError::Unauthorized(AuthError::Missing))?;
    let admin = state.auth.verify_admin(token).await.map_err(|e| match e {
        AuthError::NotAdmin => AdminError::Forbidden(e),
        other => AdminError::Unauthorized(other),
    })?;
    let (room, action) = request?;
    issue(&state.producer, &state.topics, &room, &admin.sub, action).await.map_err(|e| match e {
        IssueError::Invalid(e) => AdminError::BadRequest(e.to_string()),
        IssueError::Kafka(e) => {
            tracing::warn!(error = %e, "admin: kafka did not take the room command");
            AdminError::Unavailable
        }
    })
}
