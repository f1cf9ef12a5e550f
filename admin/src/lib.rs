//! `sbctl`, the operator's command: one module per command family.

pub mod cli;
pub mod error;
pub mod groups;
pub mod positions;
pub mod probe;
pub mod replay;
pub mod rooms;
pub mod topics;
