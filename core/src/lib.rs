//! Plumbing shared by the edge and the workers: configuration types, topic
//! names, Kafka client construction, the SQL store, dead-lettering, shutdown
//! and logging. Nothing here knows about WebSockets or routing policy.

pub mod backlog;
pub mod clock;
pub mod config;
pub mod dead_letter;
pub mod http_client;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod presence;
pub mod producer;
pub mod provision;
pub mod room_commands;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod topics;
pub mod traces;
