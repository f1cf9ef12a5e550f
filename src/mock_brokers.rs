//! The embedded default's Kafka: librdkafka's mock cluster, which answers
//! slowly while the process writes nothing.
//!
//! A real broker holds a consumer's fetch until records arrive, so an idle
//! consumer asks twice a second. The mock cluster holds an empty fetch for
//! the whole wait and answers it empty, whatever arrives meanwhile, so the
//! embedded consumers wait only 2 ms ([`crate::embedded::MOCK_FETCH_WAIT`]):
//! five of them (two edges, the persister, the router's two) made about
//! 2,500 fetches a second, and an idle process cost 0.13 cores.
//!
//! Once no producer of the process has enqueued a record for
//! [`QUIET_AFTER`] (checked every half second), the mock broker answers
//! every request [`QUIET_RTT`] late (`rd_kafka_mock_broker_set_rtt`): a
//! fetch then takes 52 ms, not 2. The next record enqueued sets the delay
//! back to zero, as a rule before the record's request leaves (an edge's
//! producer lingers 5 ms first), and the mock sends every answer it was
//! holding at once. Records nobody waits for (an edge's heartbeat) are
//! written without ending the quiet (`KafkaProducer::unwatched`). A record written from outside the process
//! (a test's own producer) does not end it either: it is read, within about
//! two delays.
//!
//! The first message after a quiet spell still pays up to one delay: the
//! mock arms a timer on each connection to send a held answer, and does not
//! move an armed timer when the delay changes, so a consumer's first empty
//! fetch after the wake waits for the timer left from the quiet spell. That
//! is why the delay is short. At one message every 4 s, in rooms of 10
//! (`sbbench drive --rate 0.25 --connections 20`), p50/p99 went from
//! 19.1/36.1 and 18.9/33.1 ms to 22.7/64.3 and 21.0/48.5 ms; with a 200 ms
//! delay p50 was 99-100 ms.
//!
//! The cluster lives on a thread of its own, which the producers tell of
//! their writes: rdkafka's `MockCluster` is not `Send` (it holds a raw
//! pointer), so it can be neither shared with them nor moved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use switchboard_core::producer::WriteWatch;

/// How long the mock broker delays every answer while the process is quiet.
/// An idle process then makes about 100 fetches a second instead of 2,500
/// (`sbbench all --systems switchboard --scenarios idle`, alternated twice:
/// 0.134 and 0.105 -> 0.019 and 0.017 cores; with 200 ms, 0.008 and 0.011,
/// but see the module's doc for what a longer delay costs).
pub const QUIET_RTT: Duration = Duration::from_millis(50);

/// How long nothing must be enqueued before a quiet spell begins. A quiet
/// spell costs the next write at most one [`QUIET_RTT`] (see the module's
/// doc); what it slows more is Kafka traffic with no write before it: a
/// consumer group's join (a few seconds at the start: at half a second the
/// persister of an embedded deployment given no writes had its partitions
/// over 5 s after the start) and records written from outside.
pub const QUIET_AFTER: Duration = Duration::from_secs(2);

/// How often the thread looks whether anything was enqueued since it last
/// looked.
const QUIET_CHECK: Duration = Duration::from_millis(500);

/// The one mock broker's id.
const BROKER: i32 = 1;

/// The running mock cluster. [`MockBrokers::stop`] ends it; dropped without
/// a stop (a failed test unwinding), it is left running (its thread keeps a
/// sender of its own), since a Kafka client whose brokers are gone may never
/// finish closing.
pub struct MockBrokers {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    watch: Arc<Writes>,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::SyncSender<KafkaResult<()>>,
    },
    /// A write ended a quiet spell.
    Wake,
    /// No more quiet spells: the deployment is stopping, and its clients'
    /// last requests (commits, leaving their groups) should not wait.
    StayAwake,
    Stop,
}

/// Counts the process's enqueued records; ends a quiet spell at once.
#[derive(Debug)]
struct Writes {
    enqueued: AtomicU64,
    quiet: AtomicBool,
    wake: mpsc::Sender<Command>,
}

impl WriteWatch for Writes {
    fn enqueued(&self) {
        // Counted before quiet is read, and the thread sets quiet before it
        // reads the count again: either it sees this write, or this write
        // sees the quiet and wakes the broker (see `Brokers::check`).
        self.enqueued.fetch_add(1, Ordering::SeqCst);
        if self.quiet.load(Ordering::SeqCst) && self.quiet.swap(false, Ordering::SeqCst) {
            let _ = self.wake.send(Command::Wake);
        }
    }
}

impl MockBrokers {
    /// Starts a one-broker mock cluster holding `topics` (name, partitions),
    /// whose answers are `quiet_rtt` late while the process is quiet.
    pub fn start(topics: Vec<(String, i32)>, quiet_rtt: Duration) -> anyhow::Result<Self> {
        let (commands, received) = mpsc::channel();
        let watch =
            Arc::new(Writes { enqueued: AtomicU64::new(0), quiet: AtomicBool::new(false), wake: commands.clone() });
        let (started, bootstrap) = mpsc::sync_channel(1);
        let brokers_watch = watch.clone();
        let thread = std::thread::Builder::new().name("mock kafka".into()).spawn(move || {
            let cluster = match MockCluster::new(1).and_then(|cluster| {
                for (name, partitions) in &topics {
                    cluster.create_topic(name, *partitions, 1)?;
                }
                Ok(cluster)
            }) {
                Ok(cluster) => cluster,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            let _ = started.send(Ok(cluster.bootstrap_servers()));
            Brokers { cluster, watch: brokers_watch, quiet_rtt, seen: 0, still: 0 }.serve(received);
        })?;
        let bootstrap = bootstrap
            .recv()
            .map_err(|_| anyhow::anyhow!("the mock Kafka thread ended before it started"))?
            .map_err(|e| anyhow::anyhow!("cannot start the mock Kafka cluster: {e}"))?;
        Ok(Self { bootstrap, commands, watch, thread: Some(thread) })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// What the process's producers tell of their writes (its `KafkaConfig`'s
    /// `write_watch`).
    pub fn write_watch(&self) -> Arc<dyn WriteWatch> {
        self.watch.clone()
    }

    /// Whether a quiet spell is on (the broker answers late, or is about to),
    /// for tests.
    pub fn is_quiet(&self) -> bool {
        self.watch.quiet.load(Ordering::SeqCst)
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> KafkaResult<()> {
        let gone = || KafkaError::ClientCreation("the mock Kafka cluster has stopped".into());
        let (reply, replied) = mpsc::sync_channel(1);
        self.commands.send(Command::CreateTopic { name: name.into(), partitions, reply }).map_err(|_| gone())?;
        replied.recv().map_err(|_| gone())?
    }

    /// Answers at once from now on: call first when stopping.
    pub fn stay_awake(&self) {
        let _ = self.commands.send(Command::StayAwake);
    }

    /// Ends the cluster; call once every client of it is gone.
    pub fn stop(mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's side.
struct Brokers {
    cluster: MockCluster<'static, DefaultProducerContext>,
    watch: Arc<Writes>,
    quiet_rtt: Duration,
    /// The count of enqueued records when it last changed.
    seen: u64,
    /// Checks in a row that found no new record.
    still: u32,
}

impl Brokers {
    fn serve(mut self, commands: mpsc::Receiver<Command>) {
        let mut awake = false;
        loop {
            match commands.recv_timeout(QUIET_CHECK) {
                Ok(Command::CreateTopic { name, partitions, reply }) => {
                    let _ = reply.send(self.cluster.create_topic(&name, partitions, 1));
                }
                Ok(Command::Wake) => {
                    tracing::debug!("a write ends the quiet");
                    self.answer_after(Duration::ZERO)
                }
                Ok(Command::StayAwake) => {
                    awake = true;
                    self.watch.quiet.store(false, Ordering::SeqCst);
                    self.answer_after(Duration::ZERO);
                }
                Ok(Command::Stop) => return,
                Err(RecvTimeoutError::Timeout) if !awake => self.check(),
                Err(RecvTimeoutError::Timeout) => {}
                // Not while `watch` holds a sender; never drop the cluster
                // without a stop (see `MockBrokers`).
                Err(RecvTimeoutError::Disconnected) => {
                    std::mem::forget(self.cluster);
                    return;
                }
            }
        }
    }

    /// Begins a quiet spell once nothing was enqueued for [`QUIET_AFTER`].
    fn check(&mut self) {
        let count = self.watch.enqueued.load(Ordering::SeqCst);
        if count != self.seen {
            (self.seen, self.still) = (count, 0);
            return;
        }
        self.still = self.still.saturating_add(1);
        if self.still * QUIET_CHECK < QUIET_AFTER || self.watch.quiet.load(Ordering::SeqCst) {
            return;
        }
        self.watch.quiet.store(true, Ordering::SeqCst);
        if self.watch.enqueued.load(Ordering::SeqCst) == count {
            tracing::debug!(rtt = ?self.quiet_rtt, "quiet: the mock broker answers late");
            self.answer_after(self.quiet_rtt);
        } else {
            // A write came in between: if it saw the quiet, it sent a wake,
            // which finds the delay still zero. The next check counts it.
            self.watch.quiet.store(false, Ordering::SeqCst);
        }
    }

    fn answer_after(&self, rtt: Duration) {
        if let Err(e) = self.cluster.broker_round_trip_time(BROKER, rtt) {
            tracing::warn!(error = %e, ?rtt, "cannot set the mock broker's delay");
        }
    }
}
