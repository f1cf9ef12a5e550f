//! End to end through the embedded deployment: real WebSocket clients on two
//! edges, librdkafka's mock cluster, the persister, the router and SQLite.

mod support;

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::json;
use support::{Client, admin, eventually, http, seqs, start, start_configured, start_with};
use switchboard::embedded::NODES;
use switchboard_core::kafka::{KafkaConfig, assign_all, record_headers};
use switchboard_core::producer::KafkaProducer;
use switchboard_schemas::routing::{RouteKey, RouteRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_members_on_both_nodes_once() {
    let h = start().await;
    let mut alice = Client::connect(h.edge(0), "alice").await;
    let mut bob = Client::connect(h.edge(1), "bob").await;
    let mut carol = Client::connect(h.edge(1), "carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let joined = c.join("lobby", None).await;
        assert_eq!(joined["last_seq"], 0);
        assert_eq!(joined["recovered"], true);
    }
    let id = alice.say("lobby", "m-1", "hello from edge-1").await;
    let second = bob.say("lobby", "m-2", "hello from edge-2").await;

    for c in [&mut alice, &mut bob, &mut carol] {
        let got = c.messages("lobby", 2).await;
        assert_eq!(seqs(&got), vec![1, 2], "{} saw {got:?}", c.user);
        assert_eq!(got[0]["id"], id.as_str());
        assert_eq!(got[0]["body"], "hello from edge-1");
        assert_eq!(got[0]["sender"], "alice");
        assert_eq!(got[0]["sender_name"], "alice name");
        assert_eq!(got[1]["id"], second.as_str());
    }
    assert_eq!(h.embedded.store.count_messages("lobby").await.unwrap(), 2);
    h.stop().await;
}

/// `sbctl probe` (the Helm chart's `helm test`) passes against a working
/// pipeline, and names the step that failed otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_sees_its_message_come_back_and_reports_a_bad_key() {
    use switchboard_admin::probe::{ProbeArgs, run};
    let harness = start().await;
    let args = |secret: &str| ProbeArgs {
        url: format!("ws://{}/ws", harness.edge(0)),
        jwt_secret: switchboard_core::config::Secret::new(secret),
        timeout: Duration::from_secs(20),
        user: "probe".into(),
    };
    run(args(support::SECRET)).await.expect("the round trip works");
    let refused = run(args("not-the-edges-key-0123456789abcdef")).await.unwrap_err().to_string();
    assert!(refused.contains("connect") && refused.contains("401"), "{refused}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_returns_exactly_the_missed_messages() {
    let h = start().await;
    let mut sender = Client::in_room(h.edge(0), "sender", "news").await;
    let mut reader = Client::in_room(h.edge(1), "reader", "news").await;
    for i in 1..=3 {
        sender.say("news", &format!("a{i}"), &format!("before {i}")).await;
    }
    let seen = reader.messages("news", 3).await;
    let last_seen = seen.last().unwrap()["seq"].as_u64().unwrap();
    drop(reader);

    for i in 1..=4 {
        sender.say("news", &format!("b{i}"), &format!("missed {i}")).await;
    }
    sender.messages("news", 7).await;

    // Reconnect to the other node and resume.
    let mut reader = Client::connect(h.edge(0), "reader").await;
    let joined = reader.join("news", Some(last_seen)).await;
    assert_eq!(joined["recovered"], true);
    assert_eq!(joined["last_seq"], 7);
    let replayed = reader.messages("news", 4).await;
    assert_eq!(seqs(&replayed), vec![4, 5, 6, 7]);
    assert_eq!(replayed[0]["body"], "missed 1");

    // And live messages continue after the replay, with nothing repeated.
    sender.say("news", "c1", "live").await;
    let live = reader.messages("news", 1).await;
    assert_eq!(seqs(&live), vec![8]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_client_id_yields_the_same_seq_and_one_row() {
    let h = start().await;
    let mut alice = Client::in_room(h.edge(0), "alice", "dup").await;
    let first = alice.say("dup", "same-id", "once").await;
    let again = alice.say("dup", "same-id", "once").await;
    assert_eq!(first, again, "the ack carries the same message id");
    alice.say("dup", "other-id", "next").await;
    let got = alice.messages("dup", 2).await;
    assert_eq!(seqs(&got), vec![1, 2], "the duplicate took no seq: {got:?}");
    assert_eq!(got[1]["client_id"], "other-id");

    // The same client id after a reconnect, through the other node.
    drop(alice);
    let mut alice = Client::connect(h.edge(1), "alice").await;
    alice.join("dup", Some(2)).await;
    assert_eq!(alice.say("dup", "same-id", "once").await, first);
    alice.say("dup", "third-id", "third").await;
    let got = alice.messages("dup", 1).await;
    assert_eq!(seqs(&got), vec![3]);
    assert_eq!(h.embedded.store.count_messages("dup").await.unwrap(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_just_before_a_burst_loses_nothing() {
    let h = start().await;
    let mut sender = Client::in_room(h.edge(0), "sender", "burst").await;
    // The receiver's node has no route for the room until this join; the
    // burst starts at once, so its first messages are routed before the
    // route exists and must come from the gap backfill.
    let mut receiver = Client::in_room(h.edge(1), "receiver", "burst").await;
    const N: usize = 30;
    for i in 0..N {
        sender.say_no_wait("burst", &format!("m{i}"), &format!("burst {i}")).await;
    }
    let got = receiver.messages("burst", N).await;
    assert_eq!(seqs(&got), (1..=N as u64).collect::<Vec<_>>());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_live_delivery_is_filled_from_sql_in_order() {
    let h = start().await;
    let mut sender = Client::in_room(h.edge(0), "sender", "gappy").await;
    let mut receiver = Client::in_room(h.edge(1), "receiver", "gappy").await;
    sender.say("gappy", "m0", "routed normally").await;
    assert_eq!(seqs(&receiver.messages("gappy", 1).await), vec![1]);

    // Take edge-2's route away behind its back (as if it had not reached
    // the routers yet), so the next messages are not delivered to it.
    let kafka = h.embedded.kafka.clone();
    let producer: KafkaProducer = kafka.producer().unwrap();
    let routes = h.embedded.topics.routes();
    let key = RouteKey::new("gappy", NODES[1]).encode();
    producer.send(FutureRecord::<str, [u8]>::to(&routes).key(&key), Timeout::Never).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 1..=5 {
        sender.say("gappy", &format!("m{i}"), &format!("unrouted {i}")).await;
    }
    assert_eq!(sender.messages("gappy", 6).await.len(), 6);

    // Restore the route: the next live message (seq 7) reveals the gap 2..=6.
    let epoch = h.embedded.edge_states[1].epoch;
    let record = serde_json::to_vec(&RouteRecord { room: "gappy".into(), node: NODES[1].into(), epoch }).unwrap();
    producer.send(FutureRecord::to(&routes).key(&key).payload(&record), Timeout::Never).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sender.say("gappy", "m6", "routed again").await;

    let got = receiver.messages("gappy", 6).await;
    assert_eq!(seqs(&got), vec![2, 3, 4, 5, 6, 7]);
    assert_eq!(got[0]["body"], "unrouted 1");
    let backfilled = support::metric(h.edge(1), "switchboard_edge_backfilled_messages_total").await;
    assert!(backfilled >= 5.0, "the gap came from SQL ({backfilled} messages read from it)");
    // Both nodes timed all seven, the gap's too (one metrics set for both).
    assert_eq!(support::metric(h.edge(1), "switchboard_edge_end_to_end_seconds_count").await, 14.0);
    drop(producer);
    h.stop().await;
}

/// After a room gets its first member on a node, the node checks SQL
/// (`--catch-up-after`) for messages routed before its route: here nothing
/// follows them, so no later message reveals the gap. Several rooms at once,
/// as the checks of a join storm are answered together. One check, 5 s after
/// the joins, leaves the test time to lose the messages first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_new_route_missed_come_by_the_catch_up_with_nothing_after_them() {
    let h = start_with(|edge| edge.catch_up_after = vec![Duration::from_secs(5)]).await;
    let rooms = ["quiet-a", "quiet-b", "quiet-c"];
    let mut sender = Client::connect(h.edge(0), "sender").await;
    let mut receiver = Client::connect(h.edge(1), "receiver").await;
    for room in rooms {
        sender.join(room, None).await;
        receiver.join(room, None).await;
    }
    // Routed normally first: a moment for edge-2's routes to reach the
    // router (a message routed before them would wait for the catch-up),
    // so they exist before they are taken away below.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for room in rooms {
        sender.say(room, "m0", "routed normally").await;
        assert_eq!(seqs(&receiver.messages(room, 1).await), vec![1]);
    }
    // Take edge-2's routes away behind its back (as if they had not reached
    // the routers yet): the next messages are stored but not delivered to it.
    let kafka = h.embedded.kafka.clone();
    let producer: KafkaProducer = kafka.producer().unwrap();
    let routes = h.embedded.topics.routes();
    for room in rooms {
        let key = RouteKey::new(room, NODES[1]).encode();
        producer.send(FutureRecord::<str, [u8]>::to(&routes).key(&key), Timeout::Never).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for room in rooms {
        for i in 1..=3 {
            sender.say(room, &format!("m{i}"), &format!("unrouted {i}")).await;
        }
        // The sender's own copies come once they are stored.
        assert_eq!(sender.messages(room, 4).await.len(), 4);
    }
    for room in rooms {
        let got = receiver.messages(room, 3).await;
        assert_eq!(seqs(&got), vec![2, 3, 4], "{room}");
        assert_eq!(got[0]["body"], "unrouted 1");
    }
    let backfilled = support::metric(h.edge(1), "switchboard_edge_backfilled_messages_total").await;
    assert_eq!(backfilled, 9.0, "the missed messages came from SQL, not live");
    // Both nodes timed all twelve, the caught-up ones too (one metrics set
    // for both): a route that reaches the routers late shows as latency.
    assert_eq!(support::metric(h.edge(1), "switchboard_edge_end_to_end_seconds_count").await, 24.0);
    drop(producer);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_inbound_record_is_dead_lettered_and_the_pipeline_goes_on() {
    let h = start().await;
    let kafka = h.embedded.kafka.clone();
    let topics = &h.embedded.topics;

    let dlq: StreamConsumer = kafka.assigned_consumer().unwrap();
    assign_all(&dlq, &[&topics.dead_letter()], rdkafka::Offset::Beginning).await.unwrap();

    let mut alice = Client::in_room(h.edge(0), "alice", "dl").await;

    let producer: KafkaProducer = kafka.producer().unwrap();
    let inbound = topics.inbound();
    producer
        .send(
            FutureRecord::to(&inbound)
                .key("dl")
                .payload("{this is not json")
                .headers(record_headers("inbound.v1", None)),
            Timeout::Never,
        )
        .await
        .unwrap();
    producer.send(FutureRecord::to(&inbound).key("dl").payload("{}"), Timeout::Never).await.unwrap();

    alice.say("dl", "after", "still flowing").await;
    let got = alice.messages("dl", 1).await;
    assert_eq!(got[0]["body"], "still flowing");

    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let record = tokio::time::timeout(Duration::from_secs(20), dlq.recv()).await.unwrap().unwrap();
        let reason = switchboard_core::kafka::header_str(&record, "sb-dlq-reason").unwrap().to_owned();
        assert_eq!(switchboard_core::kafka::header_str(&record, "sb-dlq-topic"), Some(inbound.as_str()));
        assert_eq!(record.key(), Some(&b"dl"[..]));
        reasons.push(reason);
    }
    assert!(reasons[0].starts_with("undecodable"), "{reasons:?}");
    assert!(reasons[1].contains("missing sb-schema"), "{reasons:?}");
    // The test's own Kafka clients go before the mock cluster does.
    drop(dlq);
    drop(producer);
    h.stop().await;
}

/// While the process writes nothing, the mock broker answers everything
/// late (an idle embedded process costs next to nothing); a client's send
/// ends that at once. Here the delay is 2 s: a message after the wake may
/// still wait up to one delay (a timer the mock armed during the quiet,
/// see `switchboard::mock_brokers`), but one held by the quiet would wait at
/// every hop (each produce's ack, each fetch): 6 s or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_a_quiet_spell_is_not_held_by_the_idle_mock() {
    let h = start_configured(|config| config.quiet_rtt = Duration::from_secs(2)).await;
    let mut alice = Client::in_room(h.edge(0), "alice", "hush").await;
    let mut bob = Client::in_room(h.edge(1), "bob", "hush").await;
    alice.say("hush", "m1", "before").await;
    assert_eq!(seqs(&bob.messages("hush", 1).await), vec![1]);

    let brokers = h.embedded.brokers();
    until_quiet(brokers).await;
    let trip = async {
        alice.say("hush", "m2", "after the quiet").await;
        bob.messages("hush", 1).await
    };
    let got = tokio::time::timeout(Duration::from_secs(4), trip).await.expect("not held by the quiet broker");
    assert_eq!(seqs(&got), vec![2]);
    assert!(!brokers.is_quiet(), "the send ended the quiet");
    h.stop().await;
}

/// A record written from outside the process while the mock is quiet (its
/// write tells the process nothing) is still read: here a garbage record,
/// dead-lettered by the persister.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_from_outside_is_read_while_the_mock_is_quiet() {
    let h = start().await;
    let outside = KafkaConfig::new(h.embedded.kafka.brokers.clone());
    let topics = &h.embedded.topics;
    let dlq: StreamConsumer = outside.assigned_consumer().unwrap();
    assign_all(&dlq, &[&topics.dead_letter()], rdkafka::Offset::Beginning).await.unwrap();
    let producer: KafkaProducer = outside.producer().unwrap();

    let brokers = h.embedded.brokers();
    until_quiet(brokers).await;
    let inbound = topics.inbound();
    let garbage = FutureRecord::to(&inbound).key("q").payload("{not json").headers(record_headers("inbound.v1", None));
    producer.send(garbage, Timeout::Never).await.unwrap();
    let record = tokio::time::timeout(Duration::from_secs(20), dlq.recv()).await.unwrap().unwrap();
    assert_eq!(record.key(), Some(&b"q"[..]));
    drop(record);
    drop(dlq);
    drop(producer);
    h.stop().await;
}

/// Waits for the idle deployment's mock broker to begin a quiet spell.
async fn until_quiet(brokers: &switchboard::mock_brokers::MockBrokers) {
    eventually(Duration::from_secs(20), Duration::from_millis(50), async || {
        if brokers.is_quiet() { Ok(()) } else { Err("the idle deployment never went quiet".to_string()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_refuse_non_members() {
    let h = start().await;
    h.room_command("POST", "/v1/rooms", Some(json!({"room": "staff", "kind": "private", "members": ["alice"]}))).await;
    let mut mallory = Client::connect(h.edge(0), "mallory").await;
    mallory.send_json(json!({"type": "join", "ref": "j1", "room": "staff"})).await;
    let err = mallory.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "forbidden");
    assert_eq!(err["ref"], "j1");
    // Sending without a join is refused at the edge.
    let reference = mallory.say_no_wait("staff", "x", "let me in").await;
    let err = mallory.recv().await;
    assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("not_joined"), Some(reference.as_str())));

    let mut alice = Client::in_room(h.edge(1), "alice", "staff").await;
    alice.say("staff", "s1", "members only").await;
    assert_eq!(seqs(&alice.messages("staff", 1).await), vec![1]);
    h.stop().await;
}

/// Removing a member takes effect on the user's live connections, on every
/// edge: each gets `removed`, then none of the room's events; a send is
/// refused and so is a new join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_leaves_the_room_on_every_connection() {
    let h = start().await;
    let create = json!({"room": "board", "kind": "private", "members": ["alice", "bob"]});
    h.room_command("POST", "/v1/rooms", Some(create)).await;
    let mut alice_laptop = Client::in_room(h.edge(0), "alice", "board").await;
    let mut alice_phone = Client::in_room(h.edge(1), "alice", "board").await;
    let mut bob = Client::in_room(h.edge(1), "bob", "board").await;
    alice_laptop.say("board", "a1", "hello").await;
    for c in [&mut alice_laptop, &mut alice_phone, &mut bob] {
        assert_eq!(seqs(&c.messages("board", 1).await), vec![1]);
    }

    h.room_command("DELETE", "/v1/rooms/board/members/alice", None).await;
    for alice in [&mut alice_laptop, &mut alice_phone] {
        let removed = alice.recv().await;
        assert_eq!(removed, json!({"type": "removed", "room": "board"}));
    }
    bob.say("board", "b1", "alice is gone").await;
    assert_eq!(seqs(&bob.messages("board", 1).await), vec![2]);
    let reference = alice_laptop.say_no_wait("board", "a2", "still here?").await;
    let err = alice_laptop.recv().await;
    assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("not_joined"), Some(reference.as_str())));
    alice_phone.send_json(json!({"type": "join", "ref": "again", "room": "board"})).await;
    let err = alice_phone.recv().await;
    assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("forbidden"), Some("again")));
    // Nothing of the room reached alice after `removed` (bob's message
    // would have come before her own frames' replies).
    assert_eq!(h.embedded.store.count_messages("board").await.unwrap(), 2);

    // Added back, she may join again and resume.
    h.room_command("PUT", "/v1/rooms/board/members/alice", None).await;
    let joined = alice_phone.join("board", Some(1)).await;
    assert_eq!(joined["recovered"], true);
    assert_eq!(seqs(&alice_phone.messages("board", 1).await), vec![2]);
    h.stop().await;
}

/// A history reset reaches the room's connections as `reset` with the new
/// epoch; the room's next message is seq 1 of that epoch, and a client
/// resuming with the old epoch is told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_reset_starts_the_room_again_for_its_clients() {
    let h = start().await;
    let mut alice = Client::in_room(h.edge(0), "alice", "town").await;
    let mut bob = Client::in_room(h.edge(1), "bob", "town").await;
    for i in 1..=3 {
        alice.say("town", &format!("old{i}"), "old").await;
    }
    assert_eq!(seqs(&bob.messages("town", 3).await), vec![1, 2, 3]);
    alice.messages("town", 3).await;

    h.room_command("POST", "/v1/rooms/town/reset", None).await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.recv().await, json!({"type": "reset", "room": "town", "epoch": 2}));
    }
    alice.say("town", "new1", "new").await;
    for c in [&mut alice, &mut bob] {
        let got = c.messages("town", 1).await;
        assert_eq!(seqs(&got), vec![1]);
        assert_eq!(got[0]["body"], "new");
    }
    let mut carol = Client::connect(h.edge(0), "carol").await;
    carol.send_json(json!({"type": "join", "ref": "j", "room": "town", "since": 3, "epoch": 1})).await;
    let joined = carol.recv().await;
    assert_eq!((joined["epoch"].as_u64(), joined["recovered"].as_bool()), (Some(2), Some(false)));
    assert_eq!(seqs(&carol.messages("town", 1).await), vec![1]);
    h.stop().await;
}

/// The admin API answers every bad request with a typed error and issues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_bad_requests_with_typed_errors() {
    let h = start().await;
    let addr = h.edge(0);
    let create = json!({"room": "r", "kind": "private"}).to_string();
    let json_type = ("Content-Type", "application/json");
    let (status, body) = http(addr, "POST", "/v1/rooms", &[json_type], &create).await;
    assert_eq!(status, 401, "{body}");
    let client = format!("Bearer {}", support::token("alice"));
    let (status, body) = http(addr, "POST", "/v1/rooms", &[json_type, ("Authorization", &client)], &create).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin"), "{body}");
    let (status, body) = admin(addr, "POST", "/v1/rooms", Some(json!({"room": "r", "kind": "secret"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = admin(addr, "PUT", "/v1/rooms/r/members/caf%C3%A9", None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = admin(addr, "POST", "/v1/rooms", Some(json!({"room": "a/b", "kind": "public"}))).await;
    assert_eq!(status, 400, "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_clients_with_1012() {
    let h = start().await;
    let mut alice = Client::in_room(h.edge(0), "alice", "lobby").await;
    h.embedded.shutdown_token().cancel();
    assert_eq!(alice.recv_close().await, 1012);
    h.stop().await;
}

/// The embedded mock Kafka drops a partition's oldest records past 5 MiB,
/// read or not. So while the persister is behind, the edges refuse sends
/// (`unavailable`, retry with the same client_id) rather than accept one that
/// could be dropped. With a 1-byte allowance, each accepted send holds the
/// door shut until the persister has handled it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_wait_for_a_persister_that_is_behind_and_none_is_lost() {
    let h = start_configured(|config| {
        config.backlog_limit_bytes = 1;
        // Retries come fast; the rate limit is not what this test is about.
        config.tune_edge = |edge| (edge.rate_per_second, edge.rate_burst) = (10_000, 10_000);
    })
    .await;
    let mut sender = Client::in_room(h.edge(0), "sender", "busy").await;
    let mut reader = Client::in_room(h.edge(1), "reader", "busy").await;
    let mut pending: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let mut refused = 0;
    for _round in 0..500 {
        if pending.is_empty() {
            break;
        }
        let mut by_ref = std::collections::HashMap::new();
        for client_id in &pending {
            by_ref.insert(sender.say_no_wait("busy", client_id, &format!("body {client_id}")).await, client_id.clone());
        }
        let mut still = Vec::new();
        while !by_ref.is_empty() {
            let frame = sender.recv().await;
            let Some(client_id) = frame["ref"].as_str().and_then(|r| by_ref.remove(r)) else { continue };
            match frame["type"].as_str() {
                Some("ack") => assert_eq!(frame["status"], "accepted", "{frame}"),
                Some("error") => {
                    assert_eq!(frame["code"], "unavailable", "{frame}");
                    refused += 1;
                    still.push(client_id);
                }
                _ => panic!("unexpected answer {frame}"),
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pending.is_empty(), "never accepted: {pending:?}");
    assert!(refused > 0, "no send was held back");
    let got = reader.messages("busy", 30).await;
    assert_eq!(seqs(&got), (1..=30).collect::<Vec<_>>());
    assert_eq!(h.embedded.store.count_messages("busy").await.unwrap(), 30);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connections_sends_are_stored_and_delivered_in_the_order_it_sent_them() {
    let h = start_configured(|c| {
        c.tune_edge = |e| {
            e.rate_per_second = 10_000;
            e.rate_burst = 10_000;
        }
    })
    .await;
    let mut sender = Client::in_room(h.edge(0), "sender", "ordered").await;
    let mut reader = Client::in_room(h.edge(1), "reader", "ordered").await;
    // Back to back, without waiting for acks: what a chat client does when
    // a user pastes several lines, and where the order used to break.
    const N: usize = 200;
    let mut refs = Vec::new();
    for i in 0..N {
        refs.push(sender.say_no_wait("ordered", &format!("o{i}"), &format!("line {i}")).await);
    }
    let mut acked = std::collections::HashSet::new();
    while acked.len() < N {
        let ack = sender.recv_type("ack").await;
        assert_eq!(ack["status"], "accepted", "{ack}");
        acked.insert(ack["ref"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = (0..N).map(|i| format!("line {i}")).collect();
    let bodies = |messages: &[serde_json::Value]| -> Vec<String> {
        messages.iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect()
    };
    let live = reader.messages("ordered", N).await;
    assert_eq!(seqs(&live), (1..=N as u64).collect::<Vec<_>>(), "delivered by seq");
    assert_eq!(bodies(&live), expected, "the reader on the other node sees the lines in the order they were sent");
    // A client joining later reads the same order back from SQL.
    let mut late = Client::connect(h.edge(1), "late").await;
    late.join("ordered", Some(0)).await;
    assert_eq!(bodies(&late.messages("ordered", N).await), expected, "stored in send order");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_with_a_since_beyond_the_rooms_end_is_not_recovered() {
    let h = start().await;
    let mut alice = Client::in_room(h.edge(0), "alice", "short").await;
    for i in 1..=3 {
        alice.say("short", &format!("s{i}"), &format!("line {i}")).await;
    }
    alice.messages("short", 3).await;
    // A client that believes it saw seq 10 of a room that has 3 messages
    // (e.g. the room's database was restored from an older backup).
    let mut bob = Client::connect(h.edge(1), "bob").await;
    let joined = bob.join("short", Some(10)).await;
    assert_eq!(joined["last_seq"], 3);
    assert_eq!(joined["recovered"], false, "the client's copy is not this room's history: reload");
    assert_eq!(seqs(&bob.messages("short", 3).await), vec![1, 2, 3], "the most recent messages follow");
    // Up to date: nothing to replay, recovered.
    let mut carol = Client::connect(h.edge(1), "carol").await;
    let joined = carol.join("short", Some(3)).await;
    assert_eq!(joined["recovered"], true);
    // Joining again is its own error, and the first join stays in effect.
    carol.send_json(json!({"type": "join", "ref": "again", "room": "short"})).await;
    let err = carol.recv_type("error").await;
    assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("already_joined"), Some("again")));
    alice.say("short", "s4", "line 4").await;
    assert_eq!(seqs(&carol.messages("short", 1).await), vec![4]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_metrics_count_what_its_clients_did_and_got() {
    use support::metric;
    let h = start().await;
    let (a, b) = (h.edge(0), h.edge(1));
    let mut sender = Client::in_room(a, "sender", "counted").await;
    let mut reader = Client::in_room(b, "reader", "counted").await;
    const N: usize = 12;
    let before = switchboard_core::clock::now_ms();
    for i in 0..N {
        sender.say("counted", &format!("c{i}"), "counted line").await;
    }
    let acked = switchboard_core::clock::now_ms();
    let got = reader.messages("counted", N).await;
    assert_eq!(got.len(), N);
    // sent_at is when the edge took the send: before its ack came back.
    for m in &got {
        let sent_at = m["sent_at"].as_i64().unwrap();
        assert!((before..=acked).contains(&sent_at), "sent_at {sent_at} not in {before}..={acked}");
    }
    assert_eq!(sender.messages("counted", N).await.len(), N);
    sender.send_text("{not json").await;
    assert_eq!(sender.recv_type("error").await["code"], "bad_json");

    let n = N as f64;
    // The embedded default serves one set for the whole process, on both ports.
    for edge in [a, b] {
        assert_eq!(metric(edge, "switchboard_edge_sends_accepted_total").await, n, "acked sends");
    }
    assert_eq!(metric(a, "switchboard_edge_connections").await, 2.0);
    assert_eq!(metric(a, r#"switchboard_edge_handshakes_total{outcome="ok"}"#).await, 2.0);
    assert_eq!(metric(a, r#"switchboard_edge_frames_in_total{type="send"}"#).await, n);
    assert_eq!(metric(a, r#"switchboard_edge_frames_in_total{type="join"}"#).await, 2.0);
    assert_eq!(metric(a, r#"switchboard_edge_frames_in_total{type="invalid"}"#).await, 1.0);
    assert_eq!(metric(a, r#"switchboard_edge_errors_sent_total{code="bad_json"}"#).await, 1.0);
    assert_eq!(metric(a, "switchboard_edge_deliveries_total").await, 2.0 * n, "each client got each message");
    assert_eq!(metric(a, "switchboard_edge_end_to_end_seconds_count").await, 2.0 * n, "each node timed each message");
    assert!(metric(a, "switchboard_edge_end_to_end_seconds_sum").await > 0.0);
    assert_eq!(metric(a, "switchboard_persister_messages_stored_total").await, n);
    assert_eq!(metric(a, "switchboard_persister_repeats_total").await, 0.0);
    assert!(metric(a, "switchboard_persister_batches_total").await >= 1.0);
    assert!(metric(a, "switchboard_persister_batch_duration_seconds_count").await >= 1.0);
    assert_eq!(metric(a, "switchboard_router_events_routed_total").await, n);
    assert_eq!(metric(a, "switchboard_router_deliveries_produced_total").await, 2.0 * n, "both nodes have members");
    // Both workers have handled all they read: a lag series per partition
    // they own, at 0, once librdkafka's statistics (every 5 s) came in.
    for worker in ["persister", "router"] {
        let prefix = format!("switchboard_{worker}_consumer_lag{{");
        eventually(Duration::from_secs(20), Duration::from_millis(250), async || {
            let text = support::http_get(a, "/metrics").await;
            let lag: Vec<String> = text.lines().filter(|l| l.starts_with(&prefix)).map(str::to_owned).collect();
            if !lag.is_empty() && lag.iter().all(|l| l.ends_with(" 0")) {
                Ok(())
            } else {
                Err(format!("{worker}'s lag: {lag:?}"))
            }
        })
        .await;
    }

    // A refused handshake and a closed connection are counted by reason.
    let forged = format!("ws://{b}/ws?token=not-a-token");
    assert!(tokio_tungstenite::connect_async(forged).await.is_err());
    assert_eq!(metric(b, r#"switchboard_edge_handshakes_total{outcome="unauthorized"}"#).await, 1.0);
    drop(reader);
    eventually(Duration::from_secs(10), Duration::from_millis(20), async || {
        match metric(b, "switchboard_edge_connections").await {
            1.0 => Ok(()),
            _ => Err("the closed connection is still counted".to_owned()),
        }
    })
    .await;
    assert_eq!(metric(b, r#"switchboard_edge_disconnects_total{reason="peer"}"#).await, 1.0);
    assert_eq!(support::http_get(a, "/readyz").await, "ready");
    assert_eq!(support::http_get(a, "/healthz").await, "ok");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_the_send_queue_reaches_a_client_that_reads() {
    let h = start_configured(|c| {
        c.tune_edge = |e| {
            e.rate_per_second = 10_000;
            e.rate_burst = 10_000;
        }
    })
    .await;
    // 300 messages of 4 KiB: about 1.3 MB of replay, over the 1 MiB queue.
    let mut sender = Client::in_room(h.edge(0), "sender", "big").await;
    let body = "b".repeat(4096);
    const N: usize = 300;
    // In batches, reading its own echo as it goes: the sender is a reader of
    // the room too and must not become a slow consumer itself.
    for batch in 0..N / 50 {
        for i in 0..50 {
            sender.say_no_wait("big", &format!("b{batch}-{i}"), &body).await;
        }
        for _ in 0..50 {
            assert_eq!(sender.recv_type("ack").await["status"], "accepted");
        }
        sender.messages("big", 50).await;
    }
    let mut late = Client::connect(h.edge(1), "late").await;
    let joined = late.join("big", Some(0)).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(seqs(&late.messages("big", N).await), (1..=N as u64).collect::<Vec<_>>());
    // ...and then the live stream, right behind the replay.
    sender.say("big", "after", "live").await;
    assert_eq!(seqs(&late.messages("big", 1).await), vec![N as u64 + 1]);
    h.stop().await;
}

/// Every series the Grafana dashboard queries is one the binaries export,
/// with the type its suffix implies, so the dashboard cannot rot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_series_the_binaries_export() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/switchboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");

    // Each query's series, and the type its suffix implies.
    let suffixes = [("_total", "counter"), ("_bucket", "histogram"), ("_sum", "histogram"), ("_count", "histogram")];
    let mut wanted = Vec::new();
    for expr in &exprs {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("switchboard_"))
            .collect();
        assert!(!names.is_empty(), "{expr} names no series");
        for name in names {
            let (base, kind) = suffixes
                .iter()
                .find_map(|(suffix, kind)| Some((name.strip_suffix(suffix)?, *kind)))
                .unwrap_or((name, "gauge"));
            wanted.push((base.to_owned(), kind, expr.clone()));
        }
    }

    // The embedded default registers the edge's, the persister's and the
    // router's series; a labelled family is listed once it has a child, so
    // give the labelled ones some traffic: a send, an error, a disconnect, and
    // librdkafka's statistics (every 5 s) for the lag.
    let h = start().await;
    let mut client = Client::in_room(h.edge(0), "viewer", "dash").await;
    client.say("dash", "d1", "hello").await;
    client.send_text("{not json").await;
    assert_eq!(client.recv_type("error").await["code"], "bad_json");
    drop(client);
    eventually(Duration::from_secs(20), Duration::from_millis(250), async || {
        let text = support::http_get(h.edge(0), "/metrics").await;
        let types: std::collections::HashMap<&str, &str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
        let missing: Vec<_> = wanted.iter().filter(|(base, kind, _)| types.get(base.as_str()) != Some(kind)).collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("the dashboard queries series not exported: {missing:?}")) }
    })
    .await;
    h.stop().await;
}
