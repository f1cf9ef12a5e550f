//! `sbctl replay deliver`: re-routes `sb.events` from a time to the edges,
//! for a delivery topic that was lost or truncated. It routes as the router
//! does (`switchboard_workers::router`: the same record check, the same
//! room → nodes table loaded from `sb.routes` and `sb.nodes`, the same copy
//! to `sb.deliver.<node>`), to the nodes that have members in each room now.
//! Edges and clients drop what they already have by (room, seq), so
//! re-delivering more than was lost is harmless; it commits no progress, and
//! a rerun simply sends the range again.

use std::collections::{BTreeMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use switchboard_core::clock::now_ms;
use switchboard_core::config::{KafkaArgs, parse_duration};
use switchboard_core::kafka::ToolConsumer;
use switchboard_workers::router;
use switchboard_workers::routing_table::RoutingTable;
use tokio_util::sync::CancellationToken;

use super::{Part, Range, Reader, last_offsets, plan, print_parts, refuse_compacted, refuse_lost};
use crate::error::SbctlError;

#[derive(Debug, Clone, clap::Args)]
pub struct DeliverArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub range: Range,
    /// Only to these nodes (comma separated), e.g. the edge whose delivery
    /// topic was lost [default: every live node with members in the room].
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// A node whose last heartbeat is this much older than the newest one
    /// gets nothing (as the router's `--node-stale-after`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub node_stale_after: Duration,
}

pub async fn deliver(args: DeliverArgs) -> Result<(), SbctlError> {
    let topics = args.kafka.topics();
    let topic = topics.events();
    let kafka = args.kafka.config();
    // Reads only: the group is never joined and nothing is committed to it.
    let group = topics.group("replay-deliver");
    let rooms: HashSet<String> = args.range.rooms();

    refuse_compacted(&kafka, &topic).await?;
    let consumer: ToolConsumer = kafka.tool_consumer(&group)?;
    let parts = plan(&consumer, &topic, &args.range.from)?;

    // The table as the router has it now.
    let table = RwLock::new(RoutingTable::new(args.node_stale_after.as_millis() as i64));
    let state = kafka.assigned_consumer()?;
    router::load_table(&state, &topics, &table, &CancellationToken::new())
        .await
        .map_err(|e| SbctlError::Usage(format!("could not read {} and {}: {e}", topics.routes(), topics.nodes())))?;
    drop(state);
    let table = table.into_inner().expect("routing table lock poisoned");
    let live = table.live_nodes(now_ms());
    let mut live_list: Vec<&String> = live.iter().collect();
    live_list.sort();

    println!("replay deliver from {topic} {}", args.range.describe());
    println!(
        "live nodes: {}",
        if live_list.is_empty() {
            "none".to_owned()
        } else {
            live_list.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        }
    );
    let nodes: HashSet<String> = args.nodes.iter().cloned().collect();
    if nodes.is_empty() {
        println!("to: every live node with members in the event's room");
    } else {
        let mut named: Vec<&String> = nodes.iter().collect();
        named.sort();
        println!(
            "to: {} (those with members in the event's room)",
            named.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    print_parts(&parts);
    let not_live: Vec<&String> = nodes.iter().filter(|n| !live.contains(*n)).collect();
    if !not_live.is_empty() {
        return Err(SbctlError::Refused(format!(
            "no live node is called {}: a node gets deliveries only while its heartbeats in {} are fresh (is the \
             edge running, and is --node-stale-after right?)",
            not_live.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
            topics.nodes()
        )));
    }
    refuse_lost(&parts, args.range.allow_partial, "their events cannot be re-delivered")?;
    if !args.range.execute {
        println!("plan only: nothing changed. Add --execute to run it.");
        return Ok(());
    }
    let work: Vec<Part> = parts.into_iter().filter(|p| p.records() > 0).collect();
    if work.is_empty() {
        println!("nothing to replay.");
        return Ok(());
    }

    let producer = kafka.batch_producer()?;
    let Reader { consumer, mut tracker } =
        Reader::new(&kafka, &group, &topic, &work, args.range.max_rate, super::BATCH_MAX)?;
    let mut summary = Summary::default();
    let started = Instant::now();
    while !tracker.done() {
        let records = tracker.next_batch(&consumer).await?;
        let now = now_ms();
        let mut pending = Vec::new();
        for record in &records {
            summary.read += 1;
            let room = match router::check(record) {
                Ok(room) => room,
                Err(_) => {
                    summary.invalid += 1;
                    continue;
                }
            };
            if !rooms.is_empty() && !rooms.contains(room) {
                summary.other_rooms += 1;
                continue;
            }
            let targets: Vec<String> =
                table.targets(room, now).into_iter().filter(|n| nodes.is_empty() || nodes.contains(n)).collect();
            if targets.is_empty() {
                summary.no_target += 1;
            }
            for node in targets {
                *summary.per_node.entry(node.clone()).or_default() += 1;
                pending.push(router::forward(&producer, topics.deliver(&node), record, None));
            }
        }
        for result in join_all(pending).await {
            if let Err((topic, e)) = result {
                return Err(SbctlError::Refused(format!(
                    "could not write to {topic} ({e}); nothing is lost, run the same command again"
                )));
            }
        }
        let last = last_offsets(&records);
        drop(records);
        tracker.handled(&last);
    }
    summary.elapsed = started.elapsed();
    summary.print();
    Ok(())
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    read: u64,
    invalid: u64,
    other_rooms: u64,
    no_target: u64,
    per_node: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Summary {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let per_node: Vec<String> = self.per_node.iter().map(|(node, n)| format!("{n} to {node}")).collect();
        let sent: u64 = self.per_node.values().sum();
        println!(
            "read {} events in {:.1} s ({:.0} events/s) and sent {sent} records: {}; {} to no node (no live \
             member), {} of other rooms, {} invalid (the router dead-letters them)",
            self.read,
            secs,
            self.read as f64 / secs,
            if per_node.is_empty() { "none sent".to_owned() } else { per_node.join(", ") },
            self.no_target,
            self.other_rooms,
            self.invalid
        );
    }
}
