//! `sbctl`, the operator's command: topic provisioning and database migrations.

pub mod cli;
