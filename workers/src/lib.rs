//! Switchboard's workers. The persister turns `sb.inbound` commands into
//! stored messages (SQL) and canonical records (`sb.events`); the router
//! copies each event to the delivery topics of the nodes that have members in
//! its room; the notifier tells a push service about messages for members
//! who are away.

pub mod batch;
pub mod cli;
pub mod error;
pub mod events;
pub mod inbound;
pub mod membership;
pub mod notifier;
pub mod persister;
pub mod router;
pub mod routing_table;
