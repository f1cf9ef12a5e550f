//! `cargo run --release`: the embedded default. Everything in one process,
//! nothing to install.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use switchboard::embedded::{Embedded, EmbeddedConfig, NODES};
use switchboard_core::config::{exit_bad_config, parse_or_exit};

#[derive(Debug, Parser)]
#[command(version, about = "Switchboard embedded default: mock Kafka, SQLite, persister, router and two edges")]
struct Cli {
    /// SQLite file for chat history (kept across restarts).
    #[arg(long, env = "SB_EMBEDDED_DB", default_value = "switchboard.db")]
    db: PathBuf,
    /// Address the edges listen on.
    #[arg(long, env = "SB_EMBEDDED_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the first edge; the second edge uses the next one.
    #[arg(long, env = "SB_EMBEDDED_PORT", default_value_t = 8080)]
    port: u16,
    /// HS256 secret for client tokens, at least 32 bytes (default: random;
    /// the demo page gets its tokens from the dev-only /dev/token).
    #[arg(long = "jwt-secret", env = "SB_JWT_SECRET")]
    jwt_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    switchboard_core::telemetry::init();
    let listen = [SocketAddr::new(cli.host, cli.port), SocketAddr::new(cli.host, cli.port.wrapping_add(1))];
    let mut config = EmbeddedConfig::new(cli.db.clone(), listen);
    if let Some(secret) = cli.jwt_secret {
        if secret.len() < 32 {
            exit_bad_config("--jwt-secret must be at least 32 bytes");
        }
        config.jwt_secret = secret;
    }
    let embedded = Embedded::start(config).await?;
    println!("Switchboard embedded default is running.");
    for (node, addr) in NODES.iter().zip(&embedded.edges) {
        println!("  {node}: demo chat at http://{addr}/   (WebSocket: ws://{addr}/ws)");
    }
    println!("  mock Kafka cluster bootstrap: {} (in memory; lost on exit)", embedded.bootstrap);
    println!("  chat history: {} (SQLite; kept across restarts)", cli.db.display());
    println!("Open the two pages in two tabs, pick names, join a room and chat. Ctrl-C stops.");
    embedded.run_until_stopped().await;
    Ok(())
}
