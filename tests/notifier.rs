//! Offline notifications, against a real HTTP receiver started by the test:
//! members who are away are notified once per message, members in the room
//! and the sender are not; every request is signed and keyed; a receiver
//! that fails is tried again with the same key, one that hangs is timed
//! out, and one that refuses has the notification dead-lettered.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use serde_json::{Value, json};
use support::presence::View;
use support::webhook::{Answer, Received, Receiver, WEBHOOK_SECRET};
use support::{Client, Harness, eventually, metric, start_configured};
use switchboard_core::config::Secret;
use switchboard_core::kafka::header_str;
use switchboard_edge::config::EdgeConfig;
use switchboard_schemas::headers::{DLQ_REASON, SCHEMA};
use switchboard_workers::notifier::NotifierConfig;

const TIMEOUT: Duration = Duration::from_millis(600);

async fn start(receiver: SocketAddr) -> Harness {
    start_configured(|config| {
        config.tune_edge = |edge: &mut EdgeConfig| {
            edge.presence_interval = Duration::from_millis(100);
            edge.presence_refresh = Duration::from_secs(1);
        };
        config.notifier = Some(NotifierConfig {
            webhook_url: Some(format!("http://{receiver}/push")),
            webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
            timeout: TIMEOUT,
            attempts: 3,
            recipients_per_request: 2,
            ..NotifierConfig::default()
        });
    })
    .await
}

/// A private room with these members.
async fn room(h: &Harness, room: &str, members: &[&str]) {
    h.room_command("POST", "/v1/rooms", Some(json!({"room": room, "kind": "private", "members": members}))).await;
}

/// Waits until `n` requests for `room` came, then a moment for any extra one.
async fn requests(receiver: &Receiver, room: &str, n: usize) -> Vec<Received> {
    eventually(Duration::from_secs(20), Duration::from_millis(50), async || {
        let got = receiver.got(room);
        if got.len() >= n { Ok(()) } else { Err(format!("{} of {n} requests for {room}: {got:?}", got.len())) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.got(room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_who_are_away_are_notified_once_and_those_in_the_room_are_not() {
    let (receiver, addr) = Receiver::start().await;
    let h = start(addr).await;
    room(&h, "crew", &["alice", "bob", "carol", "dave", "erin"]).await;
    // Dave is in the room, on the other edge; alice sees him there, so his
    // edge has written his presence.
    let mut alice = View::join(Client::connect(h.edge(0), "alice").await, "crew").await;
    let _dave = View::join(Client::connect(h.edge(1), "dave").await, "crew").await;
    alice.until(&["alice", "dave"]).await;
    // And the notifier has read every presence record written so far, dave's too.
    let written = metric(h.edge(0), r#"switchboard_edge_presence_records_total{outcome="ok"}"#).await;
    eventually(Duration::from_secs(20), Duration::from_millis(50), async || {
        let read = metric(h.edge(0), "switchboard_notifier_presence_records_total").await;
        if read >= written { Ok(()) } else { Err(format!("the notifier read {read} of {written} presence records")) }
    })
    .await;

    let id = alice.client.say("crew", "m1", "the deploy is done, and it went well this time").await;
    let got = requests(&receiver, "crew", 2).await;
    assert_eq!(got.len(), 2, "bob, carol and erin, two per request: {got:?}");
    let mut recipients: Vec<Value> = Vec::new();
    for (batch, request) in got.iter().enumerate() {
        let body = &request.body;
        assert!(request.signed, "signed with the shared secret: {request:?}");
        assert_eq!(body["message_id"], id.as_str());
        assert_eq!((body["seq"].clone(), body["sender"].clone()), (json!(1), json!("alice")));
        assert_eq!(body["sender_name"], "alice name");
        assert_eq!(body["preview"], "the deploy is done, and it went well this time");
        let batch_of = body["batch"].as_u64().unwrap();
        assert!(request.key.starts_with(&format!("{id}:{batch_of}:")), "{request:?}");
        assert!(batch_of < 2, "{batch}");
        recipients.extend(body["recipients"].as_array().unwrap().iter().cloned());
    }
    recipients.sort_by_key(|r| r.to_string());
    assert_eq!(recipients, [json!("bob"), json!("carol"), json!("erin")]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_the_same_key_timed_out_or_dead_lettered() {
    let (receiver, addr) = Receiver::start().await;
    let h = start(addr).await;
    let kafka = h.embedded.kafka.clone();
    let dead_letters: StreamConsumer = kafka.assigned_consumer().unwrap();
    switchboard_core::kafka::assign_all(&dead_letters, &[&h.embedded.topics.dead_letter()], rdkafka::Offset::End)
        .await
        .unwrap();
    receiver.script("flaky", &[Answer::Status(500), Answer::Status(503)]);
    receiver.script("slow", &[Answer::Late(TIMEOUT * 3)]);
    receiver.script("refusing", &[Answer::Status(400)]);
    let mut alice = Client::connect(h.edge(0), "alice").await;
    for name in ["flaky", "slow", "refusing"] {
        room(&h, name, &["alice", "bob"]).await;
        alice.join(name, None).await;
        alice.say(name, &format!("{name}-1"), "are you there?").await;
    }

    // 500, 503, then 200: three tries of one request, one key.
    let flaky = requests(&receiver, "flaky", 3).await;
    assert_eq!(flaky.len(), 3, "{flaky:?}");
    assert!(flaky.iter().all(|r| r.key == flaky[0].key && r.signed && r.body == flaky[0].body), "{flaky:?}");
    // No answer within the timeout: tried again, same key.
    let slow = requests(&receiver, "slow", 2).await;
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert_eq!(slow[0].key, slow[1].key);
    // 400: not tried again, but kept in the dead-letter topic.
    let refused = requests(&receiver, "refusing", 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let record = tokio::time::timeout(Duration::from_secs(20), dead_letters.recv()).await.unwrap().unwrap();
    assert_eq!(header_str(&record, SCHEMA), Some("notification.v1"));
    assert_eq!(header_str(&record, DLQ_REASON), Some("answered 400 Bad Request"));
    let kept: Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    assert_eq!(kept, refused[0].body);
    assert_eq!(record.key(), Some("refusing".as_bytes()));
    // The test's own Kafka client goes before the mock cluster does.
    drop(record);
    drop(dead_letters);
    h.stop().await;
}
