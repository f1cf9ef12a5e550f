//! Edge settings. Every limit a busy deployment tunes is here, with the
//! defaults an operator would expect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::backlog::Backlog;
use switchboard_core::config::{Secret, parse_duration};
use switchboard_schemas::protocol::Limits;

/// Default kernel send buffer of each client socket (`SO_SNDBUF`; Linux
/// reserves twice this). Left to autotuning, the kernel grew the buffer of a
/// client that stopped reading to ~2.8 MB before the send queue could notice
/// it was slow; a fixed size keeps a slow client's memory bounded and its
/// close code close behind what it already has.
pub const DEFAULT_SOCKET_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Default read buffer per WebSocket. Every connection holds it, idle or
/// not, and it bounds one read, not one frame: a send with a short body
/// (a frame of about 250 bytes) arrives in one read, a longer one in a read
/// per 256 bytes. Edge memory per idle connection (`sbbench all --scenarios
/// idle`, 24,000 connections on Kafka + PostgreSQL): 6,786 bytes at 1 KiB,
/// 6,353 at 512 B, 5,956-6,071 at 256 B.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 256;

#[derive(Debug, Clone, clap::Args)]
pub struct EdgeConfig {
    /// Stable id of this node (e.g. the StatefulSet pod name); names its delivery topic.
    #[arg(long = "node-id", env = "SB_NODE_ID")]
    pub node_id: String,
    /// Address to listen on.
    #[arg(long, env = "SB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// HS256 secret that signs client tokens (at least 32 bytes). Optional
    /// with --jwks-url; without it, HS256 tokens are refused.
    #[arg(long = "jwt-secret", env = "SB_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,
    /// JWKS URL of the identity provider whose RS256 and ES256 tokens are
    /// accepted (e.g. https://idp.example.com/.well-known/jwks.json).
    /// Fetched at start; the edge does not start without it.
    #[arg(long = "jwks-url", env = "SB_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// The `iss` the identity provider's tokens must carry (needs --jwks-url).
    #[arg(long = "jwt-issuer", env = "SB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Audiences, comma separated: the identity provider's tokens must name
    /// one in `aud` (needs --jwks-url). Unset, any audience is accepted.
    #[arg(long = "jwt-audience", env = "SB_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Least time between two fetches of the key set caused by tokens naming
    /// a key id it lacks (a key rotation); such tokens are refused meanwhile.
    #[arg(long = "jwks-refresh-min-interval", env = "SB_JWKS_REFRESH_MIN_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub jwks_refresh_min_interval: Duration,
    /// Age of the held key set after which it is fetched again, in the
    /// background, so a key the provider withdrew stops being accepted.
    #[arg(long = "jwks-refresh-interval", env = "SB_JWKS_REFRESH_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub jwks_refresh_interval: Duration,
    /// Browser origins allowed to connect, comma separated; `*` allows any.
    /// Requests without an Origin header (native apps) are always allowed.
    #[arg(long = "allowed-origins", env = "SB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Largest text frame in bytes; larger ones close the connection with 1009.
    #[arg(long = "max-frame-bytes", env = "SB_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,
    /// Read buffer of each WebSocket, in bytes. Every connection holds one,
    /// idle or not; frames larger than it still arrive, over several reads.
    #[arg(long = "read-buffer-bytes", env = "SB_READ_BUFFER_BYTES", default_value_t = DEFAULT_READ_BUFFER_BYTES)]
    pub read_buffer_bytes: usize,
    /// Largest message body in bytes.
    #[arg(long = "max-body-bytes", env = "SB_MAX_BODY_BYTES", default_value_t = 4 * 1024)]
    pub max_body_bytes: usize,
    /// Sustained client frames per second per connection.
    #[arg(long = "rate-per-second", env = "SB_RATE_PER_SECOND", default_value_t = 20)]
    pub rate_per_second: u32,
    /// Frames allowed in a burst above the sustained rate.
    #[arg(long = "rate-burst", env = "SB_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,
    /// Connections one user may hold on this node.
    #[arg(long = "max-connections-per-user", env = "SB_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,
    /// Frames queued for one connection before it is closed as a slow consumer.
    #[arg(long = "send-queue-frames", env = "SB_SEND_QUEUE_FRAMES", default_value_t = 1024)]
    pub send_queue_frames: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    #[arg(long = "send-queue-bytes", env = "SB_SEND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub send_queue_bytes: usize,
    /// Kernel send buffer of each client socket in bytes (`SO_SNDBUF`; Linux
    /// reserves twice this). Bounds what a client that stops reading costs
    /// beyond its send queue; 0 leaves the kernel's autotuning (up to 4 MiB).
    #[arg(long = "socket-send-buffer-bytes", env = "SB_SOCKET_SEND_BUFFER_BYTES", default_value_t = DEFAULT_SOCKET_SEND_BUFFER_BYTES)]
    pub socket_send_buffer_bytes: usize,
    /// How long a closing connection waits for its client to read the close
    /// frame (it queues behind what the client has not read yet) before the
    /// TCP connection is dropped.
    #[arg(long = "close-timeout", env = "SB_CLOSE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub close_timeout: Duration,
    /// Clock skew allowed when checking a token's `exp` and `nbf`.
    #[arg(long = "token-leeway", env = "SB_TOKEN_LEEWAY", default_value = "5s", value_parser = parse_duration)]
    pub token_leeway: Duration,
    /// Sends of one connection waiting for Kafka's ack at once; more pause reading.
    #[arg(long = "max-in-flight", env = "SB_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Close a connection that sent nothing (not even a pong) for this long.
    #[arg(long = "idle-timeout", env = "SB_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time a new connection has to send its complete HTTP upgrade request.
    #[arg(long = "handshake-timeout", env = "SB_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Interval of server pings.
    #[arg(long = "ping-interval", env = "SB_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// Most messages replayed on join with `since`.
    #[arg(long = "max-replay", env = "SB_MAX_REPLAY", default_value_t = 500)]
    pub max_replay: u32,
    /// After a room's route is written, when this edge checks SQL for
    /// messages routed before the routers had the route (comma separated,
    /// from the write): a quick check, and a late one for slow routers.
    #[arg(long = "catch-up-after", env = "SB_CATCH_UP_AFTER", value_delimiter = ',', default_value = "300ms,2s", value_parser = parse_duration)]
    pub catch_up_after: Vec<Duration>,
    /// Interval of heartbeats to `sb.nodes`.
    #[arg(long = "heartbeat-interval", env = "SB_HEARTBEAT_INTERVAL", default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How often the users that came into a room or left it are told: the
    /// changes of one interval go out as one record per room to the other
    /// edges and one `presence` frame per member.
    #[arg(long = "presence-interval", env = "SB_PRESENCE_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub presence_interval: Duration,
    /// How often this edge names again every user it has in each room. A
    /// user no edge has named for three of these counts as gone (its edge
    /// died, or records were lost).
    #[arg(long = "presence-refresh", env = "SB_PRESENCE_REFRESH", default_value = "10s", value_parser = parse_duration)]
    pub presence_refresh: Duration,
    /// How long a send may wait for room in the producer queue before failing with `unavailable`.
    #[arg(long = "produce-queue-timeout", env = "SB_PRODUCE_QUEUE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub produce_queue_timeout: Duration,
    /// Time allowed for draining on SIGTERM; clients are closed with 1012 spread over it.
    #[arg(long = "drain-grace", env = "SB_DRAIN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub drain_grace: Duration,
    /// Create this node's delivery topic at start (AdminClient; real clusters only).
    #[arg(long = "create-delivery-topic", env = "SB_CREATE_DELIVERY_TOPIC", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_delivery_topic: bool,
    /// Serve `/dev/token` and the demo page. Only the embedded default turns this on.
    #[arg(skip)]
    pub dev_mode: bool,
    /// Refuse sends while the persister is this far behind (embedded default only).
    #[arg(skip)]
    pub backlog: Option<Arc<Backlog>>,
}

impl EdgeConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_body_bytes: self.max_body_bytes,
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst,
            max_replay: self.max_replay,
        }
    }

    /// Checks what clap cannot; run before binding any port.
    pub fn validate(&self) -> Result<(), String> {
        switchboard_schemas::ids::validate_id(&self.node_id).map_err(|e| format!("--node-id: {e}"))?;
        self.validate_token_keys()?;
        if self.max_body_bytes >= self.max_frame_bytes {
            return Err("--max-body-bytes must be smaller than --max-frame-bytes".into());
        }
        if self.rate_per_second == 0 || self.rate_burst == 0 {
            return Err("--rate-per-second and --rate-burst must be positive".into());
        }
        for n in [self.send_queue_frames, self.send_queue_bytes, self.max_in_flight, self.max_connections_per_user] {
            if n == 0 {
                return Err("queue sizes and connection caps must be positive".into());
            }
        }
        if self.ping_interval.is_zero() || self.idle_timeout.is_zero() {
            return Err("--ping-interval and --idle-timeout must be positive".into());
        }
        if self.presence_interval.is_zero() || self.presence_refresh < self.presence_interval {
            return Err("--presence-interval must be positive and at most --presence-refresh".into());
        }
        Ok(())
    }

    /// Where tokens are verified: a secret, an identity provider, or both.
    fn validate_token_keys(&self) -> Result<(), String> {
        // RFC 7518 asks for an HS256 key at least as long as the hash.
        if self.jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
            return Err("--jwt-secret must be at least 32 bytes".into());
        }
        let Some(url) = &self.jwks_url else {
            if self.jwt_secret.is_none() {
                return Err("set --jwt-secret (HS256 tokens) or --jwks-url (an identity provider's tokens)".into());
            }
            if self.jwt_issuer.is_some() || !self.jwt_audience.is_empty() {
                return Err(
                    "--jwt-issuer and --jwt-audience check an identity provider's tokens: set --jwks-url".into()
                );
            }
            return Ok(());
        };
        crate::jwks::validate_url(url).map_err(|e| format!("--jwks-url: {e}"))?;
        if self.jwt_issuer.as_ref().is_some_and(|i| i.is_empty()) || self.jwt_audience.iter().any(String::is_empty) {
            return Err("--jwt-issuer and --jwt-audience may not be empty".into());
        }
        if self.jwks_refresh_min_interval.is_zero() || self.jwks_refresh_interval.is_zero() {
            return Err("--jwks-refresh-min-interval and --jwks-refresh-interval must be positive".into());
        }
        // A provider signs tokens for all its applications; without an
        // audience check, one issued to another of them (with an `admin`
        // claim of its own, say) would be accepted here.
        if self.jwt_audience.is_empty() {
            return Err("--jwks-url needs --jwt-audience (SB_JWT_AUDIENCE): the audience the identity provider puts \
                        in the tokens it issues for this chat"
                .into());
        }
        Ok(())
    }

    /// Settings for tests and the embedded default.
    pub fn for_node(node_id: &str, listen: SocketAddr, jwt_secret: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            listen,
            jwt_secret: Some(Secret::new(jwt_secret)),
            jwks_url: None,
            jwt_issuer: None,
            jwt_audience: Vec::new(),
            jwks_refresh_min_interval: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(3600),
            allowed_origins: vec!["*".into()],
            max_frame_bytes: 16 * 1024,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            max_body_bytes: 4 * 1024,
            rate_per_second: 20,
            rate_burst: 40,
            max_connections_per_user: 16,
            send_queue_frames: 1024,
            send_queue_bytes: 1024 * 1024,
            socket_send_buffer_bytes: DEFAULT_SOCKET_SEND_BUFFER_BYTES,
            close_timeout: Duration::from_secs(10),
            token_leeway: Duration::from_secs(5),
            max_in_flight: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            max_replay: 500,
            catch_up_after: vec![Duration::from_millis(300), Duration::from_secs(2)],
            heartbeat_interval: Duration::from_secs(3),
            presence_interval: Duration::from_millis(500),
            presence_refresh: Duration::from_secs(10),
            produce_queue_timeout: Duration::from_secs(5),
            drain_grace: Duration::from_secs(10),
            create_delivery_topic: false,
            dev_mode: false,
            backlog: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(flags: &[&str]) -> Result<EdgeConfig, String> {
        let args = ["edge", "--node-id", "edge-1", "--database-url", "sqlite://x"].iter().chain(flags);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.edge.validate()?;
        Ok(cli.edge)
    }

    #[test]
    fn tokens_need_a_secret_or_an_identity_provider() {
        let secret_only = parse(&["--jwt-secret", SECRET]).unwrap();
        assert!(secret_only.jwks_url.is_none());
        let provider = parse(&[
            "--jwks-url",
            "https://idp.example.com/.well-known/jwks.json",
            "--jwt-issuer",
            "https://idp.example.com/",
            "--jwt-audience",
            "chat,chat-admin",
        ])
        .unwrap();
        assert!(provider.jwt_secret.is_none(), "no secret needed with a provider");
        assert_eq!(provider.jwt_audience, ["chat", "chat-admin"]);
        assert_eq!(provider.jwks_refresh_min_interval, Duration::from_secs(30));
        assert_eq!(provider.jwks_refresh_interval, Duration::from_secs(3600));
        let both = ["--jwt-secret", SECRET, "--jwks-url", "https://idp.example.com/jwks", "--jwt-audience", "chat"];
        assert!(parse(&both).is_ok(), "both");

        let refused = |flags: &[&str], says: &str| {
            let error = parse(flags).unwrap_err();
            assert!(error.contains(says), "{flags:?}: {error}");
        };
        refused(&[], "set --jwt-secret (HS256 tokens) or --jwks-url");
        refused(&["--jwt-secret", "short"], "at least 32 bytes");
        refused(&["--jwt-secret", SECRET, "--jwt-audience", "chat"], "set --jwks-url");
        refused(&["--jwt-secret", SECRET, "--jwt-issuer", "https://idp.example.com/"], "set --jwks-url");
        refused(&["--jwks-url", "idp.example.com/jwks"], "--jwks-url: SB_JWKS_URL");
        refused(&["--jwks-url", "https://idp.example.com/jwks", "--jwt-issuer", ""], "may not be empty");
        refused(&["--jwks-url", "https://idp.example.com/jwks", "--jwks-refresh-min-interval", "0s"], "positive");
        refused(&["--jwks-url", "https://idp.example.com/jwks"], "--jwks-url needs --jwt-audience");
    }

    #[test]
    fn a_zero_ping_interval_or_idle_timeout_is_refused() {
        for flag in ["--ping-interval", "--idle-timeout"] {
            let error = parse(&["--jwt-secret", SECRET, flag, "0s"]).unwrap_err();
            assert!(error.contains("--ping-interval and --idle-timeout must be positive"), "{flag}: {error}");
        }
    }
}
