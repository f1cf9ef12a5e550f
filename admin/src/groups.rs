//! `sbctl groups`: the deployment's consumer groups with their lag, and
//! moving a group's committed offsets (to a time, the start, the end, or
//! by N). A reset is a dry run unless `--execute`, refuses a group with live
//! members, and never clamps an offset outside the log unless told to.

use rdkafka::consumer::Consumer;
use switchboard_core::config::KafkaArgs;
use switchboard_core::kafka::ToolConsumer;
use switchboard_core::topics::Topics;

use crate::error::SbctlError;
use crate::positions::{self, Log, format_time, parse_time};

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Clone, clap::Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct Target {
    /// The first record at or after this time (RFC 3339, e.g. 2026-12-03T05:00:00Z).
    #[arg(long)]
    pub to_datetime: Option<String>,
    /// The first record each partition still holds.
    #[arg(long)]
    pub to_earliest: bool,
    /// The end of each partition: skip everything there is.
    #[arg(long)]
    pub to_latest: bool,
    /// Move the committed offset by N records (negative: back).
    #[arg(long, allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The group to move (see `sbctl groups list`).
    pub group: String,
    #[command(flatten)]
    pub target: Target,
    /// Only this topic [default: every project topic the group has offsets in].
    #[arg(long)]
    pub topic: Option<String>,
    /// Apply the change. Without it, the plan is printed and nothing changes.
    #[arg(long, conflicts_with = "dry_run")]
    pub execute: bool,
    /// Print the plan only (the default; for scripts that say so).
    #[arg(long)]
    pub dry_run: bool,
    /// Clamp a `--shift-by` that lands outside a partition's log to its start or end, instead of refusing.
    #[arg(long)]
    pub allow_partial: bool,
}

/// Topics a project group may consume.
fn project_topics(topics: &Topics) -> Vec<String> {
    vec![topics.inbound(), topics.events(), topics.ephemeral(), topics.dead_letter()]
}

/// One partition's committed offset in a group, with its log.
struct Position {
    topic: String,
    partition: i32,
    committed: i64,
    log: Log,
}

/// Committed offsets of `group` on `topics` (partitions without one are left out).
fn positions_of(kafka: &KafkaArgs, group: &str, topics: &[String]) -> Result<Vec<Position>, SbctlError> {
    let consumer: ToolConsumer = kafka.config().tool_consumer(group)?;
    let mut out = Vec::new();
    for topic in topics {
        // A project topic this deployment does not have (yet) holds no offsets.
        let Ok(partitions) = positions::topic_partitions(&consumer, topic) else { continue };
        for (partition, committed) in positions::committed(&consumer, topic, &partitions)? {
            if let Some((committed, _)) = committed {
                let log = positions::log(&consumer, topic, partition)?;
                out.push(Position { topic: topic.clone(), partition, committed, log });
            }
        }
    }
    Ok(out)
}

pub fn list(args: ListArgs) -> Result<(), SbctlError> {
    let topics = args.kafka.topics();
    let prefix = format!("{}-", args.kafka.topic_prefix);
    let consumer: ToolConsumer = args.kafka.config().tool_consumer("sbctl")?;
    let groups = consumer.fetch_group_list(None, positions::TIMEOUT)?;
    let mut names: Vec<(String, String, usize)> = groups
        .groups()
        .iter()
        .filter(|g| g.name().starts_with(&prefix))
        .map(|g| (g.name().to_owned(), g.state().to_owned(), g.members().len()))
        .collect();
    names.sort();
    if names.is_empty() {
        println!("no consumer groups named {prefix}*");
        return Ok(());
    }
    for (name, state, members) in names {
        println!("{name}: {state}, {members} member(s)");
        let positions = positions_of(&args.kafka, &name, &project_topics(&topics))?;
        if positions.is_empty() {
            println!("  no committed offsets on the project's topics");
        }
        for p in positions {
            println!(
                "  {} [{}] committed {} of {}..{}, lag {}",
                p.topic,
                p.partition,
                p.committed,
                p.log.start,
                p.log.end,
                (p.log.end - p.committed).max(0)
            );
        }
    }
    Ok(())
}

pub fn reset(args: ResetArgs) -> Result<(), SbctlError> {
    let topics = args.kafka.topics();
    let consumer: ToolConsumer = args.kafka.config().tool_consumer(&args.group)?;
    let Some(group) = positions::group_members(&consumer, &args.group)? else {
        return Err(SbctlError::Usage(format!(
            "unknown group {:?}; `sbctl groups list` shows the project's groups",
            args.group
        )));
    };
    if group.members > 0 {
        return Err(SbctlError::Refused(format!(
            "group {} has {} live member(s) (state {}): stop them first; a live member would overwrite the new \
             offsets with its own",
            args.group, group.members, group.state
        )));
    }
    let wanted = match &args.topic {
        Some(topic) => vec![topic.clone()],
        None => project_topics(&topics),
    };
    let current = positions_of(&args.kafka, &args.group, &wanted)?;
    if current.is_empty() {
        return Err(SbctlError::Usage(format!(
            "group {} has no committed offsets on {}; name the topic with --topic",
            args.group,
            wanted.join(", ")
        )));
    }
    let at = args.target.to_datetime.as_deref().map(parse_time).transpose()?;
    let mut plan = Vec::new();
    let mut refusals = Vec::new();
    for p in &current {
        let (target, note) = match (&args.target, at) {
            (_, Some(ms)) => {
                match positions::offsets_at(&consumer, &p.topic, &[p.partition], ms)?.first().and_then(|(_, o)| *o) {
                    Some(offset) => (offset, String::new()),
                    None => (p.log.end, format!("no record after {}: the end", format_time(ms))),
                }
            }
            (Target { to_earliest: true, .. }, _) => (p.log.start, String::new()),
            (Target { to_latest: true, .. }, _) => (p.log.end, String::new()),
            (Target { shift_by: Some(n), .. }, _) => {
                let wanted = p.committed + n;
                if (p.log.start..=p.log.end).contains(&wanted) {
                    (wanted, String::new())
                } else if args.allow_partial {
                    let clamped = wanted.clamp(p.log.start, p.log.end);
                    (clamped, format!("{wanted} is outside the log {}..{}: clamped", p.log.start, p.log.end))
                } else {
                    refusals.push(format!(
                        "{} [{}]: {} {n:+} = {wanted} is outside the log {}..{}",
                        p.topic, p.partition, p.committed, p.log.start, p.log.end
                    ));
                    (p.committed, "REFUSED".to_owned())
                }
            }
            _ => unreachable!("clap requires one target"),
        };
        plan.push((p, target, note));
    }
    println!("group {}: {}", args.group, if args.execute { "executing" } else { "dry run" });
    for (p, target, note) in &plan {
        println!(
            "  {} [{}] {} -> {target} (log {}..{}) {note}",
            p.topic, p.partition, p.committed, p.log.start, p.log.end
        );
    }
    if !refusals.is_empty() {
        return Err(SbctlError::Refused(format!(
            "{}; nothing changed. Pass --allow-partial to clamp to the log",
            refusals.join("; ")
        )));
    }
    if !args.execute {
        println!("dry run: nothing changed. Add --execute to apply.");
        return Ok(());
    }
    let mut by_topic: std::collections::BTreeMap<&str, Vec<(i32, i64, String)>> = Default::default();
    for (p, target, _) in &plan {
        by_topic.entry(p.topic.as_str()).or_default().push((p.partition, *target, "sbctl groups reset".to_owned()));
    }
    for (topic, offsets) in by_topic {
        positions::commit(&consumer, topic, &offsets)?;
    }
    println!("offsets moved.");
    Ok(())
}
