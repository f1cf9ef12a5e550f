//! `cargo run --release`: the embedded default. Everything in one process,
//! nothing to install.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use switchboard::embedded::{Embedded, EmbeddedConfig, NODES};
use switchboard_core::config::{Secret, exit_bad_config, parse_or_exit};
use switchboard_workers::notifier::NotifierConfig;

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
    /// HS256 secret for client tokens, at least 32 bytes (default: random,
    /// and dev mode is on: the demo page gets its tokens from /dev/token).
    #[arg(long = "jwt-secret", env = "SB_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// Dev mode: serve the demo page and /dev/token (signs a token for any
    /// user name) and accept any browser origin. On by default only when no
    /// --jwt-secret is given; with a secret, only when asked for.
    #[arg(long, env = "SB_DEV")]
    dev: bool,
    /// Browser origins allowed to connect, comma separated; `*` allows any.
    /// Default: any in dev mode, none otherwise. Clients that send no Origin
    /// header (native apps, servers) are always allowed.
    #[arg(long = "allowed-origins", env = "SB_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Offline notifications: the push service's webhook. Off unless given;
    /// then --webhook-secret is needed too (see the notifier's --help).
    #[arg(long = "webhook-url", env = "SB_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Key of the webhook bodies' HMAC-SHA256 signature, at least 32 bytes.
    #[arg(long = "webhook-secret", env = "SB_WEBHOOK_SECRET")]
    webhook_secret: Option<Secret>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    let _traces = switchboard_core::telemetry::init("switchboard");
    let listen = [SocketAddr::new(cli.host, cli.port), SocketAddr::new(cli.host, cli.port.wrapping_add(1))];
    let mut config = EmbeddedConfig::new(cli.db.clone(), listen)
        .with_access(cli.jwt_secret, cli.dev, cli.allowed_origins)
        .unwrap_or_else(|e| exit_bad_config(e));
    if cli.webhook_url.is_some() || cli.webhook_secret.is_some() {
        let notifier = NotifierConfig {
            webhook_url: cli.webhook_url,
            webhook_secret: cli.webhook_secret,
            ..NotifierConfig::default()
        };
        notifier.validate().unwrap_or_else(|e| exit_bad_config(e));
        config.notifier = Some(notifier);
    }
    let webhook = config.notifier.as_ref().and_then(|n| n.webhook_url.clone());
    let dev_mode = config.dev_mode;
    if dev_mode {
        tracing::warn!("dev mode: /dev/token signs a token for anyone; do not expose these ports");
    }
    let embedded = Embedded::start(config).await?;
    println!("Switchboard embedded default is running.");
    for (node, addr) in NODES.iter().zip(&embedded.edges) {
        if dev_mode {
            println!("  {node}: demo chat at http://{addr}/   (WebSocket: ws://{addr}/ws)");
        } else {
            println!("  {node}: WebSocket at ws://{addr}/ws");
        }
    }
    if dev_mode {
        println!("  DEV MODE: GET /dev/token signs a 24-hour token for any user name, and browser pages from");
        println!("  any origin may connect. Never expose these ports. Give --jwt-secret (without --dev) to");
        println!("  turn both off; clients then need tokens signed with that secret.");
    }
    println!("  mock Kafka cluster bootstrap: {} (in memory; lost on exit)", embedded.kafka.brokers);
    println!("  chat history: {} (SQLite; kept across restarts)", cli.db.display());
    match webhook {
        Some(url) => println!("  offline notifications: POSTed to {url}"),
        None => println!("  offline notifications: off (--webhook-url and --webhook-secret turn them on)"),
    }
    if dev_mode {
        println!("Open the two pages in two tabs, pick names, join a room and chat. Ctrl-C stops.");
    } else {
        println!("Ctrl-C stops.");
    }
    embedded.run_until_stopped().await;
    Ok(())
}
