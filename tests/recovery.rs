//! Recovery by replay, against real Kafka and PostgreSQL and the release
//! binaries: the SQL store is a projection of `sb.inbound`, so `sbctl
//! replay store` rebuilds it row for row after the database is lost, whole
//! or in part, even when the replay itself is killed midway; `sbctl replay
//! deliver` brings a connected client what its edge's lost delivery topic
//! held; and `sbctl groups reset` moves a stopped group's offsets only when
//! told to.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sqlx::Connection;
use support::cluster::{Cluster, Options, output_text, succeeded};
use support::{Client, admin, eventually, metric, seqs};
use switchboard_core::kafka::{KafkaConfig, ToolConsumer};
use switchboard_core::provision::deployment_topics;
use switchboard_core::store::Store;
use switchboard_core::topics::Topics;

const ROOMS: [&str; 4] = ["plaza", "market", "harbour", "tower"];

async fn dump(cluster: &Cluster) -> Vec<String> {
    let store = Store::connect(&cluster.database_url, 1).await.unwrap();
    let rows = store.dump().await.unwrap();
    store.close().await;
    rows
}

/// Several rooms, a private room whose members change, a history reset,
/// sends retried with the same client_id; then one last message per room,
/// seen by its sender, so everything before it is stored.
async fn workload(cluster: &Cluster) -> usize {
    let edge = cluster.edges[0];
    let create = json!({"room": "vault", "kind": "private", "members": ["alice", "bob"]});
    assert_eq!(admin(edge, "POST", "/v1/rooms", Some(create)).await.0, 202);
    let mut clients = Vec::new();
    for (i, room) in ROOMS.iter().enumerate() {
        clients.push(Client::in_room(cluster.edges[i % 2], &format!("user{i}"), room).await);
    }
    let mut sent = 0;
    for round in 0..150 {
        for (i, room) in ROOMS.iter().enumerate() {
            clients[i].say(room, &format!("c{round}"), &format!("{room} message {round}")).await;
            sent += 1;
        }
        if round % 25 == 0 {
            // A retry with the same client_id: one row.
            clients[0].say("plaza", &format!("c{round}"), "plaza again").await;
        }
        if round == 75 {
            assert_eq!(admin(edge, "POST", "/v1/rooms/market/reset", None).await.0, 202);
        }
    }
    let mut alice = Client::in_room(edge, "alice", "vault").await;
    for i in 0..20 {
        alice.say("vault", &format!("v{i}"), "secret").await;
    }
    assert_eq!(admin(edge, "DELETE", "/v1/rooms/vault/members/bob", None).await.0, 202);
    assert_eq!(admin(edge, "PUT", "/v1/rooms/vault/members/carol", None).await.0, 202);
    alice.say("vault", "v-last", "after the changes").await;
    for (i, room) in ROOMS.iter().enumerate() {
        clients[i].say(room, "last", "the end").await;
        let body = loop {
            let m = clients[i].messages(room, 1).await;
            if m[0]["client_id"] == "last" {
                break m[0]["body"].clone();
            }
        };
        assert_eq!(body, "the end");
    }
    loop {
        let m = alice.messages("vault", 1).await;
        if m[0]["client_id"] == "v-last" {
            break;
        }
    }
    sent + 21
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real Kafka and PostgreSQL; run scripts/e2e.sh"]
async fn the_store_is_rebuilt_row_for_row_after_total_and_partial_loss() {
    let mut cluster = Cluster::start("replay", Options::default()).await;
    let sent = workload(&cluster).await;
    let before = dump(&cluster).await;
    assert!(before.iter().filter(|r| r.starts_with("messages\t")).count() > 500, "{sent} sent");
    assert!(before.iter().any(|r| r.starts_with("room_members\t\"vault\"\t\"carol\"")));
    assert!(!before.iter().any(|r| r.starts_with("room_members\t\"vault\"\t\"bob\"")));
    assert!(before.iter().any(|r| r.starts_with("rooms\t\"market\"\t\"public\"\t2\t")), "market was reset");

    // Total loss: the persister stops, the database is dropped.
    cluster.persister.kill();
    cluster.drop_database().await;
    wait_until_no_members(&cluster, &format!("{}-persister", cluster.prefix)).await;

    // While a persister group member is alive the replay refuses; the
    // router's group is not the persister's, so take the group name from a
    // live group to see the refusal.
    let refused = cluster.sbctl(&[
        "replay",
        "store",
        "--from-beginning",
        "--execute",
        "--persister-group",
        &format!("{}-router", cluster.prefix),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(output_text(&refused).contains("live member"), "{}", output_text(&refused));

    // The plan changes nothing.
    let plan = succeeded(cluster.sbctl(&["replay", "store", "--from-beginning"]));
    assert!(plan.contains("plan only: nothing changed"), "{plan}");
    assert!(plan.contains("partition"), "{plan}");
    let store = Store::connect(&cluster.database_url, 1).await.unwrap();
    assert!(store.dump().await.is_err(), "the plan must not even create the tables");
    store.close().await;

    // A throttled run, SIGKILLed midway, then the same command again.
    let mut slow = Command::new(cluster.env.bin_dir.join("sbctl"))
        .args(["replay", "store", "--from-beginning", "--execute", "--max-rate", "100"])
        .env("SB_KAFKA_BROKERS", &cluster.env.kafka)
        .env("SB_TOPIC_PREFIX", &cluster.prefix)
        .env("SB_DATABASE_URL", &cluster.database_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    slow.kill().unwrap();
    slow.wait().unwrap();
    let partial = dump(&cluster).await;
    assert!(
        partial.len() < before.len() && !partial.is_empty(),
        "killed midway: {} of {} rows",
        partial.len(),
        before.len()
    );
    // In batches of 50, so the lanes hold several batches of the same rooms
    // at once and must still apply each room's records in order.
    let resumed = succeeded(cluster.sbctl(&["replay", "store", "--from-beginning", "--execute", "--batch-size", "50"]));
    assert!(resumed.contains("resume"), "the second run resumes where the first stopped:\n{resumed}");
    assert_eq!(dump(&cluster).await, before, "rebuilt row for row");

    // Again, over a complete database: nothing changes.
    let again = succeeded(cluster.sbctl(&["replay", "store", "--from-beginning", "--execute"]));
    assert!(again.contains(" 0 messages stored"), "{again}");
    assert_eq!(dump(&cluster).await, before);

    // Partial loss, as if restored from an older backup: the newest rows
    // of two rooms are gone.
    let mut db = cluster.db().await;
    for room in ["plaza", "harbour"] {
        sqlx::query("DELETE FROM messages WHERE room = $1 AND seq > 100").bind(room).execute(&mut db).await.unwrap();
        sqlx::query("UPDATE rooms SET last_seq = 100 WHERE id = $1").bind(room).execute(&mut db).await.unwrap();
    }
    assert_ne!(dump(&cluster).await, before);
    // Only those two rooms, publishing their events again for consumers of
    // sb.events that lost them too.
    let events_before = events_end(&cluster);
    let partial = succeeded(cluster.sbctl(&[
        "replay",
        "store",
        "--by-duration",
        "1h",
        "--rooms",
        "plaza,harbour",
        "--publish-events",
        "--execute",
    ]));
    assert!(!partial.contains(" 0 messages stored") && !partial.contains(" 0 of other rooms"), "{partial}");
    assert_eq!(dump(&cluster).await, before, "the lost rows came back, nothing doubled");
    // From the summary line (stderr, after it, may hold librdkafka's notices).
    let published: i64 = partial
        .lines()
        .filter(|line| line.starts_with("replayed "))
        .flat_map(|line| line.split(", "))
        .find_map(|part| part.trim().strip_suffix(" events published")?.parse().ok())
        .unwrap_or_else(|| panic!("no published count in {partial}"));
    // Each room's 150 messages, the retries found stored, and the last one.
    assert!(published >= 2 * 151, "{partial}");
    assert_eq!(events_end(&cluster) - events_before, published, "sb.events holds what was published");

    // The pipeline resumes on the rebuilt database: seqs continue.
    cluster.persister.restart();
    for (i, room) in ROOMS.iter().enumerate() {
        let last: i64 =
            sqlx::query_scalar("SELECT last_seq FROM rooms WHERE id = $1").bind(room).fetch_one(&mut db).await.unwrap();
        let mut client = Client::in_room(cluster.edges[i % 2], "late", room).await;
        client.say(room, "after-rebuild", "new").await;
        let got = client.messages(room, 1).await;
        assert_eq!(seqs(&got), vec![last as u64 + 1], "{room} continues without a gap");
    }
    cluster.assert_all_running();
}

/// How many records sb.events has received (the sum of its partitions' ends).
fn events_end(cluster: &Cluster) -> i64 {
    topic_ends(cluster, &format!("{}.events", cluster.prefix), 4).iter().sum()
}

/// The end (high watermark) of each partition of `topic`.
fn topic_ends(cluster: &Cluster, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: ToolConsumer = KafkaConfig::new(cluster.env.kafka.clone()).tool_consumer("sbctl-test").unwrap();
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).collect()
}

/// Waits until the broker has let a killed (static) member go: its
/// session times out after 30 s.
async fn wait_until_no_members(cluster: &Cluster, group: &str) {
    eventually(Duration::from_secs(60), Duration::from_secs(1), async || {
        let list = succeeded(cluster.sbctl(&["groups", "list"]));
        if list.lines().any(|l| l.starts_with(&format!("{group}: ")) && l.ends_with(" 0 member(s)")) {
            Ok(())
        } else {
            Err(format!("{group} keeps a member:\n{list}"))
        }
    })
    .await
}

/// The group's committed offset per partition of `topic`.
fn committed(cluster: &Cluster, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: ToolConsumer = KafkaConfig::new(cluster.env.kafka.clone()).tool_consumer(group).unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let found = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    found.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { -1 }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real Kafka and PostgreSQL; run scripts/e2e.sh"]
async fn a_group_reset_is_a_dry_run_unless_executed_and_refuses_a_live_group() {
    let mut cluster = Cluster::start("groups", Options::default()).await;
    let mut alice = Client::in_room(cluster.edges[0], "alice", "plaza").await;
    for i in 0..20 {
        alice.say("plaza", &format!("early{i}"), "early").await;
    }
    alice.messages("plaza", 20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let middle = switchboard_core::clock::now_ms();
    let middle_text =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(middle as u64)).to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        alice.say("plaza", &format!("late{i}"), "late").await;
    }
    alice.messages("plaza", 20).await;
    let group = format!("{}-persister", cluster.prefix);
    let inbound = format!("{}.inbound", cluster.prefix);

    let list = succeeded(cluster.sbctl(&["groups", "list"]));
    assert!(list.contains(&group) && list.contains(&inbound), "{list}");

    let live = cluster.sbctl(&["groups", "reset", &group, "--to-earliest", "--execute"]);
    assert_eq!(live.status.code(), Some(1), "{}", output_text(&live));
    assert!(output_text(&live).contains("live member"), "{}", output_text(&live));

    // The persister commits its positions once a second: killed before its
    // next commit, it would leave the late records uncommitted, and a reset
    // to the middle would have nothing to move back.
    let ends = topic_ends(&cluster, &inbound, 4);
    eventually(Duration::from_secs(30), Duration::from_millis(200), async || {
        let now = committed(&cluster, &group, &inbound, 4);
        // An empty partition has nothing to commit (-1).
        let all = now.iter().zip(&ends).all(|(at, end)| at == end || (*end == 0 && *at < 0));
        if all { Ok(()) } else { Err(format!("committed {now:?}, the partitions end at {ends:?}")) }
    })
    .await;
    cluster.persister.kill();
    wait_until_no_members(&cluster, &group).await;
    let before = committed(&cluster, &group, &inbound, 4);
    let dry = succeeded(cluster.sbctl(&["groups", "reset", &group, "--to-earliest", "--dry-run"]));
    assert!(dry.contains("dry run: nothing changed"), "{dry}");
    assert_eq!(committed(&cluster, &group, &inbound, 4), before, "a dry run moves nothing");

    for (args, code) in [
        (vec!["groups", "reset", "no-such-group", "--to-earliest"], 64),
        (vec!["groups", "reset", &group, "--to-datetime", "2999-01-01T00:00:00Z"], 64),
        (vec!["groups", "reset", &group, "--shift-by", "1000000", "--execute"], 1),
    ] {
        let refused = cluster.sbctl(&args);
        assert_eq!(refused.status.code(), Some(code), "{args:?}: {}", output_text(&refused));
    }
    assert_eq!(committed(&cluster, &group, &inbound, 4), before, "refusals move nothing");

    succeeded(cluster.sbctl(&["groups", "reset", &group, "--to-datetime", &middle_text, "--execute"]));
    let consumer: ToolConsumer = KafkaConfig::new(cluster.env.kafka.clone()).tool_consumer("sbctl-test").unwrap();
    let mut times = TopicPartitionList::new();
    for p in 0..4 {
        times.add_partition_offset(&inbound, p, Offset::Offset(middle)).unwrap();
    }
    let at = consumer.offsets_for_times(times, Duration::from_secs(10)).unwrap();
    let after = committed(&cluster, &group, &inbound, 4);
    for element in at.elements() {
        let expected = match element.offset() {
            Offset::Offset(o) => o,
            _ => before[element.partition() as usize], // no record after the time: the end, as committed
        };
        assert_eq!(after[element.partition() as usize], expected, "partition {}", element.partition());
    }
    assert_ne!(after, before, "the late records are to be read again");

    // The persister reads the late sends again: duplicates, nothing new.
    let stored = cluster.stored().await;
    cluster.persister.restart();
    alice.say("plaza", "after-reset", "x").await;
    let got = alice.messages("plaza", 1).await;
    assert_eq!(got[0]["client_id"], "after-reset");
    assert_eq!(cluster.stored().await, stored + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real Kafka and PostgreSQL; run scripts/e2e.sh"]
async fn a_lost_delivery_topic_is_redelivered_in_order_without_duplicates() {
    let cluster = Cluster::start("redeliver", Options::default()).await;
    let mut alice = Client::in_room(cluster.edges[0], "alice", "lobby").await;
    let mut bob = Client::in_room(cluster.edges[1], "bob", "lobby").await;
    for i in 1..=20 {
        bob.say("lobby", &format!("before{i}"), "before").await;
    }
    assert_eq!(seqs(&alice.messages("lobby", 20).await), (1..=20).collect::<Vec<_>>());
    // Past the edge's catch-up checks after a join (they read SQL for what
    // was routed before the route existed, and would find the lost ones).
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The replay starts here, so the new topic ends up holding fewer records
    // than the edge had read from the old one: its position is past the new
    // topic's end, and it must start over from the new topic's beginning.
    let since = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();

    // edge-1's delivery topic is lost while alice is connected to it.
    let kafka = KafkaConfig::new(cluster.env.kafka.clone());
    let admin_client = kafka.admin().unwrap();
    let topic = format!("{}.deliver.edge-1", cluster.prefix);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin_client.delete_topics(&[&topic], &options).await.unwrap() {
        result.unwrap();
    }
    // Gone from the brokers' metadata, so no send below lands in the old topic.
    let metadata: ToolConsumer = kafka.tool_consumer("sbctl-test").unwrap();
    eventually(Duration::from_secs(30), Duration::from_millis(200), async || {
        let found = metadata.fetch_metadata(Some(&topic), Duration::from_secs(5)).map_err(|e| e.to_string())?;
        match found.topics().first().map(|t| t.error()) {
            Some(Some(_)) => Ok(()),
            _ => Err(format!("{topic} still exists")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failures = "switchboard_router_delivery_produce_failures_total";
    let failed_before = metric(cluster.router_ops, failures).await;
    for i in 21..=25 {
        bob.say("lobby", &format!("lost{i}"), "lost").await;
    }
    assert_eq!(seqs(&bob.messages("lobby", 25).await), (1..=25).collect::<Vec<_>>());
    // The router gives up on the five records for edge-1: they are gone.
    eventually(Duration::from_secs(90), Duration::from_millis(500), async || {
        let failed = metric(cluster.router_ops, failures).await - failed_before;
        if failed >= 5.0 { Ok(()) } else { Err(format!("{failed} delivery produce failures so far")) }
    })
    .await;
    let new_topic = NewTopic::new(&topic, 1, TopicReplication::Fixed(1));
    for result in admin_client.create_topics(&[new_topic], &options).await.unwrap() {
        result.unwrap();
    }
    let early = tokio::time::timeout(Duration::from_secs(2), alice.messages("lobby", 1)).await;
    assert!(early.is_err(), "nothing reaches alice before the replay: {early:?}");

    let plan = succeeded(cluster.sbctl(&["replay", "deliver", "--from-datetime", &since, "--nodes", "edge-1"]));
    assert!(plan.contains("plan only: nothing changed") && plan.contains("total: 5 records"), "{plan}");
    let unknown = cluster.sbctl(&["replay", "deliver", "--by-duration", "10m", "--nodes", "edge-9", "--execute"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", output_text(&unknown));
    assert!(output_text(&unknown).contains("no live node is called edge-9"), "{}", output_text(&unknown));
    let run = succeeded(cluster.sbctl(&[
        "replay",
        "deliver",
        "--from-datetime",
        &since,
        "--nodes",
        "edge-1",
        "--rooms",
        "lobby",
        "--execute",
    ]));
    assert!(run.contains("5 to edge-1"), "{run}");

    // Every missed message, in order; what alice had is not pushed again.
    let got = alice.messages("lobby", 5).await;
    assert_eq!(seqs(&got), [21, 22, 23, 24, 25], "{got:?}");
    bob.say("lobby", "after", "after").await;
    let next = alice.messages("lobby", 1).await;
    assert_eq!(seqs(&next), [26], "no duplicate before the next live message: {next:?}");
}

/// Retention deleted the oldest records of `sb.inbound` (here the broker's
/// DeleteRecords, which moves each partition's log start as retention
/// does): a replay from before the log start names the loss and refuses,
/// plan or not, and with `--allow-partial` stores exactly what is left; a
/// group reset outside the log refuses unless told to clamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real Kafka and PostgreSQL; run scripts/e2e.sh"]
async fn a_replay_past_retention_names_the_loss_and_goes_on_only_when_allowed() {
    let cluster = Cluster::start("retention", Options::default()).await;
    let mut clients = Vec::new();
    for (i, room) in ROOMS.iter().enumerate() {
        clients.push(Client::in_room(cluster.edges[i % 2], &format!("user{i}"), room).await);
    }
    for round in 0..30 {
        for (i, room) in ROOMS.iter().enumerate() {
            clients[i].say(room, &format!("c{round}"), "kept or lost").await;
        }
    }
    let sent = 30 * ROOMS.len() as u64;
    eventually(Duration::from_secs(30), Duration::from_millis(200), async || {
        let stored = cluster.stored().await;
        if stored > sent { Ok(()) } else { Err(format!("{stored} of {sent} + the warm-up stored")) }
    })
    .await;

    // Half of every partition goes, as retention would take it.
    let kafka = KafkaConfig::new(cluster.env.kafka.clone());
    let topic = format!("{}.inbound", cluster.prefix);
    let watermarks: ToolConsumer = kafka.tool_consumer("sbctl-test").unwrap();
    let mut cut = TopicPartitionList::new();
    let mut left = 0;
    for partition in 0..4 {
        let (low, high) = watermarks.fetch_watermarks(&topic, partition, Duration::from_secs(10)).unwrap();
        assert_eq!(low, 0);
        let start = high / 2;
        left += high - start;
        cut.add_partition_offset(&topic, partition, Offset::Offset(start)).unwrap();
    }
    assert!(left < sent as i64, "something is deleted: {left} left of {sent}");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deleted = kafka.admin().unwrap().delete_records(&cut, &options).await.unwrap();
    for element in deleted.elements() {
        element.error().unwrap();
    }

    // Into a database of its own, while the live pipeline runs.
    let fresh = format!("{}_partial", cluster.database);
    let mut db = cluster.db().await;
    sqlx::query(&format!("CREATE DATABASE {fresh}")).execute(&mut db).await.unwrap();
    let fresh_url = cluster.database_url.replace(&format!("/{}", cluster.database), &format!("/{fresh}"));
    let replay = |more: &[&str]| {
        let mut args = vec!["replay", "store", "--database-url", &fresh_url, "--persister-running-ok"];
        args.extend_from_slice(more);
        cluster.sbctl(&args)
    };
    for start in [&["--from-beginning"][..], &["--by-duration", "1h"], &["--from-beginning", "--execute"]] {
        let refused = replay(start);
        let text = output_text(&refused);
        assert_eq!(refused.status.code(), Some(1), "{start:?}: {text}");
        assert!(text.contains("(retention): LOST") && text.contains("--allow-partial"), "{start:?}: {text}");
    }
    let store = Store::connect(&fresh_url, 1).await.unwrap();
    assert!(store.dump().await.is_err(), "a refusal changes nothing, not even the tables");
    store.close().await;

    let partial = succeeded(replay(&["--from-beginning", "--allow-partial", "--execute"]));
    assert!(partial.contains(&format!("replayed {left} records")), "{left} records are left:\n{partial}");
    let mut fresh_db = sqlx::PgConnection::connect(&fresh_url).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM messages").fetch_all(&mut fresh_db).await.unwrap();
    assert_eq!(ids.len() as i64, left, "every record left is one message");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(kept, left, "the replayed messages are the live store's newest ones");
    drop(fresh_db);

    // The replay's group, now at the end: a shift to before the log start.
    let group = format!("{}-replay-store", cluster.prefix);
    let shift = ["groups", "reset", group.as_str(), "--topic", topic.as_str(), "--shift-by", "-1000"];
    let refused = cluster.sbctl(&shift);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(output_text(&refused).contains("is outside the log"), "{}", output_text(&refused));
    let clamped = succeeded(cluster.sbctl(&[&shift[..], &["--allow-partial"]].concat()));
    assert!(clamped.contains("clamped") && clamped.contains("dry run: nothing changed"), "{clamped}");

    sqlx::query(&format!("DROP DATABASE {fresh} WITH (FORCE)")).execute(&mut db).await.unwrap();

    // Tearing the deployment down waits for its workers to stop.
    let plan = succeeded(cluster.sbctl(&["delete-topics"]));
    assert!(plan.contains(&topic) && plan.contains(&format!("{}.deliver.edge-1", cluster.prefix)), "{plan}");
    assert!(plan.contains("live member") && plan.contains("plan only"), "{plan}");
    let refused = cluster.sbctl(&["delete-topics", "--execute"]);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(output_text(&refused).contains("stop the deployment's workers first"), "{}", output_text(&refused));
    let still = deployment_topics(&kafka, &Topics::new(&cluster.prefix).unwrap()).unwrap();
    assert!(still.contains(&topic), "nothing was deleted: {still:?}");
}
