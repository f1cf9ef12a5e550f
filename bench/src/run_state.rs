//! What a run of Switchboard on Kafka + PostgreSQL leaves behind: topics
//! under its own prefix and a database of its own. Removed when the run's
//! system stops, so runs do not pile up on the shared broker (after a few
//! dozen runs it held ~2,800 partitions and 4 GB, and a restart took long
//! enough that clients started against it saw "unknown topic").

use std::process::Command;

use anyhow::{Context, bail};
use switchboard_core::kafka::KafkaConfig;
use switchboard_core::provision::{self, deployment_topics};
use switchboard_core::topics::Topics;

/// The PostgreSQL server of `scripts/postgres.sh`, as a user that may
/// create databases (overridden by `SB_BENCH_POSTGRES_URL`).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://sb:sb@127.0.0.1:15432/sb";

pub struct RunState {
    pub kafka: String,
    pub prefix: String,
    /// A URL of the server with rights to drop the run's database.
    pub admin_url: String,
}

impl RunState {
    /// Deletes the run's topics and drops its database; the processes that
    /// used them must have stopped. Runs on a thread of its own, so it can
    /// be called from `Drop` inside the async driver.
    pub fn remove(&self) -> anyhow::Result<()> {
        let (kafka, prefix) = (self.kafka.clone(), self.prefix.clone());
        let topics = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(delete_topics(&kafka, &prefix))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("topic deletion panicked"))?;
        let database = drop_database(&self.admin_url, &self.prefix);
        topics.and(database)
    }
}

/// The run's topics, by the same code as `sbctl delete-topics`.
async fn delete_topics(kafka: &str, prefix: &str) -> anyhow::Result<()> {
    let kafka = KafkaConfig::new(kafka);
    let names = deployment_topics(&kafka, &Topics::new(prefix)?)?;
    provision::delete_topics(&kafka, &names).await?;
    Ok(())
}

/// Creates database `name` on the server `admin_url` names and returns its URL.
pub fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let server = admin_url.rsplit_once('/').context("database URL ends in /<database>")?.0;
    psql(admin_url, &format!("CREATE DATABASE {name}"))?;
    Ok(format!("{server}/{name}"))
}

/// Drops database `name`. A plain DROP waits up to 5 s for the run's own
/// connections to go and stops an autovacuum worker busy there; FORCE, which
/// ends connections still open, fails instead on that worker (the bench's
/// role may not signal the superuser's processes), so it comes second.
pub fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    psql(admin_url, &format!("DROP DATABASE IF EXISTS {name}"))
        .or_else(|_| psql(admin_url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
}

fn psql(admin_url: &str, statement: &str) -> anyhow::Result<()> {
    let output = Command::new("psql").arg(admin_url).args(["-qc", statement]).output().context("run psql")?;
    if !output.status.success() {
        bail!("{statement}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
