//! Presence, from the client's side: `join` with `presence: true` answers
//! who is there, `presence {room, joined, left}` frames keep every member's
//! view of the room current across edges, a user with two tabs is there
//! once, and a user that an edge stops naming (the edge died) is dropped.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::json;
use support::presence::View;
use support::{Client, start_with};
use switchboard_core::kafka::record_headers;
use switchboard_core::producer::KafkaProducer;
use switchboard_edge::config::EdgeConfig;
use switchboard_schemas::envelope::{EVENT_V1, Event, PresenceUpdate};

const INTERVAL: Duration = Duration::from_millis(100);
const REFRESH: Duration = Duration::from_millis(600);

fn quick_presence(config: &mut EdgeConfig) {
    config.presence_interval = INTERVAL;
    config.presence_refresh = REFRESH;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_who_comes_and_goes_across_edges_and_two_tabs_count_once() {
    let h = start_with(quick_presence).await;
    let mut alice = View::join(Client::connect(h.edge(0), "alice").await, "lobby").await;
    assert_eq!(alice.users, BTreeSet::from(["alice".to_owned()]));
    let mut bob = View::join(Client::connect(h.edge(1), "bob").await, "lobby").await;
    // Bob's edge has just got the room: it learns alice from edge 0's answer.
    bob.until(&["alice", "bob"]).await;
    alice.until(&["alice", "bob"]).await;

    // Alice's second tab, on bob's edge. Carol joins there after it, and
    // once alice's first tab sees carol, edge 0 has had edge 1's word on
    // alice too (one edge's records of a room stay in order).
    let mut tab = View::join(Client::connect(h.edge(1), "alice").await, "lobby").await;
    tab.until(&["alice", "bob"]).await;
    let mut carol = View::join(Client::connect(h.edge(1), "carol").await, "lobby").await;
    alice.until(&["alice", "bob", "carol"]).await;
    // Her first tab closes: she is still there, and nobody is told otherwise.
    drop(alice);
    for view in [&mut bob, &mut tab, &mut carol] {
        view.until(&["alice", "bob", "carol"]).await;
    }
    let mut erin = View::join(Client::connect(h.edge(0), "erin").await, "lobby").await;
    for view in [&mut bob, &mut carol, &mut erin] {
        view.until(&["alice", "bob", "carol", "erin"]).await;
    }

    // Her last tab leaves the room: gone for everyone.
    let reference = tab.client.next_ref();
    tab.client.send_json(json!({"type": "leave", "ref": reference, "room": "lobby"})).await;
    tab.client.recv_type("left").await;
    for view in [&mut bob, &mut carol, &mut erin] {
        view.until(&["bob", "carol", "erin"]).await;
    }
    for view in [&bob, &carol, &erin] {
        assert_eq!(view.leaves("alice"), 1, "only her last tab's leave: {:?}", view.frames);
    }

    // A join without the flag gets no list.
    let mut dave = Client::connect(h.edge(0), "dave").await;
    let joined = dave.join("lobby", None).await;
    assert!(joined.get("present").is_none(), "{joined}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_an_edge_stops_naming_is_reported_gone() {
    let h = start_with(quick_presence).await;
    let mut alice = View::join(Client::connect(h.edge(0), "alice").await, "hall").await;

    // An edge that names a user and then dies (nothing more from it). Its
    // record is sent again until alice hears of it: one sent before edge
    // 0's route for the room reached the router would go nowhere.
    let producer: KafkaProducer = h.embedded.kafka.producer().unwrap();
    let event = Event::Presence(PresenceUpdate {
        room: "hall".into(),
        node: "dead-edge".into(),
        here: vec!["ghost".into()],
        left: Vec::new(),
        sync: false,
    });
    let topic = h.embedded.topics.ephemeral();
    let last_named = Arc::new(Mutex::new(std::time::Instant::now()));
    let naming = {
        let last_named = last_named.clone();
        tokio::spawn(async move {
            loop {
                let payload = event.to_json();
                let record = FutureRecord::to(&topic)
                    .key("hall")
                    .payload(payload.as_slice())
                    .headers(record_headers(EVENT_V1, None));
                producer.send(record, Timeout::Never).await.unwrap();
                *last_named.lock().unwrap() = std::time::Instant::now();
                tokio::time::sleep(INTERVAL * 2).await;
            }
        })
    };
    alice.until(&["alice", "ghost"]).await;
    naming.abort();
    let _ = naming.await;
    alice.until(&["alice"]).await;
    // Three refreshes without being named; noticed within a quarter of one
    // and told within an interval (2.05 s here), with room for a busy machine.
    let gone_after = last_named.lock().unwrap().elapsed();
    assert!(gone_after >= REFRESH * 3, "dropped after {gone_after:?}");
    assert!(gone_after < REFRESH * 4 + Duration::from_secs(5), "dropped only after {gone_after:?}");
    h.stop().await;
}
