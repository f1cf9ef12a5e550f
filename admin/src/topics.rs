//! `sbctl topics`: creates the shared topics, or checks existing ones
//! against the spec (a no-op when they match; differences are reported and
//! exit 1, never changed behind the operator's back, unless
//! `--allow-differences`, which reports them and exits 0: for an upgrade
//! that must not fail on a topic an operator changed on purpose); and
//! `sbctl delete-topics`, which removes a deployment's topics.

use std::time::Duration;

use switchboard_core::config::{KafkaArgs, parse_duration};
use switchboard_core::kafka::ToolConsumer;
use switchboard_core::provision::{Retention, TopicStatus, delete_topics, deployment_topics, provision, shared_specs};

use crate::error::SbctlError;
use crate::positions;

#[derive(Debug, Clone, clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of each shared topic (rooms spread over them).
    #[arg(long, env = "SB_TOPIC_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor of new topics (-1: the broker's default).
    #[arg(long, env = "SB_TOPIC_REPLICATION", default_value_t = -1)]
    pub replication: i32,
    /// Retention of sb.inbound, the replay source of the SQL store:
    /// `unlimited`, or a duration. A store older than this cannot be rebuilt
    /// whole from the topic (see the README's Recovery section).
    #[arg(long, env = "SB_INBOUND_RETENTION", default_value = "unlimited", value_parser = parse_retention)]
    pub inbound_retention: RetentionTime,
    /// Retention of sb.events and sb.dead-letter.
    #[arg(long, env = "SB_LOG_RETENTION", default_value = "7days", value_parser = parse_duration)]
    pub log_retention: Duration,
    /// Retention of sb.ephemeral.
    #[arg(long, env = "SB_EPHEMERAL_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub ephemeral_retention: Duration,
    /// Report existing topics that differ from the spec, and exit 0 anyway.
    #[arg(long)]
    pub allow_differences: bool,
}

/// How long a topic keeps records: `None` for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionTime(pub Option<Duration>);

/// `unlimited` or a duration.
fn parse_retention(s: &str) -> Result<RetentionTime, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(RetentionTime(None));
    }
    parse_duration(s).map(|d| RetentionTime(Some(d))).map_err(|e| format!("{e}; or `unlimited`"))
}

pub async fn run(args: TopicsArgs) -> Result<(), SbctlError> {
    let retention =
        Retention { inbound: args.inbound_retention.0, log: args.log_retention, ephemeral: args.ephemeral_retention };
    let specs = shared_specs(&args.kafka.topics(), args.partitions, retention);
    let mut differ = false;
    let report = provision(&args.kafka.config(), &specs, args.replication)
        .await
        .map_err(|e| SbctlError::Refused(format!("could not provision the topics: {e}")))?;
    for (topic, status) in report {
        match status {
            TopicStatus::Created => println!("{topic}: created"),
            TopicStatus::Matches => println!("{topic}: exists, matches"),
            TopicStatus::Differs(diffs) => {
                differ = true;
                println!("{topic}: EXISTS BUT DIFFERS: {}", diffs.join("; "));
            }
        }
    }
    if differ && args.allow_differences {
        println!("some topics differ from the spec (above); going on, as --allow-differences asks");
    } else if differ {
        return Err(SbctlError::Refused(
            "some topics differ from the spec; change them by hand or adjust the flags".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeleteTopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Delete them. Without it, the topics are listed and nothing changes.
    #[arg(long)]
    pub execute: bool,
    /// Go on although the worker groups list members, when their processes
    /// are known to have stopped: a static member (`--persister-instance-id`,
    /// `--router-instance-id`) stays listed until its session times out, 30 s
    /// after its process stopped.
    #[arg(long)]
    pub ignore_members: bool,
}

/// Deletes every topic of the deployment (`<prefix>.*`: the shared topics and
/// the edges' delivery topics), for tearing a deployment or a test run down.
/// It refuses while a worker group has live members: the workers would
/// create nothing back, but fail on every record.
pub async fn delete(args: DeleteTopicsArgs) -> Result<(), SbctlError> {
    let kafka = args.kafka.config();
    let topics = args.kafka.topics();
    let names = deployment_topics(&kafka, &topics).map_err(|e| SbctlError::Refused(format!("{e}")))?;
    if names.is_empty() {
        println!("no topics named {}.*", topics.prefix());
        return Ok(());
    }
    for name in &names {
        println!("{name}");
    }
    let consumer: ToolConsumer = kafka.tool_consumer("sbctl")?;
    for role in ["persister", "router"] {
        let group = topics.group(role);
        let live = positions::group_members(&consumer, &group)?.map_or(0, |g| g.members);
        if live == 0 {
            continue;
        }
        let problem = format!(
            "the {role} group {group} has {live} live member(s): stop the deployment's workers first (a stopped \
             static member stays listed for 30 s; --ignore-members goes on regardless)"
        );
        if args.ignore_members {
            println!("note: the {role} group {group} lists {live} member(s); going on, as --ignore-members asks");
        } else if args.execute {
            return Err(SbctlError::Refused(problem));
        } else {
            println!("warning: {problem}; --execute will refuse until then");
        }
    }
    if !args.execute {
        println!("plan only: {} topics would be deleted with every record they hold. Add --execute.", names.len());
        return Ok(());
    }
    delete_topics(&kafka, &names).await.map_err(|e| SbctlError::Refused(format!("{e}")))?;
    println!("deleted {} topics", names.len());
    Ok(())
}
