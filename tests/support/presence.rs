//! A member's view of who is in a room, kept from presence frames (see
//! `tests/presence.rs`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::Client;

/// A member's view of a room: `joined`'s `present`, then every `presence`
/// frame applied; and every frame, to look back at.
pub struct View {
    pub client: Client,
    room: String,
    pub users: BTreeSet<String>,
    pub frames: Vec<Value>,
}

impl View {
    pub async fn join(mut client: Client, room: &str) -> View {
        let reference = client.next_ref();
        client.send_json(json!({"type": "join", "ref": reference, "room": room, "presence": true})).await;
        let joined = client.recv_type("joined").await;
        assert_eq!(joined["ref"], reference.as_str());
        let users = names(&joined["present"]);
        assert!(users.contains(&client.user), "the joining user is among those present: {joined}");
        View { client, room: room.to_owned(), users, frames: Vec::new() }
    }

    /// Applies `presence` frames until the view is `expected`.
    pub async fn until(&mut self, expected: &[&str]) {
        let expected: BTreeSet<String> = expected.iter().map(|u| u.to_string()).collect();
        while self.users != expected {
            let frame = self.client.recv_type("presence").await;
            if frame["room"] != self.room.as_str() {
                continue;
            }
            let (joined, left) = (names(&frame["joined"]), names(&frame["left"]));
            assert!(joined.is_disjoint(&left), "{frame}");
            self.users.extend(joined);
            self.users.retain(|u| !left.contains(u));
            self.frames.push(frame);
        }
    }

    /// Asserts that the view does not change for `quiet`: it has settled,
    /// not just passed through the expected state. (A frame that repeats
    /// what the view has, as the protocol allows around a join, is no change.)
    pub async fn stays_for(&mut self, quiet: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.client.recv_type("presence")).await {
            if frame["room"] != self.room.as_str() {
                continue;
            }
            let (joined, left) = (names(&frame["joined"]), names(&frame["left"]));
            assert!(
                joined.is_subset(&self.users) && left.is_disjoint(&self.users),
                "{} saw presence change again at {:?}: {frame}",
                self.client.user,
                self.users
            );
            self.frames.push(frame);
        }
    }

    /// How many frames had `user` in `left`.
    pub fn leaves(&self, user: &str) -> usize {
        self.frames.iter().filter(|f| names(&f["left"]).contains(user)).count()
    }
}

pub fn names(list: &Value) -> BTreeSet<String> {
    list.as_array().expect("a list of users").iter().map(|u| u.as_str().unwrap().to_owned()).collect()
}
