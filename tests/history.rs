//! Paged history, from the client's side: the socket's `history` frame and
//! `GET /v1/rooms/{room}/messages`, newest first, paged with `before`,
//! bounded, under the same permission as `join`.

mod support;

use serde_json::{Value, json};
use support::{Client, http, seqs, start, token};
use switchboard_edge::history::page;

/// Sends `n` messages to `room` as `user` on edge 0 and waits for their acks.
async fn fill(addr: std::net::SocketAddr, user: &str, room: &str, n: usize, body: &str) {
    let mut sender = Client::in_room(addr, user, room).await;
    for i in 0..n {
        sender.say(room, &format!("{user}-{i}"), body).await;
    }
    // The last one is stored once it comes back.
    let last = sender.messages(room, n).await;
    assert_eq!(last.len(), n);
}

async fn history(client: &mut Client, room: &str, before: Option<u64>, limit: Option<u32>) -> Value {
    let reference = client.next_ref();
    let mut frame = json!({"type": "history", "ref": reference, "room": room});
    if let Some(before) = before {
        frame["before_seq"] = json!(before);
    }
    if let Some(limit) = limit {
        frame["limit"] = json!(limit);
    }
    client.send_json(frame).await;
    loop {
        let reply = client.recv().await;
        if reply["ref"] == reference.as_str() {
            return reply;
        }
    }
}

fn page_seqs(page: &Value) -> Vec<u64> {
    seqs(page["messages"].as_array().expect("messages"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pages_back_through_a_room_it_has_not_joined() {
    let h = start().await;
    fill(h.edge(0), "alice", "lobby", 7, "hello").await;
    let mut bob = Client::connect(h.edge(1), "bob").await;

    let newest = history(&mut bob, "lobby", None, Some(3)).await;
    assert_eq!(newest["type"], "history", "{newest}");
    assert_eq!(page_seqs(&newest), [7, 6, 5]);
    assert_eq!(newest["has_more"], true);
    assert_eq!(newest["epoch"], 1);
    assert_eq!(newest["messages"][0]["body"], "hello");
    assert_eq!(newest["messages"][0]["sender"], "alice");

    let older = history(&mut bob, "lobby", Some(5), None).await;
    assert_eq!(page_seqs(&older), [4, 3, 2, 1]);
    assert_eq!(older["has_more"], false);
    let none = history(&mut bob, "lobby", Some(1), None).await;
    assert_eq!(page_seqs(&none), Vec::<u64>::new());

    // Asking is not joining: no live message of the room reaches bob.
    fill(h.edge(0), "carol", "lobby", 1, "later").await;
    let pong_ref = bob.next_ref();
    bob.send_json(json!({"type": "ping", "ref": pong_ref})).await;
    let next = bob.recv().await;
    assert_eq!(next["type"], "pong", "nothing of the room before the pong: {next}");

    for (frame, code) in [
        (json!({"type": "history", "ref": "z", "room": "lobby", "limit": 0}), "invalid_frame"),
        (json!({"type": "history", "ref": "z", "room": "no spaces"}), "invalid_room"),
        (json!({"type": "history", "ref": "z", "room": "lobby", "limit": -1}), "invalid_frame"),
        (json!({"type": "history", "ref": "z", "room": "lobby", "from": 3}), "invalid_frame"),
    ] {
        bob.send_json(frame.clone()).await;
        let error = bob.recv().await;
        assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some(code)), "{frame}: {error}");
        assert_eq!(error["ref"], "z");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_room_s_history_is_for_its_members_only() {
    let h = start().await;
    let create = json!({"room": "staff", "kind": "private", "members": ["alice"]});
    h.room_command("POST", "/v1/rooms", Some(create)).await;
    fill(h.edge(0), "alice", "staff", 2, "internal").await;
    let mut eve = Client::connect(h.edge(0), "eve").await;
    let refused = history(&mut eve, "staff", None, None).await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("forbidden")), "{refused}");
    let mut alice = Client::connect(h.edge(1), "alice").await;
    assert_eq!(page_seqs(&history(&mut alice, "staff", None, None).await), [2, 1]);

    let path = "/v1/rooms/staff/messages";
    let auth = |user: &str| format!("Bearer {}", token(user));
    let (status, body) = http(h.edge(0), "GET", path, &[("Authorization", &auth("eve"))], "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "forbidden");
    let (status, _) = http(h.edge(0), "GET", path, &[], "").await;
    assert_eq!(status, 401);
    let (status, _) = http(h.edge(0), "GET", path, &[("Authorization", "Bearer not-a-token")], "").await;
    assert_eq!(status, 401);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_history_pages_like_the_socket() {
    let h = start().await;
    fill(h.edge(0), "alice", "lobby", 5, "hi").await;
    let auth = format!("Bearer {}", token("bob"));
    let get = async |query: &str| {
        let (status, body) =
            http(h.edge(1), "GET", &format!("/v1/rooms/lobby/messages{query}"), &[("Authorization", &auth)], "").await;
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)))
    };
    let (status, page) = get("?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page_seqs(&page), page["has_more"].clone()), (vec![5, 4], json!(true)));
    assert_eq!(page["room"], "lobby");
    let (_, page) = get("?before=4&limit=100").await;
    assert_eq!((page_seqs(&page), page["has_more"].clone()), (vec![3, 2, 1], json!(false)));
    let (_, page) = get("").await;
    assert_eq!(page_seqs(&page), [5, 4, 3, 2, 1]);
    for (query, status) in [("?before=x", 400), ("?limit=0", 400), ("?after=1", 400)] {
        let (got, body) = get(query).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    let (status, body) = http(h.edge(1), "GET", "/v1/rooms/bad%20room/messages", &[("Authorization", &auth)], "").await;
    assert_eq!(status, 400, "{body}");
    h.stop().await;
}

/// A page of large messages stops early once its encoded messages pass the
/// byte bound (the socket passes half the connection's send queue, so asking
/// for history never gets a client closed as slow), and paging on still
/// yields every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_messages_stops_at_the_byte_bound() {
    let h = start().await;
    let body = "x".repeat(4_000);
    fill(h.edge(0), "alice", "big", 16, &body).await;
    let store = &h.embedded.store;
    let first = page(store, "bob", "big", None, Some(100), 20 * 1024).await.unwrap();
    let seqs = |p: &switchboard_edge::history::Page| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&first), [16, 15, 14, 13], "four messages of ~4.2 KB encoded fit in 20 KiB, the fifth does not");
    assert!(first.has_more);
    let mut all = seqs(&first);
    while all.last() != Some(&1) {
        let next = page(store, "bob", "big", all.last().copied(), Some(100), 20 * 1024).await.unwrap();
        assert!(!next.messages.is_empty());
        all.extend(seqs(&next));
    }
    assert_eq!(all, (1..=16).rev().collect::<Vec<_>>());
    // A bound smaller than one message still returns that one.
    let one = page(store, "bob", "big", None, None, 10).await.unwrap();
    assert_eq!((seqs(&one), one.has_more), (vec![16], true));
    h.stop().await;
}
