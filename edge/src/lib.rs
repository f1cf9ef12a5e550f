//! Switchboard's edge: authenticates WebSocket clients, validates their
//! frames, publishes their commands to Kafka, consumes this node's delivery
//! topic and pushes each event to the room's local connections. It holds no
//! durable state; SQL is read only for authorization, history and gap backfill.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod events;
pub mod handshake;
pub mod history;
pub mod http;
pub mod hub;
pub mod joined;
pub mod jwks;
pub mod keepalive;
pub mod node;
pub mod outbox;
pub mod presence;
pub mod publish;
pub mod server;
pub mod session;
pub mod state;
