//! `sbbench`: the benchmark.
//!
//!   sbbench all [--quick] [--systems ceiling,socketio,switchboard,switchboard-kafka]
//!               [--scenarios idle,fanout,latency,persistence,rooms,soak]
//!       start each system in turn, run every scenario, print the side-by-side
//!       table and write bench/results/{results.json,summary.md}
//!   sbbench drive --protocol ... --targets ... --rate ...
//!       one load against servers that are already running
//!   sbbench ceiling --listen 127.0.0.1:17001
//!       the bare broadcast server (started by `all`)
//!   sbbench churn --targets ... --room room-0 --rate 100 --duration 20s
//!       connections that join one room and go again at a fixed rate (presence)
//!   sbbench webhook --listen 127.0.0.1:28390
//!       a push service stand-in for the notifier: answers 200, counts
//!   sbbench store [--database postgres|sqlite] [--batches 60] [--batch-size 1000]
//!       the persister's SQL alone: batches written straight to a fresh database

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use switchboard_bench::protocol::{Codec, Protocol};
use switchboard_bench::run_state::DEFAULT_POSTGRES_URL;
use switchboard_bench::scenarios::{Plan, Scenario, Selection};
use switchboard_bench::systems::{Paths, SystemKind};
use switchboard_bench::{ceiling, churn, driver, plots, report, scenarios, store, webhook};

#[derive(Debug, Parser)]
#[command(
    name = "sbbench",
    version,
    about = "Switchboard benchmark: Switchboard vs Socket.IO + Redis vs a bare ceiling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario against every system, one after the other.
    All {
        /// A small plan (seconds, not minutes) to check the setup.
        #[arg(long)]
        quick: bool,
        #[arg(long, value_delimiter = ',', default_values = ["ceiling", "socketio", "switchboard", "switchboard-kafka"])]
        systems: Vec<SystemKind>,
        #[arg(long, value_enum, value_delimiter = ',', default_values = ["idle", "fanout", "latency", "persistence", "rooms", "soak"])]
        scenarios: Vec<Scenario>,
        /// Rate of the latency run; by default half of fan-out's sustainable rate.
        #[arg(long)]
        latency_rate: Option<f64>,
        /// Rate of the soak; by default half of fan-out's sustainable rate
        /// (1,000 msg/s when fan-out does not run).
        #[arg(long)]
        soak_rate: Option<f64>,
        /// Length of the soak, instead of the plan's (10 minutes; 30 s with --quick).
        #[arg(long, value_parser = humantime::parse_duration)]
        soak_duration: Option<Duration>,
        /// Room sizes of the `rooms` sweep, instead of the plan's (2, 10, 100, 1000, 5000).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
        room_sizes: Vec<u64>,
        /// Edge processes of Switchboard on Kafka + PostgreSQL.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        edges: u16,
        /// Where results.json and summary.md go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Directory of the release binaries (`switchboard`).
        #[arg(long, env = "SB_BENCH_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// One load against running servers.
    Drive {
        #[arg(long, value_enum)]
        protocol: Protocol,
        /// host:port of each server, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Messages per second over all connections; 0 holds idle connections.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 128)]
        payload: usize,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// HS256 secret for Switchboard tokens.
        #[arg(long, env = "SB_JWT_SECRET", default_value = "")]
        jwt_secret: String,
        /// Server process ids to read CPU and memory from.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<u32>,
    },
    /// Holds idle connections for the idle scenario (started by `all`):
    /// prints `connected <ok> <failed>` once they are up, and closes them when
    /// its standard input ends.
    Hold {
        #[arg(long, value_enum)]
        protocol: Protocol,
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// Index of the first connection (users and rooms are numbered from it).
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Switchboard: join asking for presence (the list, then every change).
        #[arg(long)]
        presence: bool,
        #[arg(long, env = "SB_JWT_SECRET", default_value = "")]
        jwt_secret: String,
    },
    /// Switchboard connections that come into one room and go again, each
    /// a user of its own, at a fixed rate (bench/presence.sh).
    Churn {
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        #[arg(long, default_value = "room-0")]
        room: String,
        /// Connections per second, each one join and one leave.
        #[arg(long)]
        rate: f64,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
        duration: Duration,
        /// How long each connection stays in the room.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        stay: Duration,
        /// Join asking for presence (the list, then every change).
        #[arg(long)]
        presence: bool,
        #[arg(long, env = "SB_JWT_SECRET", default_value = "")]
        jwt_secret: String,
    },
    /// A push service stand-in for the notifier (bench/notifier.sh): answers
    /// every POST 200 and counts; `GET /count` says `<requests> <recipients>`.
    Webhook {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The persister's SQL alone: full batches written straight to a fresh
    /// database (removed afterwards), timed per batch.
    Store {
        #[arg(long, value_enum, default_value = "postgres")]
        database: Database,
        /// A URL of the PostgreSQL server with rights to create databases.
        #[arg(long, env = "SB_BENCH_POSTGRES_URL", default_value = DEFAULT_POSTGRES_URL)]
        postgres_url: String,
        #[arg(long, default_value_t = 60)]
        batches: usize,
        /// Sends per batch: the persister's largest batch, as at saturation.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Rooms the sends are spread over, one sender each.
        #[arg(long, default_value_t = 2000)]
        rooms: usize,
        /// Transactions each batch is split over at once, by room, as the
        /// persister's --persister-lanes (1 on SQLite).
        #[arg(long, default_value_t = switchboard_workers::inbound::DEFAULT_LANES)]
        lanes: usize,
    },
    /// The bare room-broadcast server.
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:17001")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Database {
    Postgres,
    Sqlite,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Up to the hard limit, for the driver and for the servers it starts.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match Cli::parse().command {
        Command::All {
            quick,
            systems,
            scenarios,
            latency_rate,
            soak_rate,
            soak_duration,
            room_sizes,
            edges,
            out,
            bin_dir,
        } => {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let bin_dir = bin_dir.unwrap_or_else(|| std::env::current_exe().unwrap().parent().unwrap().to_path_buf());
            let paths = Paths { work: root.join(".work/bench"), root, bin_dir };
            let mut plan = if quick { Plan::quick() } else { Plan::full() };
            plan.edges = edges.into();
            if !room_sizes.is_empty() {
                plan.room_sizes = room_sizes.into_iter().map(|n| n as usize).collect();
            }
            if let Some(duration) = soak_duration {
                anyhow::ensure!(
                    duration >= plan.soak_settle * 2,
                    "--soak-duration must be at least {:?}: the end is compared with the memory at {:?}",
                    plan.soak_settle * 2,
                    plan.soak_settle
                );
                plan.soak_run = duration;
            }
            let selection = Selection { scenarios, latency_rate, soak_rate };
            let started = std::time::Instant::now();
            let mut results = Vec::new();
            for kind in systems {
                println!("== {}", kind.name());
                results.push(scenarios::run_system(kind, &plan, &selection, &paths).await?);
            }
            let summary = report::summary(&plan, &results, started.elapsed());
            println!("\n{summary}");
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("summary.md"), &summary)?;
            std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&serde_json::json!({"plan": plan, "systems": results}))?,
            )?;
            println!("written: {}/summary.md, {}/results.json", out.display(), out.display());
            match plots::write(&out, &results) {
                Ok(written) => written.iter().for_each(|p| println!("written: {}", p.display())),
                Err(e) => println!("plots not drawn: {e:#}"),
            }
        }
        Command::Drive {
            protocol,
            targets,
            connections,
            room_size,
            rate,
            payload,
            warmup,
            duration,
            jwt_secret,
            pids,
        } => {
            let load = driver::Load { targets, connections, room_size, rate, payload, warmup, duration, sources: 8 };
            let report = driver::run(
                Codec { protocol, secret: jwt_secret, run: String::new(), presence: false },
                load,
                &pids,
                "drive",
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Hold { protocol, targets, first, connections, room_size, presence, jwt_secret } => {
            let load = driver::Load {
                targets,
                connections,
                room_size,
                rate: 0.0,
                payload: 0,
                warmup: Duration::ZERO,
                duration: Duration::ZERO,
                sources: 8,
            };
            let codec = Codec { protocol, secret: jwt_secret, run: String::new(), presence };
            let ready = |ok, failed| println!("connected {ok} {failed}");
            let stdin_closed = async {
                let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
            };
            driver::hold(codec, load, first, ready, stdin_closed).await;
        }
        Command::Churn { targets, room, rate, duration, stay, presence, jwt_secret } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let load = driver::Load {
                targets,
                connections: 0,
                room_size: 1,
                rate: 0.0,
                payload: 0,
                warmup: Duration::ZERO,
                duration: Duration::ZERO,
                sources: 8,
            };
            let codec = Codec { protocol: Protocol::Switchboard, secret: jwt_secret, run: String::new(), presence };
            let report =
                churn::run(codec, load, churn::Churn { rooms: vec![room], rate, duration, stay, half_alone: false })
                    .await?;
            println!("churn: {} came and went, {} failed", report.came_and_went, report.failed);
        }
        Command::Store { database, postgres_url, batches, batch_size, rooms, lanes } => {
            let load = store::StoreLoad { batches, batch_size, rooms, lanes, warmup: 5 };
            let admin_url = matches!(database, Database::Postgres).then_some(postgres_url.as_str());
            println!("{batches} batches of {batch_size} sends over {rooms} rooms in {lanes} lane(s) ({database:?})");
            println!("{}", store::run(admin_url, &load).await?);
        }
        Command::Ceiling { listen } => ceiling::serve(listen).await?,
        Command::Webhook { listen } => webhook::serve(listen).await?,
    }
    Ok(())
}
