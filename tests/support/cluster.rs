//! A deployment of separate OS processes (two edges, a persister, a router)
//! built from the release binaries, against the real Kafka broker and
//! PostgreSQL that `scripts/kafka.sh` and `scripts/postgres.sh` start.
//!
//! Each cluster gets its own topic prefix and database, so tests never see
//! each other's data. Every process is SIGKILLed when the cluster is dropped,
//! also when a test panics.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use switchboard_core::kafka::KafkaConfig;
use switchboard_core::provision::{delete_topics, deployment_topics};
use switchboard_core::topics::Topics;

use super::{Client, SECRET};

/// Where the services and binaries are; `scripts/e2e.sh` sets these.
pub struct Env {
    pub kafka: String,
    /// The broker's SASL_SSL listener and the CA its certificate chains to
    /// (`scripts/kafka.sh`, `scripts/tls.sh`).
    pub kafka_secure: String,
    pub ca: PathBuf,
    /// A database the role may connect to; per-test databases are created next to it.
    pub postgres_url: String,
    pub bin_dir: PathBuf,
    pub root: PathBuf,
}

impl Env {
    pub fn from_env() -> Env {
        let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"));
        let bin_dir = std::env::var_os("SB_E2E_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(root.join("target"));
            target.join("release")
        });
        for bin in ["edge", "persister", "router", "sbctl"] {
            assert!(
                bin_dir.join(bin).is_file(),
                "{} missing: build the release binaries first (scripts/e2e.sh does)",
                bin_dir.join(bin).display()
            );
        }
        Env {
            kafka: std::env::var("SB_E2E_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into()),
            kafka_secure: std::env::var("SB_E2E_KAFKA_SECURE").unwrap_or_else(|_| "localhost:19094".into()),
            ca: root.join(".work/tls/ca.crt"),
            postgres_url: std::env::var("SB_E2E_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://sb:sb@127.0.0.1:15432/sb".into()),
            bin_dir,
            root,
        }
    }

    fn script(&self, name: &str, arg: &str) {
        let status = Command::new(self.root.join("scripts").join(name)).arg(arg).status().expect("run script");
        assert!(status.success(), "scripts/{name} {arg} failed: {status}");
    }
}

/// One OS process that can be killed and started again with the same settings.
pub struct Process {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    /// Environment variables on top of this process's.
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Process {
    pub fn spawn(&mut self) {
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        writeln!(log, "===== start {} =====", self.starts + 1).unwrap();
        let err = log.try_clone().unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod, and wait until it is gone (SIGKILL after 20 s).
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited with {status}:\n{}", self.name, tail(&self.log, 30));
        }
    }
}

/// Settings a test may change before the processes start.
#[derive(Clone)]
pub struct Options {
    pub partitions: i32,
    /// Sends per second each connection may make.
    pub rate_per_second: u32,
    /// Extra librdkafka settings for the edges only (`key=value`).
    pub edge_kafka_options: Vec<String>,
    /// Where every process exports its traces (OTLP/HTTP), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// Every process and `sbctl` reach Kafka over SASL_SSL (SCRAM-SHA-512)
    /// and PostgreSQL over TLS (verify-full), as managed services.
    pub secure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partitions: 4,
            rate_per_second: 500,
            edge_kafka_options: Vec::new(),
            otlp_endpoint: None,
            secure: false,
        }
    }
}

pub struct Cluster {
    pub env: Env,
    pub prefix: String,
    /// The test's own database, and the URL to reach it.
    pub database: String,
    pub database_url: String,
    pub edges: Vec<SocketAddr>,
    pub edge_procs: Vec<Process>,
    pub persister: Process,
    pub router: Process,
    /// Ops listeners (`/metrics`, `/healthz`, `/readyz`) of the persister and the router.
    pub persister_ops: SocketAddr,
    pub router_ops: SocketAddr,
    pub dir: PathBuf,
    /// Settings every process and `sbctl` get in their environment.
    pub common_env: Vec<(String, String)>,
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// Provisions topics and a database named after `test`, then starts two
    /// edges, a persister and a router and waits until the edges are ready.
    pub async fn start(test: &str, options: Options) -> Cluster {
        super::telemetry();
        let env = Env::from_env();
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 1_000_000;
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("e2e{stamp}{n}-{test}");
        let database = format!("e2e_{stamp}{n}");
        let dir = env.root.join(".work").join("e2e").join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();

        postgres_admin(&env, &format!("CREATE DATABASE {database}")).await;
        let mut database_url = replace_database(&env.postgres_url, &database);
        let mut brokers = env.kafka.clone();
        let mut common_env: Vec<(String, String)> = Vec::new();
        if options.secure {
            brokers = env.kafka_secure.clone();
            let ca = env.ca.display().to_string();
            for (key, value) in [
                ("SB_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("SB_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("SB_KAFKA_SASL_USERNAME", "sb"),
                ("SB_KAFKA_SASL_PASSWORD", "sb-secret"),
                ("SB_KAFKA_CA_LOCATION", ca.as_str()),
            ] {
                common_env.push((key.into(), value.into()));
            }
            // By host name, so the certificate's name is checked too.
            database_url =
                format!("{}?sslmode=verify-full&sslrootcert={ca}", database_url.replace("@127.0.0.1:", "@localhost:"));
        }
        let kafka_flags = [format!("--kafka-brokers={brokers}"), format!("--topic-prefix={prefix}")];

        let common: Vec<String> =
            kafka_flags.iter().cloned().chain([format!("--database-url={database_url}")]).collect();
        let process = |name: &str, bin: &str, args: Vec<String>| Process {
            name: name.into(),
            program: env.bin_dir.join(bin),
            args,
            env: match &options.otlp_endpoint {
                Some(endpoint) => vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()),
                    // Export every 200 ms rather than every 5 s.
                    ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
                    ("OTEL_RESOURCE_ATTRIBUTES".into(), format!("service.instance.id={name}")),
                ],
                None => Vec::new(),
            }
            .into_iter()
            .chain(common_env.iter().cloned())
            .collect(),
            log: dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        };
        let mut edges = Vec::new();
        let mut edge_procs = Vec::new();
        for node in ["edge-1", "edge-2"] {
            let addr = free_port();
            let mut args = common.clone();
            args.extend([
                format!("--node-id={node}"),
                format!("--listen={addr}"),
                format!("--jwt-secret={SECRET}"),
                format!("--rate-per-second={}", options.rate_per_second),
                format!("--rate-burst={}", options.rate_per_second),
                "--heartbeat-interval=1s".into(),
                "--drain-grace=1s".into(),
                // A user on a killed edge is dropped after 3 s.
                "--presence-refresh=1s".into(),
            ]);
            args.extend(options.edge_kafka_options.iter().map(|o| format!("--kafka-option={o}")));
            edges.push(addr);
            edge_procs.push(process(node, "edge", args));
        }
        let (persister_ops, router_ops) = (free_port(), free_port());
        let mut persister_args = common.clone();
        persister_args.extend([
            "--migrate=false".into(),
            "--persister-instance-id=persister-1".into(),
            format!("--ops-listen={persister_ops}"),
        ]);
        let router_args: Vec<String> = kafka_flags
            .iter()
            .cloned()
            .chain([
                "--node-stale-after=5s".into(),
                "--router-instance-id=router-1".into(),
                format!("--ops-listen={router_ops}"),
            ])
            .collect();
        let mut cluster = Cluster {
            persister: process("persister", "persister", persister_args),
            router: process("router", "router", router_args),
            persister_ops,
            router_ops,
            edge_procs,
            edges,
            prefix,
            database,
            database_url,
            dir,
            env,
            common_env,
        };
        let partitions = format!("--partitions={}", options.partitions);
        succeeded(cluster.sbctl(&["topics", &partitions, "--replication=1"]));
        succeeded(cluster.sbctl(&["migrate"]));
        cluster.persister.spawn();
        cluster.router.spawn();
        for edge in &mut cluster.edge_procs {
            edge.spawn();
        }
        for i in 0..cluster.edges.len() {
            cluster.wait_edge_ready(i).await;
        }
        cluster.wait_flowing().await;
        cluster
    }

    /// Waits until a message sent on one edge reaches the other: the
    /// persister and the router have joined their groups and work.
    async fn wait_flowing(&self) {
        let mut a = Client::in_room(self.edges[0], "warmup-a", "warmup").await;
        let mut b = Client::in_room(self.edges[1], "warmup-b", "warmup").await;
        a.say("warmup", "w-1", "is anyone there?").await;
        // Both, so every process's counters have settled when a test starts.
        a.messages("warmup", 1).await;
        b.messages("warmup", 1).await;
    }

    /// Another persister in the same group (not started), with its own
    /// instance id and ops listener: a scale-up.
    pub fn another_persister(&self, name: &str) -> (Process, SocketAddr) {
        let ops = free_port();
        let args = self
            .persister
            .args
            .iter()
            .map(|arg| match arg.split_once('=') {
                Some(("--persister-instance-id", _)) => format!("--persister-instance-id={name}"),
                Some(("--ops-listen", _)) => format!("--ops-listen={ops}"),
                _ => arg.clone(),
            })
            .collect();
        let process = Process {
            name: name.into(),
            program: self.persister.program.clone(),
            args,
            env: self.persister.env.clone(),
            log: self.dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        };
        (process, ops)
    }

    /// A notifier (not started) posting to `webhook`, with its ops listener;
    /// no rate limit per recipient to speak of, and the edges' presence refresh.
    pub fn notifier(&self, webhook: SocketAddr, secret: &str) -> (Process, SocketAddr) {
        let ops = free_port();
        let shared = ["--kafka-brokers", "--topic-prefix", "--database-url"];
        let mut args: Vec<String> = self
            .persister
            .args
            .iter()
            .filter(|arg| arg.split_once('=').is_some_and(|(flag, _)| shared.contains(&flag)))
            .cloned()
            .collect();
        args.extend([
            format!("--webhook-url=http://{webhook}/push"),
            format!("--webhook-secret={secret}"),
            "--webhook-timeout=2s".into(),
            "--recipient-rate-per-minute=100000".into(),
            "--recipient-burst=10000".into(),
            "--presence-refresh=1s".into(),
            "--notifier-instance-id=notifier-1".into(),
            format!("--ops-listen={ops}"),
        ]);
        let process = Process {
            name: "notifier".into(),
            program: self.persister.program.with_file_name("notifier"),
            args,
            env: self.persister.env.clone(),
            log: self.dir.join("notifier.log"),
            child: None,
            starts: 0,
        };
        (process, ops)
    }

    pub async fn wait_edge_ready(&mut self, i: usize) {
        wait_ready(&mut self.edge_procs[i], self.edges[i]).await;
    }

    pub async fn restart_edge(&mut self, i: usize) {
        self.edge_procs[i].restart();
        self.wait_edge_ready(i).await;
    }

    /// Panics if any process died on its own.
    pub fn assert_all_running(&mut self) {
        self.persister.assert_running();
        self.router.assert_running();
        for edge in &mut self.edge_procs {
            edge.assert_running();
        }
    }

    pub fn kafka_stop(&self) {
        self.env.script("kafka.sh", "stop");
    }

    pub fn kafka_start(&self) {
        self.env.script("kafka.sh", "start");
    }

    pub fn postgres_restart(&self) {
        self.env.script("postgres.sh", "restart");
    }

    /// How many messages the test database holds.
    pub async fn stored(&self) -> u64 {
        let mut db = self.db().await;
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages").fetch_one(&mut db).await.unwrap();
        n as u64
    }

    /// Runs `sbctl` with this cluster's Kafka and topic prefix (and the
    /// test database, for the commands that take one) after `args`.
    pub fn sbctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(self.env.bin_dir.join("sbctl"));
        let brokers = if self.common_env.is_empty() { &self.env.kafka } else { &self.env.kafka_secure };
        command.args(args).env("SB_KAFKA_BROKERS", brokers).env("SB_TOPIC_PREFIX", &self.prefix);
        command.envs(self.common_env.iter().map(|(k, v)| (k, v)));
        command.env("SB_DATABASE_URL", &self.database_url).env("NO_COLOR", "1");
        command.output().expect("run sbctl")
    }

    /// Drops the test database and creates it again, empty.
    pub async fn drop_database(&self) {
        // FORCE: the edges' read pools are connected.
        postgres_admin(&self.env, &format!("DROP DATABASE {} WITH (FORCE)", self.database)).await;
        postgres_admin(&self.env, &format!("CREATE DATABASE {}", self.database)).await;
    }

    pub async fn db(&self) -> PgConnection {
        PgConnection::connect(&self.database_url).await.expect("connect to the test database")
    }
}

/// Waits up to 30 s for `process` to answer `/readyz` with 200 on `addr`
/// (an edge's port, a worker's ops listener); panics with its log's tail
/// if it exits or does not get there.
pub async fn wait_ready(process: &mut Process, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        process.assert_running();
        if http_status(addr, "/readyz") == Some(200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} not ready in 30s:\n{}", process.name, tail(&process.log, 30));
}

/// A process a test started and did not stop (it failed midway) is killed.
impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.persister.kill();
        self.router.kill();
        for edge in &mut self.edge_procs {
            edge.kill();
        }
        // The test's topics go too, so runs do not pile partitions up on
        // the broker (which then slows every run after). On a thread of its
        // own: this may run inside the test's runtime.
        let (kafka, prefix) = (self.env.kafka.clone(), self.prefix.clone());
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let kafka = KafkaConfig::new(kafka);
                let names = deployment_topics(&kafka, &Topics::new(&prefix).expect("a valid prefix"))?;
                delete_topics(&kafka, &names).await
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("warning: the topics {}.* were not deleted: {e}", self.prefix);
        }
        if std::thread::panicking() {
            let procs = [&self.persister, &self.router].into_iter().chain(&self.edge_procs);
            for process in procs {
                eprintln!("--- {}: last warnings and errors\n{}", process.name, problems(&process.log, 15));
            }
            eprintln!("process logs of the failed test are in {}", self.dir.display());
        }
    }
}

/// What a command printed, stdout then stderr.
pub fn output_text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// What a successful `sbctl` run printed; panics with it when the run failed.
pub fn succeeded(output: std::process::Output) -> String {
    assert!(output.status.success(), "sbctl failed ({}):\n{}", output.status, output_text(&output));
    output_text(&output)
}

/// Runs one statement on the server's maintenance database (create and drop
/// the tests' databases).
async fn postgres_admin(env: &Env, statement: &str) {
    let mut admin = PgConnection::connect(&env.postgres_url).await.expect("connect to PostgreSQL");
    sqlx::query(statement).execute(&mut admin).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    admin.close().await.unwrap();
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL ends in /<database>");
    format!("{base}/{database}")
}

/// A loopback port for a process to listen on, chosen below the kernel's
/// ephemeral range (32768–60999 on Linux). A port the kernel hands out for
/// `:0` is also one it may hand to an outgoing connection (a Kafka client's)
/// before the process binds it ("Address already in use"); ports below the
/// range are only ever taken by listeners, and each test process walks its
/// own sequence of them.
fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % u32::from(SPAN);
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) * 17;
        let port = LOW + ((start + step) % u32::from(SPAN)) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The last `lines` warnings and errors of a process log, without
/// librdkafka's connection chatter, which repeats whenever the broker is
/// down: what a failure report in CI can show.
fn problems(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let found: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("Global error") && !l.contains(": FAIL [")
        })
        .collect();
    found[found.len().saturating_sub(lines)..].join("\n")
}

fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A real OpenTelemetry Collector (`scripts/otelcol.sh`: OTLP/HTTP in, the
/// file exporter out) on a free loopback port; stopped when dropped.
pub struct Collector {
    child: Child,
    pub endpoint: String,
    file: PathBuf,
}

impl Collector {
    /// Starts it, writing what it receives to `dir/spans.jsonl`; waits until it listens.
    pub fn start(dir: &Path) -> Collector {
        let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"));
        let script = root.join("scripts").join("otelcol.sh");
        let built = Command::new(&script).arg("path").stdout(Stdio::null()).status().expect("run otelcol.sh");
        assert!(built.success(), "no collector binary: run scripts/otelcol.sh build (scripts/e2e.sh does)");
        std::fs::create_dir_all(dir).unwrap();
        let addr = free_port();
        let file = dir.join("spans.jsonl");
        let log = File::create(dir.join("otelcol.log")).unwrap();
        let child = Command::new(&script)
            .args(["run", &addr.port().to_string()])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the collector");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "collector not listening on {addr} in 30 s:\n{}",
                tail(&dir.join("otelcol.log"), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector { child, endpoint: format!("http://{addr}"), file }
    }

    /// Every span received so far, each with its resource's `service.name`
    /// and `service.instance.id` added as `service` and `instance`.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut spans = Vec::new();
        // Whole lines only: the collector may be writing the last one.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n') && !l.trim().is_empty()) {
            let request: serde_json::Value = serde_json::from_str(line).expect("the file exporter writes JSON lines");
            for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
                let attribute = |key: &str| {
                    resource_spans["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == key)
                        .map(|a| a["value"]["stringValue"].clone())
                        .unwrap_or_default()
                };
                let (service, instance) = (attribute("service.name"), attribute("service.instance.id"));
                for scope in resource_spans["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service"] = service.clone();
                        span["instance"] = instance.clone();
                        spans.push(span);
                    }
                }
            }
        }
        spans
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
