//! The node-local registry: which connections are in which room, the last seq
//! each of them has been sent, and how many connections each user holds.
//!
//! The first local member of a room and the last one leaving are announced
//! as route changes (in order, through one channel) to the task that writes
//! `sb.routes`; a user's first connection in a room and their last one
//! leaving, to presence (see `crate::presence`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::outbox::Outbox;
use crate::presence::Presence;

/// A change of this node's interest in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// First local member joined.
    Add(String),
    /// Last local member left.
    Remove(String),
}

struct Member {
    outbox: Outbox,
    user: Arc<str>,
    /// Highest seq this connection has been sent (or told about in `joined`).
    last_seq: u64,
    /// The room's epoch this connection knows (from `joined` or a `reset`).
    epoch: u64,
    /// It joined with `presence: true`: it gets `presence` frames.
    presence: bool,
}

/// A room's local members.
#[derive(Default)]
struct Members {
    conns: HashMap<u64, Member>,
    /// Connections per user in the room, so presence hears of a user's
    /// first and last one without a walk over the room.
    users: HashMap<Arc<str>, usize>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Members>,
    conns: HashMap<u64, Outbox>,
    users: HashMap<Arc<str>, usize>,
}

pub struct Hub {
    state: Mutex<State>,
    routes: mpsc::UnboundedSender<RouteChange>,
    presence: Arc<Presence>,
}

/// Holds one of a user's connection slots; frees it when dropped.
pub struct UserSlot {
    hub: Arc<Hub>,
    user: Arc<str>,
}

impl UserSlot {
    /// The user, shared: the session, the slot and the hub's entries for
    /// the connection (its rooms' members, the counts) all hold this one
    /// copy of the name rather than a string each.
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(count) = state.users.get_mut(&*self.user) {
            *count -= 1;
            if *count == 0 {
                state.users.remove(&*self.user);
            }
        }
    }
}

impl Hub {
    pub fn new(presence: Arc<Presence>) -> (Arc<Self>, mpsc::UnboundedReceiver<RouteChange>) {
        let (routes, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { state: Mutex::default(), routes, presence }), rx)
    }

    /// Takes `conn` out of `room`'s members; the room goes, with a route
    /// removal, once it has none. Returns false if `conn` was not a member.
    fn remove_member(&self, state: &mut State, room: &str, conn: u64) -> bool {
        let Some(members) = state.rooms.get_mut(room) else { return false };
        let Some(member) = members.conns.remove(&conn) else { return false };
        if let Some(count) = members.users.get_mut(&member.user) {
            *count -= 1;
            if *count == 0 {
                members.users.remove(&member.user);
                self.presence.local_left(room, &member.user);
            }
        }
        if members.conns.is_empty() {
            state.rooms.remove(room);
            let _ = self.routes.send(RouteChange::Remove(room.to_owned()));
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug; keep serving with the data as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection slot for `user`, or `None` at the cap.
    pub fn reserve_user(self: &Arc<Self>, user: &Arc<str>, cap: usize) -> Option<UserSlot> {
        let mut state = self.lock();
        let count = state.users.entry(user.clone()).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(UserSlot { hub: self.clone(), user: user.clone() })
    }

    pub fn register(&self, conn: u64, outbox: Outbox) {
        self.lock().conns.insert(conn, outbox);
    }

    /// Removes a closed connection from `rooms`, the rooms its session is
    /// in. Only those: walking every room of the node per close made a mass
    /// disconnect quadratic, under the lock that delivery needs; the session
    /// already knows its rooms, so the hub keeps no second copy.
    pub fn unregister<'r>(&self, conn: u64, rooms: impl IntoIterator<Item = &'r String>) {
        let mut state = self.lock();
        state.conns.remove(&conn);
        for room in rooms {
            self.remove_member(&mut state, room, conn);
        }
    }

    /// Adds `conn` to `room`'s live stream; it has been sent every message
    /// up to `last_seq` (the session queued its `joined` reply and replay
    /// before this, so no live message overtakes them).
    pub fn join(&self, room: &str, conn: u64, user: &Arc<str>, outbox: &Outbox, last_seq: u64, epoch: u64) {
        let mut state = self.lock();
        let members = state.rooms.entry(room.to_owned()).or_default();
        if members.conns.is_empty() {
            let _ = self.routes.send(RouteChange::Add(room.to_owned()));
        }
        let member = Member { outbox: outbox.clone(), user: user.clone(), last_seq, epoch, presence: false };
        if members.conns.insert(conn, member).is_some() {
            return; // joined already: counted already
        }
        let count = members.users.entry(user.clone()).or_default();
        *count += 1;
        if *count == 1 {
            self.presence.local_joined(room, user);
        }
    }

    /// `conn` asked to be told who comes into `room` and goes.
    pub fn watch_presence(&self, room: &str, conn: u64) {
        if let Some(member) = self.lock().rooms.get_mut(room).and_then(|m| m.conns.get_mut(&conn)) {
            member.presence = true;
        }
    }

    /// Queues a `presence` frame to the members of `room` that asked for
    /// them. Returns how many connections it was queued for.
    pub fn deliver_presence(&self, room: &str, frame: &Utf8Bytes) -> usize {
        self.push_to(room, frame, |m| m.presence)
    }

    /// Whether any local connection of `user` is in `room`.
    pub fn has_user(&self, room: &str, user: &str) -> bool {
        self.lock().rooms.get(room).is_some_and(|m| m.users.contains_key(user))
    }

    /// Takes every connection of `user` out of `room` and queues `frame`
    /// (their `removed`) to each. Returns how many there were.
    pub fn remove_user(&self, room: &str, user: &str, frame: &Utf8Bytes) -> usize {
        let mut state = self.lock();
        let Some(members) = state.rooms.get(room) else { return 0 };
        let mut conns = Vec::new();
        for (conn, member) in members.conns.iter().filter(|(_, m)| *m.user == *user) {
            member.outbox.push(frame.clone());
            conns.push(*conn);
        }
        for conn in &conns {
            self.remove_member(&mut state, room, *conn);
        }
        conns.len()
    }

    /// The room's history was reset to `epoch`: members that knew an older
    /// epoch get `frame` (their `reset`) and take the new epoch's messages
    /// from seq 1. Members that joined in `epoch` already are left alone, so
    /// the same reset delivered twice is told once.
    pub fn reset(&self, room: &str, epoch: u64, frame: &Utf8Bytes) -> usize {
        let mut state = self.lock();
        let Some(members) = state.rooms.get_mut(room) else { return 0 };
        let mut told = 0;
        for member in members.conns.values_mut().filter(|m| m.epoch < epoch) {
            member.epoch = epoch;
            member.last_seq = 0;
            member.outbox.push(frame.clone());
            told += 1;
        }
        told
    }

    /// Removes `conn` from `room`; returns false if it was not a member.
    pub fn leave(&self, room: &str, conn: u64) -> bool {
        let mut state = self.lock();
        self.remove_member(&mut state, room, conn)
    }

    /// The lowest seq any local member of `room` has been sent, if the room
    /// has local members. A message with seq above this + 1 reveals a gap.
    pub fn lowest_seq(&self, room: &str) -> Option<u64> {
        self.lock().rooms.get(room).and_then(|m| m.conns.values().map(|m| m.last_seq).min())
    }

    /// Pushes a message to every member of `room` that has not had `seq`
    /// yet. Returns how many connections it was queued for.
    pub fn deliver(&self, room: &str, seq: u64, frame: &Utf8Bytes) -> usize {
        let mut state = self.lock();
        let Some(members) = state.rooms.get_mut(room) else { return 0 };
        let mut sent = 0;
        for member in members.conns.values_mut() {
            if member.last_seq < seq {
                member.last_seq = seq;
                if member.outbox.push(frame.clone()) {
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Pushes a frame that is not a message (typing, read positions) to
    /// every member of `room`, except `except_user`'s own connections if
    /// given. Returns how many connections it was queued for.
    pub fn deliver_ephemeral(&self, room: &str, except_user: Option<&str>, frame: &Utf8Bytes) -> usize {
        self.push_to(room, frame, |m| except_user != Some(&*m.user))
    }

    /// Queues `frame` to the members of `room` that `pick` takes; returns how many.
    fn push_to(&self, room: &str, frame: &Utf8Bytes, pick: impl Fn(&Member) -> bool) -> usize {
        let state = self.lock();
        let Some(members) = state.rooms.get(room) else { return 0 };
        members.conns.values().filter(|m| pick(m)).map(|m| usize::from(m.outbox.push(frame.clone()))).sum()
    }

    /// Pushes a frame to one connection, if it is still here.
    pub fn send_to(&self, conn: u64, frame: Utf8Bytes) -> bool {
        self.lock().conns.get(&conn).is_some_and(|outbox| outbox.push(frame))
    }

    pub fn is_member(&self, room: &str, conn: u64) -> bool {
        self.lock().rooms.get(room).is_some_and(|m| m.conns.contains_key(&conn))
    }

    /// Rooms with local members.
    pub fn rooms(&self) -> Vec<String> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Every open connection's outbox (for draining).
    pub fn outboxes(&self) -> Vec<Outbox> {
        self.lock().conns.values().cloned().collect()
    }

    /// Calls `visit` with the outboxes of up to `count` connections, from
    /// the `from`th on (in the registry's order, which a connection coming
    /// or going between two calls may change: one may be seen twice or not
    /// at all in a walk), under the hub's lock; `visit` must be quick and
    /// must not call back into the hub. Returns how many it visited.
    pub fn visit_outboxes(&self, from: usize, count: usize, mut visit: impl FnMut(&Outbox)) -> usize {
        let state = self.lock();
        let mut visited = 0;
        for outbox in state.conns.values().skip(from).take(count) {
            visit(outbox);
            visited += 1;
        }
        visited
    }

    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_follow_first_join_and_last_leave() {
        let (hub, mut routes) = Hub::new(Presence::new("n", std::time::Duration::from_secs(10)));
        let (a, _ra) = Outbox::new(8, 1 << 16);
        let (b, _rb) = Outbox::new(8, 1 << 16);
        hub.register(1, a.clone());
        hub.register(2, b.clone());
        hub.join("r", 1, &"alice".into(), &a, 0, 1);
        hub.join("r", 2, &"bob".into(), &b, 0, 1);
        assert_eq!(routes.recv().await, Some(RouteChange::Add("r".into())));
        assert!(hub.leave("r", 1));
        assert!(routes.try_recv().is_err(), "bob is still there");
        hub.unregister(2, &["r".to_owned()]);
        assert_eq!(routes.recv().await, Some(RouteChange::Remove("r".into())));
        assert!(hub.rooms().is_empty());
    }

    #[tokio::test]
    async fn delivery_skips_what_a_member_already_has() {
        let (hub, _routes) = Hub::new(Presence::new("n", std::time::Duration::from_secs(10)));
        let (a, ra) = Outbox::new(8, 1 << 16);
        let (b, rb) = Outbox::new(8, 1 << 16);
        hub.join("r", 1, &"alice".into(), &a, 3, 1);
        hub.join("r", 2, &"bob".into(), &b, 5, 1);
        assert_eq!(hub.lowest_seq("r"), Some(3));
        assert_eq!(hub.deliver("r", 4, &"m4".into()), 1);
        assert_eq!(hub.deliver("r", 5, &"m5".into()), 1);
        assert_eq!(hub.deliver("r", 6, &"m6".into()), 2);
        assert_eq!(hub.deliver("r", 6, &"m6".into()), 0, "duplicates are dropped");
        assert_eq!(ra.recv_text().await.as_deref(), Some("m4"));
        assert_eq!(ra.recv_text().await.as_deref(), Some("m5"));
        assert_eq!(ra.recv_text().await.as_deref(), Some("m6"));
        assert_eq!(rb.recv_text().await.as_deref(), Some("m6"));
    }

    #[tokio::test]
    async fn closing_a_connection_leaves_each_of_its_rooms() {
        let (hub, mut routes) = Hub::new(Presence::new("n", std::time::Duration::from_secs(10)));
        let (a, _ra) = Outbox::new(8, 1 << 16);
        let (b, _rb) = Outbox::new(8, 1 << 16);
        hub.register(1, a.clone());
        hub.register(2, b.clone());
        hub.join("alone", 1, &"alice".into(), &a, 0, 1);
        hub.join("shared", 1, &"alice".into(), &a, 0, 1);
        hub.join("shared", 2, &"bob".into(), &b, 0, 1);
        hub.join("left", 1, &"alice".into(), &a, 0, 1);
        assert!(hub.leave("left", 1));
        let added: Vec<_> = (0..3).map(|_| routes.try_recv().unwrap()).collect();
        assert_eq!(added, ["alone", "shared", "left"].map(|r| RouteChange::Add(r.into())));
        assert_eq!(routes.try_recv().unwrap(), RouteChange::Remove("left".into()));

        // The session passes the rooms it is still in.
        hub.unregister(1, &["alone".to_owned(), "shared".to_owned()]);
        assert_eq!(routes.try_recv().unwrap(), RouteChange::Remove("alone".into()));
        assert!(routes.try_recv().is_err(), "bob keeps the shared room, and 'left' was already gone");
        assert!(!hub.is_member("shared", 1));
        assert!(hub.is_member("shared", 2));
        assert_eq!(hub.rooms(), vec!["shared".to_owned()]);
        assert_eq!(hub.deliver("shared", 1, &"m1".into()), 1);
        hub.unregister(1, &["alone".to_owned(), "shared".to_owned()]); // closing twice is harmless
        assert!(routes.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_removed_user_leaves_with_every_connection_and_a_reset_is_told_once() {
        let (hub, mut routes) = Hub::new(Presence::new("n", std::time::Duration::from_secs(10)));
        let (a1, ra1) = Outbox::new(8, 1 << 16);
        let (a2, ra2) = Outbox::new(8, 1 << 16);
        let (b, rb) = Outbox::new(8, 1 << 16);
        hub.join("r", 1, &"alice".into(), &a1, 4, 1);
        hub.join("r", 2, &"alice".into(), &a2, 4, 1);
        hub.join("r", 3, &"bob".into(), &b, 4, 1);
        assert_eq!(routes.try_recv().unwrap(), RouteChange::Add("r".into()));
        assert!(hub.has_user("r", "alice"));
        assert_eq!(hub.remove_user("r", "alice", &"removed".into()), 2);
        assert!(!hub.has_user("r", "alice") && !hub.is_member("r", 1) && !hub.is_member("r", 2));
        assert_eq!(ra1.recv_text().await.as_deref(), Some("removed"));
        assert_eq!(ra2.recv_text().await.as_deref(), Some("removed"));
        assert_eq!(hub.deliver("r", 5, &"m5".into()), 1, "only bob is left");
        assert!(routes.try_recv().is_err(), "bob keeps the route");

        assert_eq!(hub.reset("r", 2, &"reset".into()), 1);
        assert_eq!(hub.reset("r", 2, &"reset".into()), 0, "told once");
        assert_eq!(hub.deliver("r", 1, &"new1".into()), 1, "the new epoch starts at seq 1");
        let got: Vec<_> =
            [rb.recv_text().await, rb.recv_text().await, rb.recv_text().await].into_iter().flatten().collect();
        assert_eq!(got, ["m5", "reset", "new1"]);
        assert_eq!(hub.remove_user("r", "bob", &"removed".into()), 1);
        assert_eq!(routes.try_recv().unwrap(), RouteChange::Remove("r".into()));
    }

    #[test]
    fn presence_hears_of_a_users_first_connection_in_a_room_and_their_last() {
        let presence = Presence::new("n", std::time::Duration::from_secs(10));
        let (hub, _routes) = Hub::new(presence.clone());
        let (a1, _r1) = Outbox::new(8, 1 << 16);
        let (a2, _r2) = Outbox::new(8, 1 << 16);
        let (b, _rb) = Outbox::new(8, 1 << 16);
        hub.join("r", 1, &"alice".into(), &a1, 0, 1);
        hub.join("r", 2, &"alice".into(), &a2, 0, 1);
        hub.join("r", 3, &"bob".into(), &b, 0, 1);
        assert_eq!(presence.present("r"), ["alice", "bob"]);
        assert!(hub.leave("r", 1));
        assert_eq!(presence.present("r"), ["alice", "bob"], "alice's second tab is still in");
        hub.unregister(2, &["r".to_owned()]);
        assert_eq!(presence.present("r"), ["bob"]);
        assert_eq!(hub.remove_user("r", "bob", &"removed".into()), 1);
        assert!(presence.present("r").is_empty());
    }

    #[tokio::test]
    async fn presence_frames_go_to_the_members_that_asked() {
        let (hub, _routes) = Hub::new(Presence::new("n", std::time::Duration::from_secs(10)));
        let (a, ra) = Outbox::new(8, 1 << 16);
        let (b, rb) = Outbox::new(8, 1 << 16);
        hub.join("r", 1, &"alice".into(), &a, 0, 1);
        hub.join("r", 2, &"bob".into(), &b, 0, 1);
        hub.watch_presence("r", 2);
        assert_eq!(hub.deliver_presence("r", &"p".into()), 1);
        assert_eq!(hub.deliver_ephemeral("r", None, &"t".into()), 2);
        assert_eq!(rb.recv_text().await.as_deref(), Some("p"));
        assert_eq!(ra.recv_text().await.as_deref(), Some("t"), "alice never got the presence frame");
    }

    #[test]
    fn user_slots_are_capped_and_released() {
        let (hub, _routes) = Hub::new(Presence::new("n", std::time::Duration::from_secs(10)));
        let first = hub.reserve_user(&"u".into(), 2).unwrap();
        let _second = hub.reserve_user(&"u".into(), 2).unwrap();
        assert!(hub.reserve_user(&"u".into(), 2).is_none());
        drop(first);
        assert!(hub.reserve_user(&"u".into(), 2).is_some());
    }
}
