//! The command lines of the `persister`, `router` and `notifier` binaries. Every flag is
//! also an `SB_*` environment variable.

use std::net::SocketAddr;

use clap::Parser;
use switchboard_core::config::{DatabaseArgs, KafkaArgs};

use crate::notifier::NotifierConfig;
use crate::persister::PersisterConfig;
use crate::router::RouterConfig;

#[derive(Debug, Parser)]
#[command(name = "persister", version, about = "Switchboard persister: sb.inbound -> SQL -> sb.events")]
pub struct PersisterCli {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub persister: PersisterConfig,
    /// Address of the ops listener: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long = "ops-listen", env = "SB_OPS_LISTEN", default_value = "127.0.0.1:9091")]
    pub ops_listen: SocketAddr,
    /// Apply database migrations before starting.
    #[arg(long, env = "SB_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

#[derive(Debug, Parser)]
#[command(name = "router", version, about = "Switchboard router: sb.events -> sb.deliver.<node>")]
pub struct RouterCli {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub router: RouterConfig,
    /// Address of the ops listener: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long = "ops-listen", env = "SB_OPS_LISTEN", default_value = "127.0.0.1:9092")]
    pub ops_listen: SocketAddr,
}

#[derive(Debug, Parser)]
#[command(
    name = "notifier",
    version,
    about = "Switchboard notifier: sb.events -> a push service's webhook, for members who are away"
)]
pub struct NotifierCli {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub notifier: NotifierConfig,
    /// Address of the ops listener: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long = "ops-listen", env = "SB_OPS_LISTEN", default_value = "127.0.0.1:9093")]
    pub ops_listen: SocketAddr,
}
