//! Switchboard's wire types: the client protocol (JSON frames over WebSocket)
//! and the Kafka envelopes exchanged between edges and workers.
//!
//! This crate does no I/O. Every type here is serialized with serde and
//! described with schemars; `schemas/json/` holds the generated JSON Schema
//! files and a test fails when they are stale.

pub mod envelope;
pub mod headers;
pub mod ids;
pub mod notification;
pub mod protocol;
pub mod read_marker;
pub mod room_command;
pub mod routing;

/// Version of the client protocol spoken on `/ws`.
pub const PROTOCOL_VERSION: u32 = 1;
