//! Starting and stopping the systems under test, each as its own processes
//! so their CPU and memory can be read apart from the driver's.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::protocol::{Codec, Protocol};
use crate::run_state::{DEFAULT_POSTGRES_URL, RunState, create_database};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// The bare tokio-tungstenite broadcast server.
    Ceiling,
    /// Socket.IO 4 + @socket.io/redis-adapter, two Node processes and Redis.
    Socketio,
    /// Switchboard's embedded default: two edges, persister and router in one process.
    Switchboard,
    /// Switchboard's production binaries (two edges, a persister, a router)
    /// against Kafka and PostgreSQL from `scripts/kafka.sh` and `scripts/postgres.sh`.
    #[value(name = "switchboard-kafka")]
    #[serde(rename = "switchboard-kafka")]
    SwitchboardKafka,
}

impl SystemKind {
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Ceiling => "bare ceiling",
            SystemKind::Socketio => "Socket.IO + Redis",
            SystemKind::Switchboard => "Switchboard (embedded)",
            SystemKind::SwitchboardKafka => "Switchboard (Kafka + PostgreSQL)",
        }
    }

    /// Whether the system stores messages (and so has a persistence figure).
    pub fn persists(self) -> bool {
        matches!(self, SystemKind::Switchboard | SystemKind::SwitchboardKafka)
    }
}

pub struct System {
    pub codec: Codec,
    pub targets: Vec<String>,
    /// Every process that works for the system (CPU and memory under load).
    pub pids: Vec<u32>,
    /// The processes clients connect to (memory per idle connection).
    pub front_pids: Vec<u32>,
    /// Switchboard's database URL (SQLite or PostgreSQL), to count stored messages.
    pub database: Option<String>,
    /// Most connections the system can accept here: a system that runs as
    /// one process is bound by that process's limit of 20,000 descriptors.
    pub max_connections: usize,
    children: Vec<Child>,
    /// Topics and database of this run (Switchboard on Kafka + PostgreSQL).
    run_state: Option<RunState>,
}

impl Drop for System {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(state) = &self.run_state
            && let Err(e) = state.remove()
        {
            eprintln!("warning: run {} not removed: {e:#}", state.prefix);
        }
    }
}

/// Where the programs are: the workspace root and the release binaries.
pub struct Paths {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub work: PathBuf,
}

/// Connections one server process can take here (hard limit of 20,000
/// descriptors per process, less its own files and Kafka's sockets).
const ONE_PROCESS_CONNECTIONS: usize = 19_500;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// The first edge's port of Switchboard on Kafka + PostgreSQL; the others follow.
const KAFKA_EDGE_PORT: u16 = 17031;

/// Starts a system; Switchboard on Kafka + PostgreSQL with `edges` edge processes.
pub fn start(kind: SystemKind, edges: usize, paths: &Paths) -> anyhow::Result<System> {
    std::fs::create_dir_all(&paths.work)?;
    let edge_ports = (0..edges).map(|i| KAFKA_EDGE_PORT + i as u16);
    // A leftover server on one of our ports would be measured instead of ours.
    for port in [17001, 17011, 17012, 16379, 17021, 17022].into_iter().chain(edge_ports.clone()) {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is taken by another process; stop it first");
        }
    }
    // Switchboard's processes log warnings unless SB_BENCH_LOG says otherwise.
    let log_level = std::env::var("SB_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let log = |name: &str| -> anyhow::Result<Stdio> {
        Ok(std::fs::File::create(paths.work.join(format!("{name}.log")))?.into())
    };
    let mut system = System {
        codec: Codec { protocol: Protocol::Bare, secret: SECRET.into(), run: String::new(), presence: false },
        targets: Vec::new(),
        pids: Vec::new(),
        front_pids: Vec::new(),
        database: None,
        max_connections: usize::MAX,
        children: Vec::new(),
        run_state: None,
    };
    // Returns the process id.
    let spawn = |system: &mut System, command: &mut Command, name: &str| -> anyhow::Result<u32> {
        let child = command
            .stdin(Stdio::null())
            .stdout(log(name)?)
            .stderr(log(&format!("{name}.err"))?)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        let pid = child.id();
        system.pids.push(pid);
        system.children.push(child);
        Ok(pid)
    };
    match kind {
        SystemKind::Ceiling => {
            let exe = std::env::current_exe()?;
            let pid =
                spawn(&mut system, Command::new(exe).args(["ceiling", "--listen", "127.0.0.1:17001"]), "ceiling")?;
            system.front_pids.push(pid);
            system.targets = vec!["127.0.0.1:17001".into()];
            system.max_connections = ONE_PROCESS_CONNECTIONS;
        }
        SystemKind::Socketio => {
            system.codec.protocol = Protocol::Socketio;
            let redis = which("redis-server").context("redis-server not installed: run bench/setup.sh")?;
            spawn(
                &mut system,
                Command::new(redis).args([
                    "--port",
                    "16379",
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]),
                "redis",
            )?;
            wait_port("127.0.0.1:16379")?;
            let server = paths.root.join("bench/socketio/server.js");
            if !paths.root.join("bench/socketio/node_modules").is_dir() {
                bail!("bench/socketio/node_modules missing: run bench/setup.sh");
            }
            for port in [17011, 17012] {
                let pid = spawn(
                    &mut system,
                    Command::new("node")
                        .arg(&server)
                        .env("PORT", port.to_string())
                        .env("REDIS_URL", "redis://127.0.0.1:16379"),
                    &format!("socketio-{port}"),
                )?;
                system.front_pids.push(pid);
                system.targets.push(format!("127.0.0.1:{port}"));
            }
        }
        SystemKind::Switchboard => {
            system.codec.protocol = Protocol::Switchboard;
            let db = paths.work.join("switchboard-bench.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            let bin = paths.bin_dir.join("switchboard");
            if !bin.is_file() {
                bail!("{} missing: cargo build --release", bin.display());
            }
            let pid = spawn(
                &mut system,
                Command::new(bin)
                    .args(["--port", "17021", "--jwt-secret", SECRET])
                    .arg("--db")
                    .arg(&db)
                    .env("RUST_LOG", &log_level),
                "switchboard",
            )?;
            system.front_pids.push(pid);
            system.targets = vec!["127.0.0.1:17021".into(), "127.0.0.1:17022".into()];
            system.max_connections = ONE_PROCESS_CONNECTIONS;
            system.database = Some(format!("sqlite://{}?mode=ro", db.display()));
        }
        SystemKind::SwitchboardKafka => {
            system.codec.protocol = Protocol::Switchboard;
            // A fresh topic prefix and database for every start.
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let prefix = format!("bench{stamp}");
            let admin_url = std::env::var("SB_BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
            let kafka = std::env::var("SB_BENCH_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into());
            let database_url = create_database(&admin_url, &prefix)?;
            system.run_state = Some(RunState { kafka: kafka.clone(), prefix: prefix.clone(), admin_url });
            let common = [
                format!("--kafka-brokers={kafka}"),
                format!("--topic-prefix={prefix}"),
                format!("--database-url={database_url}"),
            ];
            let sbctl = paths.bin_dir.join("sbctl");
            run(Command::new(&sbctl).args(["topics", "--partitions=4", "--replication=1"]).args(&common[..2]))?;
            run(Command::new(&sbctl).arg("migrate").arg(&common[2]))?;
            let bin = |name: &str| paths.bin_dir.join(name);
            spawn(&mut system, Command::new(bin("persister")).args(&common).env("RUST_LOG", &log_level), "persister")?;
            spawn(&mut system, Command::new(bin("router")).args(&common[..2]).env("RUST_LOG", &log_level), "router")?;
            for (i, port) in edge_ports.enumerate() {
                let node = &format!("edge-{}", i + 1);
                let pid = spawn(
                    &mut system,
                    Command::new(bin("edge"))
                        .args(&common)
                        .args([format!("--node-id={node}"), format!("--listen=127.0.0.1:{port}")])
                        .args(["--jwt-secret", SECRET])
                        .env("RUST_LOG", &log_level),
                    node,
                )?;
                system.front_pids.push(pid);
                system.targets.push(format!("127.0.0.1:{port}"));
            }
            // The broker and the database work for this system too: count them.
            let kafka_pid = std::fs::read_to_string(paths.root.join(".work/kafka/kafka.pid"))
                .context("Kafka is not running: scripts/kafka.sh start")?;
            system.pids.push(kafka_pid.trim().parse()?);
            system.pids.push(postmaster_pid(paths)?);
            system.database = Some(database_url);
        }
    }
    for target in system.targets.clone() {
        wait_port(&target)?;
    }
    for child in &mut system.children {
        if let Some(status) = child.try_wait()? {
            bail!("a {} process exited at start ({status}); see {}", kind.name(), paths.work.display());
        }
    }
    Ok(system)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn wait_port(target: &str) -> anyhow::Result<()> {
    let addr: SocketAddr = target.parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on {target} after 60s")
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| Path::new(p).is_file())
}

/// PostgreSQL's postmaster (its children serve the connections).
fn postmaster_pid(paths: &Paths) -> anyhow::Result<u32> {
    let output = Command::new(paths.root.join("scripts/postgres.sh")).arg("pid").output()?;
    let pid = String::from_utf8(output.stdout)?;
    pid.trim().parse().with_context(|| format!("scripts/postgres.sh pid printed {pid:?}"))
}
