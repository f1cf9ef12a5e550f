//! The embedded default: one process that runs librdkafka's mock Kafka
//! cluster, SQLite in a local file, the persister, the router and two edges
//! (two node ids on two ports, so cross-node delivery is real).
//!
//! The components are the production ones; only the Kafka cluster is the
//! in-process mock, whose contents are lost when the process ends. Chat
//! history survives restarts in SQLite.

pub mod embedded;
pub mod mock_brokers;
