//! Dev-only routes of the embedded default: the demo chat page and a token
//! endpoint that signs a token for any user name. Never mounted in production.
//!
//! The page is the React app in `clients/typescript/demo/`, built on the
//! TypeScript SDK; `npm run demo` there writes `demo/index.html` and
//! `demo/demo.js` here (committed, so that building the edge needs no Node;
//! CI checks they match their sources).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use switchboard_schemas::ids::validate_id;

use crate::auth::{Claims, issue_hs256};
use crate::state::EdgeState;

const PAGE: &str = include_str!("demo/index.html");
const SCRIPT: &str = include_str!("demo/demo.js");
/// Dev tokens live for a day.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

pub fn routes() -> Router<Arc<EdgeState>> {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/demo.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT) }))
        .route("/dev/token", get(dev_token))
}

/// `GET /dev/token?user=alice&name=Alice` → `{"token": "..."}`
async fn dev_token(State(state): State<Arc<EdgeState>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let Some(user) = query.get("user") else {
        return (StatusCode::BAD_REQUEST, "missing ?user=").into_response();
    };
    if let Err(e) = validate_id(user) {
        return (StatusCode::BAD_REQUEST, format!("user: {e}")).into_response();
    }
    let exp = switchboard_core::clock::now_ms() as u64 / 1000 + DEV_TOKEN_TTL_SECS;
    let claims = Claims { sub: user.clone(), name: query.get("name").cloned().filter(|n| !n.trim().is_empty()), exp };
    let Some(secret) = &state.config.jwt_secret else {
        return (StatusCode::NOT_FOUND, "no SB_JWT_SECRET: dev tokens are off").into_response();
    };
    let token = issue_hs256(secret.expose().as_bytes(), &claims);
    axum::Json(serde_json::json!({ "token": token })).into_response()
}
