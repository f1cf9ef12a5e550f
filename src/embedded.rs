//! Starting and stopping the embedded default (also used by the integration tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::backlog::Backlog;
use switchboard_core::kafka::KafkaConfig;
use switchboard_core::metrics::Metrics;
use switchboard_core::store::Store;
use switchboard_core::topics::Topics;
use switchboard_edge::config::EdgeConfig;
use switchboard_edge::events::EdgeEvents;
use switchboard_edge::server::Edge;
use switchboard_edge::state::EdgeState;
use switchboard_workers::notifier::{Notifier, NotifierConfig};
use switchboard_workers::persister::{Persister, PersisterConfig};
use switchboard_workers::router::{Router, RouterConfig};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::mock_brokers::{MockBrokers, QUIET_RTT};

/// Node ids of the two embedded edges.
pub const NODES: [&str; 2] = ["edge-1", "edge-2"];

/// Inbound bytes the persister may be behind before the edges refuse sends:
/// below one mock partition's 5 MiB, so even a single hot room (one
/// partition) cannot push an accepted send out of the mock before it is stored.
pub const BACKLOG_LIMIT_BYTES: u64 = 3 * 1024 * 1024;

/// How long the edges' producer waits to batch client sends (2 ms on a
/// real cluster). The mock cluster finds the records of a fetch by walking
/// every message set its partition holds (up to 5 MiB), so its work grows
/// with the square of the number of sets. At 2 ms the edges' sets held one
/// or two sends and that walk took a quarter of the process's CPU (perf,
/// persistence scenario; 13% at 5 ms). At 3,000 msg/s in rooms of 10 the
/// process went from 0.79 to 0.52 cores, p50 from 28.5 to 29.9 ms.
pub const EDGE_LINGER: Duration = Duration::from_millis(5);

/// How long the consumers' fetches wait for records (500 ms on a real
/// cluster). A real broker answers a waiting fetch as soon as records
/// arrive; the mock cluster holds an empty fetch for the whole wait and
/// answers it empty, so each consumer hop (persister, router, edge) added up
/// to the full wait to a message's trip. At 1,000 msg/s in rooms of 10,
/// p50/p99 went from 30.0/41.6 ms at 10 ms to 14.7/27.5 ms at 2 ms, for
/// 0.30 -> 0.51 cores (more empty fetches); at 8,000 msg/s the cores are
/// the same. An idle process's empty fetches are what the mock brokers'
/// quiet spells take away (see [`crate::mock_brokers`]).
pub const MOCK_FETCH_WAIT: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// SQLite file holding the chat history.
    pub database: PathBuf,
    /// Addresses of the two edges (port 0 picks a free port).
    pub listen: [SocketAddr; 2],
    /// Partitions of the busy shared topics, inbound and events (the
    /// others have one; see [`Embedded::start`]).
    pub partitions: i32,
    /// Secret signing client tokens; random unless the operator or a test gives one.
    pub jwt_secret: String,
    /// Development conveniences: the demo page and `/dev/token`, which signs
    /// a token for any user name. Safe only while nobody else can reach the
    /// ports; the binary turns it on by default only with a random secret.
    pub dev_mode: bool,
    /// Browser origins the edges accept (`*`: any).
    pub allowed_origins: Vec<String>,
    /// Settings applied to both edges after the defaults (tests tighten limits).
    pub tune_edge: fn(&mut EdgeConfig),
    /// See [`BACKLOG_LIMIT_BYTES`].
    pub backlog_limit_bytes: u64,
    /// Offline notifications to a webhook: off unless given.
    pub notifier: Option<NotifierConfig>,
    /// How late the mock broker answers while the process writes nothing
    /// (see [`crate::mock_brokers`]).
    pub quiet_rtt: Duration,
}

impl EmbeddedConfig {
    pub fn new(database: PathBuf, listen: [SocketAddr; 2]) -> Self {
        Self {
            database,
            listen,
            partitions: 4,
            jwt_secret: format!("dev-{:032x}", fastrand::u128(..)),
            dev_mode: true,
            allowed_origins: vec!["*".into()],
            tune_edge: |_| {},
            backlog_limit_bytes: BACKLOG_LIMIT_BYTES,
            notifier: None,
            quiet_rtt: QUIET_RTT,
        }
    }
}

impl EmbeddedConfig {
    /// Who may connect. Dev mode (the demo page, `/dev/token`, any browser
    /// origin) is what a first run wants, so it is on when no secret is given
    /// (the random secret then signs nothing but dev tokens); a given secret
    /// means real clients with real tokens, so dev mode is then off unless
    /// asked for. Origins default to any in dev mode and to none otherwise.
    pub fn with_access(
        mut self,
        jwt_secret: Option<String>,
        dev: bool,
        allowed_origins: Option<Vec<String>>,
    ) -> Result<Self, String> {
        self.dev_mode = dev || jwt_secret.is_none();
        if let Some(secret) = jwt_secret {
            if secret.len() < 32 {
                return Err("--jwt-secret must be at least 32 bytes".into());
            }
            self.jwt_secret = secret;
        }
        self.allowed_origins = match allowed_origins {
            Some(origins) => origins,
            None if self.dev_mode => vec!["*".into()],
            None => Vec::new(),
        };
        Ok(self)
    }
}

/// A running embedded deployment; [`Embedded::stop`] ends it in order.
pub struct Embedded {
    /// The Kafka settings of every component (the mock cluster's bootstrap
    /// is `kafka.brokers`), whose writes end the mock brokers' quiet; a
    /// test's client made from them counts as the process's.
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub edges: Vec<SocketAddr>,
    /// Each edge's shared state (epoch, counters), in the order of [`NODES`].
    pub edge_states: Vec<Arc<EdgeState>>,
    pub store: Store,
    pub jwt_secret: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// The mock brokers: stopped by [`Embedded::stop`] once every task is
    /// joined. Dropped without a stop (a failed test unwinding), they keep
    /// running: the tasks are only aborted then and dropped later by the
    /// runtime, and a Kafka client whose brokers are gone may never finish
    /// closing (a failed test's process hung, logging "all brokers down",
    /// instead of reporting).
    brokers: Option<MockBrokers>,
}

impl Embedded {
    pub async fn start(config: EmbeddedConfig) -> anyhow::Result<Self> {
        let topics = Topics::new("sb")?;
        // The mock cluster has no retention: it keeps the last 5 MiB of
        // every partition, so each partition written to for long enough is
        // 5 MiB of this process's memory. Only the busy topics (client sends
        // and the events made of them) are spread; the rest (presence and
        // typing, routes, nodes, dead letters) have one partition each.
        let busy = [topics.inbound(), topics.events()];
        let created = topics.shared().into_iter().map(|topic| {
            let partitions = if busy.contains(&topic) { config.partitions } else { 1 };
            (topic, partitions)
        });
        let created = created.chain(NODES.iter().map(|node| (topics.deliver(node), 1))).collect();
        let brokers = MockBrokers::start(created, config.quiet_rtt)?;
        let kafka = KafkaConfig {
            linger: EDGE_LINGER,
            fetch_wait: MOCK_FETCH_WAIT,
            write_watch: Some(brokers.write_watch()),
            ..KafkaConfig::new(brokers.bootstrap_servers())
        };

        let url = format!("sqlite://{}?mode=rwc", config.database.display());
        let store = Store::connect(&url, 4).await?;
        store.migrate().await?;

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let backlog = Arc::new(Backlog::new(config.backlog_limit_bytes));
        let persister_config = PersisterConfig { backlog: Some(backlog.clone()), ..PersisterConfig::default() };
        // One set of metrics for the whole process, served by both edges.
        let metrics = Metrics::default();
        let persister = Persister::new(&kafka, topics.clone(), store.clone(), persister_config, &metrics)?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = persister.run(token).await {
                tracing::error!(error = %e, "persister failed");
            }
        });
        let router = Router::new(&kafka, topics.clone(), RouterConfig::default(), &metrics)?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = router.run(token).await {
                tracing::error!(error = %e, "router failed");
            }
        });

        let edge_events = Arc::new(EdgeEvents::new(&metrics));
        let mut edges = Vec::new();
        let mut edge_states = Vec::new();
        let mut presence_refresh = Duration::from_secs(10);
        for (node, listen) in NODES.iter().zip(config.listen) {
            let listener = TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            let mut edge_config = EdgeConfig::for_node(node, addr, &config.jwt_secret);
            edge_config.dev_mode = config.dev_mode;
            edge_config.allowed_origins = config.allowed_origins.clone();
            edge_config.backlog = Some(backlog.clone());
            // One process, nothing to hand clients over to: drain quickly.
            edge_config.drain_grace = std::time::Duration::from_secs(1);
            (config.tune_edge)(&mut edge_config);
            presence_refresh = edge_config.presence_refresh;
            let edge = Edge::start(edge_config, &kafka, topics.clone(), store.clone(), edge_events.clone()).await?;
            edge_states.push(edge.state().clone());
            let token = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = edge.serve(listener, token).await {
                    tracing::error!(error = %e, "edge failed");
                }
            });
            edges.push(addr);
        }
        if let Some(notifier_config) = config.notifier {
            // It must age presence as the edges refresh it.
            let notifier_config = NotifierConfig { presence_refresh, ..notifier_config };
            let notifier = Notifier::new(&kafka, topics.clone(), store.clone(), notifier_config, &metrics)?;
            let token = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = notifier.run(token).await {
                    tracing::error!(error = %e, "notifier failed");
                }
            });
        }
        Ok(Self {
            brokers: Some(brokers),
            kafka,
            topics,
            edges,
            edge_states,
            store,
            jwt_secret: config.jwt_secret,
            shutdown,
            tasks,
        })
    }

    /// The mock cluster, for tests that add topics or look at its quiet.
    pub fn brokers(&self) -> &MockBrokers {
        self.brokers.as_ref().expect("the brokers live until stop")
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Drains the edges, stops the workers, then the mock cluster.
    pub async fn stop(mut self) {
        if let Some(brokers) = &self.brokers {
            brokers.stay_awake();
        }
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.store.close().await;
        // The edges' states hold their producers: gone before the brokers.
        self.edge_states.clear();
        if let Some(brokers) = self.brokers.take() {
            brokers.stop();
        }
    }

    /// Waits for a shutdown signal or an external cancel, then stops.
    pub async fn run_until_stopped(self) {
        tokio::select! {
            _ = switchboard_core::shutdown::signal() => {}
            _ = self.shutdown.cancelled() => {}
        }
        self.stop().await;
    }
}
