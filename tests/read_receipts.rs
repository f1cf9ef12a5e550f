//! Read positions, from the client's side: `read {room, seq}` moves the
//! user's position forward only, reaches the room's members and the user's
//! other connections as `read {room, user, seq}` (merged to about one a
//! second per connection), comes back in `joined` with the unread count,
//! survives in the store, and a history reset clears it.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, start};

async fn read(client: &mut Client, room: &str, seq: u64) {
    let reference = client.next_ref();
    client.send_json(json!({"type": "read", "ref": reference, "room": room, "seq": seq})).await;
}

/// The next `read` frame of `room`; other frames stay buffered.
async fn read_frame(client: &mut Client, room: &str) -> Value {
    loop {
        let frame = client.recv_type("read").await;
        if frame["room"] == room {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_position_reaches_the_room_and_comes_back_in_joined() {
    let h = start().await;
    let mut alice = Client::in_room(h.edge(0), "alice", "lobby").await;
    let mut bob = Client::in_room(h.edge(1), "bob", "lobby").await;
    let mut bob_phone = Client::in_room(h.edge(0), "bob", "lobby").await;
    for i in 0..5 {
        alice.say("lobby", &format!("m{i}"), "hello").await;
    }
    for client in [&mut alice, &mut bob, &mut bob_phone] {
        client.messages("lobby", 5).await;
    }

    read(&mut bob, "lobby", 2).await;
    for client in [&mut alice, &mut bob, &mut bob_phone] {
        let frame = read_frame(client, "lobby").await;
        assert_eq!(frame, json!({"type": "read", "room": "lobby", "user": "bob", "seq": 2}));
    }
    // Reads inside the window merge into one position, the highest; one
    // that goes back changes nothing.
    read(&mut bob, "lobby", 3).await;
    read(&mut bob, "lobby", 1).await;
    read(&mut bob, "lobby", 4).await;
    for client in [&mut alice, &mut bob, &mut bob_phone] {
        assert_eq!(read_frame(client, "lobby").await["seq"], 4);
    }
    // A position past the room's end counts as its end.
    read(&mut bob_phone, "lobby", 99).await;
    assert_eq!(read_frame(&mut alice, "lobby").await["seq"], 5);

    alice.say("lobby", "m5", "one more").await;
    // Stored once it comes back.
    let m5 = alice.messages("lobby", 1).await;
    assert_eq!(m5.last().unwrap()["seq"], 6, "{m5:?}");
    let mut laptop = Client::connect(h.edge(1), "bob").await;
    let joined = laptop.join("lobby", None).await;
    assert_eq!(
        (joined["last_seq"].clone(), joined["read_seq"].clone(), joined["unread"].clone()),
        (json!(6), json!(5), json!(1))
    );
    let mut carol = Client::connect(h.edge(1), "carol").await;
    let joined = carol.join("lobby", None).await;
    assert_eq!((joined["read_seq"].clone(), joined["unread"].clone()), (json!(0), json!(6)), "nothing read yet");

    // Only in a joined room.
    let reference = carol.next_ref();
    carol.send_json(json!({"type": "read", "ref": reference, "room": "elsewhere", "seq": 1})).await;
    let error = carol.recv_type("error").await;
    assert_eq!((error["code"].as_str(), error["ref"].as_str()), (Some("not_joined"), Some(reference.as_str())));
    h.stop().await;
}

/// The position is stored by the persister, so it outlives every
/// connection; a position told just before closing is not lost to the
/// window; a history reset starts the room's positions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_position_is_stored_sent_at_close_and_cleared_by_a_reset() {
    let h = start().await;
    let mut alice = Client::in_room(h.edge(0), "alice", "news").await;
    for i in 0..4 {
        alice.say("news", &format!("n{i}"), "headline").await;
    }
    alice.messages("news", 4).await;
    read(&mut alice, "news", 1).await;
    assert_eq!(read_frame(&mut alice, "news").await["seq"], 1);
    // Inside the window, then the connection closes at once.
    read(&mut alice, "news", 3).await;
    drop(alice);
    let store = &h.embedded.store;
    support::eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
        match store.read_position("news", "alice").await {
            Ok(3) => Ok(()),
            other => Err(format!("alice's position: {other:?}")),
        }
    })
    .await;

    h.room_command("POST", "/v1/rooms/news/reset", None).await;
    assert_eq!(store.read_position("news", "alice").await.unwrap(), 0);
    let mut again = Client::connect(h.edge(1), "alice").await;
    let joined = again.join("news", None).await;
    assert_eq!(
        (joined["last_seq"].clone(), joined["read_seq"].clone(), joined["unread"].clone()),
        (json!(0), json!(0), json!(0))
    );
    h.stop().await;
}
