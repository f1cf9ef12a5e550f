//! Presence: who is in each room, across every edge, told to the room's
//! members as `presence {room, joined, left}`.
//!
//! A user is in a room while at least one of their connections, on any
//! edge, has joined it. Each edge knows its own users from the hub (it is
//! told when a user's first connection joins a room and when the last one
//! leaves) and learns the others' from `sb.ephemeral`, where every edge
//! writes, keyed by room, what changed ([`PresenceUpdate`]); routers carry
//! those records to the edges with members in the room, like typing
//! notices. Nothing of it is stored or replayed.
//!
//! Bounded cost, whatever the churn: the changes of one presence interval
//! go out as at most one record per room (plus its refresh, below) and at
//! most one `presence` frame per member and room, encoded once per room.
//!
//! Nothing stays "online" forever: each edge names every user it has again
//! at every refresh, and a user no other edge has named within three
//! refreshes is dropped (its edge was SIGKILLed, or lost Kafka for a while,
//! or records were lost; see `switchboard_core::presence`). The clock that
//! ages them is the stream's, not the wall's: an edge hears its own records
//! back at every refresh, so a room it has heard nothing of for longer than
//! that means this edge was the one cut off (Kafka unreachable, a stalled
//! consumer). It then drops nobody, and once it hears again it gives every
//! other edge a full TTL to be heard too, so a network hiccup does not
//! make users flicker out and back in. An edge that gets its first
//! member of a room knows nobody there yet: its first record asks the
//! others (`sync`), and they answer with everyone they have.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use switchboard_core::clock::now_ms;
use switchboard_core::presence::{Roster, ttl_ms};
use switchboard_core::producer::KafkaProducer;
use switchboard_schemas::envelope::{Event, PresenceUpdate};
use switchboard_schemas::protocol::ServerFrame;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::EdgeEvents;
use crate::hub::Hub;
use crate::publish;

/// Most users named in one record; a refresh of a bigger room goes in parts.
const USERS_PER_RECORD: usize = 1_000;

/// Who is in which room: this node's own users, and those other edges named.
pub struct Presence {
    node: String,
    /// How long a user another edge named stays without being named again (ms).
    ttl: i64,
    /// How often every edge names its users again (ms).
    refresh: i64,
    rooms: Mutex<HashMap<String, Room>>,
}

/// A room with local members (only those: the others' records are routed
/// here only while this node has members, and the room is forgotten when
/// its last local member leaves).
#[derive(Default)]
struct Room {
    /// Users with a connection in the room on this node.
    local: HashSet<Arc<str>>,
    /// Users other edges named.
    remote: Roster,
    /// Users whose presence may have changed since the members were last
    /// told, with whether they were present then.
    changed: HashMap<String, bool>,
    /// What the next record to the other edges says.
    out_here: BTreeSet<String>,
    out_left: BTreeSet<String>,
    /// Name every local user (a refresh, or the answer to a `sync`).
    out_all: bool,
    /// Ask the others for everyone they have.
    out_sync: bool,
    /// When a record of the room, this node's own included, last came (ms
    /// since the Unix epoch; 0 before the first).
    heard: i64,
}

impl Room {
    fn present(&self, user: &str) -> bool {
        self.local.contains(user) || self.remote.contains(user)
    }

    /// Remembers that `user`'s presence may change, with what it was before.
    fn touch(&mut self, user: &str) {
        if !self.changed.contains_key(user) {
            let was = self.present(user);
            self.changed.insert(user.to_owned(), was);
        }
    }

    /// The `presence` frame for what changed since the members were last told, if anything did.
    fn take_frame(&mut self, room: &str) -> Option<ServerFrame> {
        let (mut joined, mut left) = (Vec::new(), Vec::new());
        for (user, was) in std::mem::take(&mut self.changed) {
            match (was, self.present(&user)) {
                (false, true) => joined.push(user),
                (true, false) => left.push(user),
                _ => {}
            }
        }
        if joined.is_empty() && left.is_empty() {
            return None;
        }
        joined.sort_unstable();
        left.sort_unstable();
        Some(ServerFrame::Presence { room: room.to_owned(), joined, left })
    }

    /// The records for the other edges, if there is anything to tell them.
    fn take_records(&mut self, room: &str, node: &str) -> Vec<PresenceUpdate> {
        let came = std::mem::take(&mut self.out_here);
        let here: Vec<String> = if std::mem::take(&mut self.out_all) {
            let mut all: Vec<String> = self.local.iter().map(|user| user.to_string()).collect();
            all.sort_unstable();
            all
        } else {
            came.into_iter().collect()
        };
        let left: Vec<String> = std::mem::take(&mut self.out_left).into_iter().collect();
        let sync = std::mem::take(&mut self.out_sync);
        if here.is_empty() && left.is_empty() && !sync {
            return Vec::new();
        }
        let record = |here: Vec<String>, left: Vec<String>, sync| PresenceUpdate {
            room: room.to_owned(),
            node: node.to_owned(),
            here,
            left,
            sync,
        };
        // The first part says who left and asks; the others only name.
        let mut parts = here.chunks(USERS_PER_RECORD);
        let mut records = vec![record(parts.next().map(<[String]>::to_vec).unwrap_or_default(), left, sync)];
        records.extend(parts.map(|part| record(part.to_vec(), Vec::new(), false)));
        records
    }
}

/// What one presence interval produced.
#[derive(Debug, Default, PartialEq)]
pub struct Flushed {
    /// For the other edges, on `sb.ephemeral`.
    pub records: Vec<PresenceUpdate>,
    /// For each room's local members.
    pub frames: Vec<(String, ServerFrame)>,
}

impl Presence {
    pub fn new(node: &str, refresh: Duration) -> Arc<Self> {
        let refresh_ms = refresh.as_millis() as i64;
        Arc::new(Self { node: node.to_owned(), ttl: ttl_ms(refresh), refresh: refresh_ms, rooms: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // A panic while holding this lock is a bug; keep serving with the data as is.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `user`'s first connection on this node joined `room` (the hub calls it).
    /// The room keeps the hub's copy of the name, not one of its own.
    pub fn local_joined(&self, room: &str, user: &Arc<str>) {
        let mut rooms = self.lock();
        let room = rooms.entry(room.to_owned()).or_insert_with(|| Room { out_sync: true, ..Room::default() });
        room.touch(user);
        room.local.insert(user.clone());
        room.out_left.remove(&**user);
        room.out_here.insert(user.to_string());
    }

    /// `user`'s last connection on this node left `room` (the hub calls it).
    pub fn local_left(&self, room: &str, user: &str) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room) else { return };
        room.touch(user);
        room.local.remove(user);
        room.out_here.remove(user);
        room.out_left.insert(user.to_owned());
    }

    /// Applies another edge's record, come at `at` (ms since the Unix
    /// epoch); this node's own come back too, and are skipped.
    pub fn apply(&self, update: &PresenceUpdate, at: i64) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&update.room) else { return };
        // This node's own refresh comes back every refresh: a longer silence
        // was this node's, and the others get a full TTL from now.
        if room.heard > 0 && at - room.heard > self.refresh * 3 / 2 {
            room.remote.renew(at);
        }
        room.heard = room.heard.max(at);
        if update.node == self.node {
            return;
        }
        for user in update.here.iter().chain(&update.left) {
            room.touch(user);
        }
        room.remote.apply(update, at);
        if update.sync {
            room.out_all = true;
        }
    }

    /// Who is in `room` now, as this node knows it, sorted.
    pub fn present(&self, room: &str) -> Vec<String> {
        let rooms = self.lock();
        let Some(room) = rooms.get(room) else { return Vec::new() };
        let local = room.local.iter().map(|user| &**user);
        let users: BTreeSet<&str> = local.chain(room.remote.users().map(String::as_str)).collect();
        users.into_iter().map(str::to_owned).collect()
    }

    /// Names every local user again at the next flush.
    pub fn refresh(&self) {
        for room in self.lock().values_mut() {
            room.out_all = true;
        }
    }

    /// Drops the users no other edge has named within the TTL at `now`
    /// (ms since the Unix epoch); returns how many users lost an entry. A
    /// room this node has not heard of for over a refresh ages no further
    /// than a refresh past the last record (this node may be the one cut off).
    pub fn expire(&self, now: i64) -> usize {
        let mut expired = 0;
        for room in self.lock().values_mut() {
            let clock = now.min(room.heard + self.refresh);
            for user in room.remote.expire(clock, self.ttl) {
                // It was there until now, whatever it is after.
                room.changed.entry(user).or_insert(true);
                expired += 1;
            }
        }
        expired
    }

    /// Takes what this interval has for the other edges and the members,
    /// and forgets the rooms this node no longer has members in.
    pub fn flush(&self) -> Flushed {
        let mut flushed = Flushed::default();
        self.lock().retain(|id, room| {
            flushed.records.extend(room.take_records(id, &self.node));
            if room.local.is_empty() {
                return false; // nobody here to tell, and the others' records stop coming
            }
            flushed.frames.extend(room.take_frame(id).map(|frame| (id.clone(), frame)));
            true
        });
        flushed
    }
}

/// Where flushed presence goes.
pub struct PresenceTask {
    pub presence: Arc<Presence>,
    pub hub: Arc<Hub>,
    pub producer: KafkaProducer,
    pub topic: String,
    pub events: Arc<EdgeEvents>,
    pub interval: Duration,
    pub refresh: Duration,
}

impl PresenceTask {
    /// Flushes every interval, refreshes and expires on their own clocks,
    /// until `shutdown`; then flushes once more (the `left` of the
    /// connections a drain closed).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(self.interval);
        let mut refresh = tokio::time::interval_at(Instant::now() + self.refresh, self.refresh);
        // A quarter of a refresh: a gone user is dropped at most that late.
        let mut expire = tokio::time::interval(self.refresh / 4);
        for tick in [&mut flush, &mut refresh, &mut expire] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = flush.tick() => self.flush(),
                _ = refresh.tick() => self.presence.refresh(),
                _ = expire.tick() => self.events.presence_expired(self.presence.expire(now_ms())),
            }
        }
        self.flush();
    }

    fn flush(&self) {
        let Flushed { records, frames } = self.presence.flush();
        for (room, frame) in frames {
            let frame = Utf8Bytes::from(frame.to_json());
            self.events.presence_frames(self.hub.deliver_presence(&room, &frame));
        }
        for update in records {
            // Not waited for: a lost `here` is made good by the next refresh,
            // a lost `left` by the other edges dropping who they no longer
            // hear named (three refreshes), a lost `sync` by their refreshes.
            let sent = publish::ephemeral(&self.producer, &self.topic, &Event::Presence(update));
            self.events.presence_published(sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(node: &str, here: &[&str], left: &[&str], sync: bool) -> PresenceUpdate {
        PresenceUpdate {
            room: "r".into(),
            node: node.into(),
            here: here.iter().map(|u| u.to_string()).collect(),
            left: left.iter().map(|u| u.to_string()).collect(),
            sync,
        }
    }

    fn frame(joined: &[&str], left: &[&str]) -> (String, ServerFrame) {
        let list = |users: &[&str]| users.iter().map(|u| u.to_string()).collect();
        ("r".into(), ServerFrame::Presence { room: "r".into(), joined: list(joined), left: list(left) })
    }

    #[test]
    fn an_interval_goes_out_as_one_record_and_one_frame() {
        let presence = Presence::new("a", Duration::from_secs(10));
        presence.local_joined("r", &"alice".into());
        presence.local_joined("r", &"bob".into());
        presence.local_joined("r", &"carol".into());
        presence.local_left("r", "carol");
        let flushed = presence.flush();
        assert_eq!(flushed.records, vec![update("a", &["alice", "bob"], &["carol"], true)]);
        assert_eq!(flushed.frames, vec![frame(&["alice", "bob"], &[])], "carol came and went unseen");
        assert_eq!(presence.flush(), Flushed::default(), "nothing new");

        // Another edge's users; alice there too counts once.
        presence.apply(&update("b", &["alice", "dave"], &[], false), 0);
        assert_eq!(presence.present("r"), ["alice", "bob", "dave"]);
        assert_eq!(presence.flush().frames, vec![frame(&["dave"], &[])]);
        presence.local_left("r", "alice");
        let flushed = presence.flush();
        assert_eq!(flushed.records, vec![update("a", &[], &["alice"], false)]);
        assert!(flushed.frames.is_empty(), "alice is still on the other edge");
        presence.apply(&update("b", &[], &["alice"], false), 0);
        assert_eq!(presence.flush().frames, vec![frame(&[], &["alice"])]);
    }

    #[test]
    fn a_sync_is_answered_with_everyone_and_own_records_are_skipped() {
        let presence = Presence::new("a", Duration::from_secs(10));
        for user in ["u1", "u2", "u3"] {
            presence.local_joined("r", &user.into());
        }
        presence.flush();
        presence.apply(&update("a", &["ghost"], &[], true), 0);
        assert_eq!(presence.present("r"), ["u1", "u2", "u3"], "its own record");
        presence.apply(&update("b", &["x"], &[], true), 0);
        assert_eq!(presence.flush().records, vec![update("a", &["u1", "u2", "u3"], &[], false)]);
        // A room with no local member takes no record.
        presence.apply(&PresenceUpdate { room: "other".into(), ..update("b", &["x"], &[], false) }, 0);
        assert!(presence.present("other").is_empty());
    }

    #[test]
    fn a_refresh_of_a_big_room_goes_in_parts() {
        let presence = Presence::new("a", Duration::from_secs(10));
        for i in 0..2_500 {
            presence.local_joined("r", &format!("u{i:04}").into());
        }
        presence.flush();
        presence.refresh();
        let records = presence.flush().records;
        assert_eq!(records.iter().map(|r| r.here.len()).collect::<Vec<_>>(), [1_000, 1_000, 500]);
    }

    #[test]
    fn users_no_edge_names_again_expire_and_the_last_local_leave_forgets_the_room() {
        let presence = Presence::new("a", Duration::from_secs(10));
        presence.local_joined("r", &"alice".into());
        presence.apply(&update("b", &["bob", "carol"], &[], false), 0);
        presence.flush();
        presence.apply(&update("b", &["bob"], &[], false), 20_000);
        presence.apply(&update("a", &["alice"], &[], false), 25_000);
        assert_eq!(presence.expire(29_000), 0);
        assert_eq!(presence.expire(31_000), 1, "carol was not named again");
        assert_eq!(presence.flush().frames, vec![frame(&[], &["carol"])]);
        assert_eq!(presence.present("r"), ["alice", "bob"]);

        presence.local_left("r", "alice");
        let flushed = presence.flush();
        assert_eq!(flushed.records, vec![update("a", &[], &["alice"], false)]);
        assert!(flushed.frames.is_empty(), "no member left to tell");
        assert!(presence.present("r").is_empty(), "forgotten");
        presence.local_joined("r", &"alice".into());
        assert!(presence.flush().records[0].sync, "a new first member asks again");
    }

    #[test]
    fn an_edge_cut_off_from_the_stream_drops_nobody_and_gives_the_others_a_full_ttl() {
        let presence = Presence::new("a", Duration::from_secs(10));
        presence.local_joined("r", &"alice".into());
        presence.apply(&update("b", &["bob"], &[], false), 1_000);
        presence.apply(&update("a", &["alice"], &[], false), 2_000);
        presence.flush();
        // Nothing comes for a minute: this node is the one cut off.
        assert_eq!(presence.expire(62_000), 0, "bob was not heard of, but neither was anyone");
        // Back: its own record first, b's a moment later.
        presence.apply(&update("a", &["alice"], &[], false), 62_000);
        assert_eq!(presence.expire(63_000), 0, "b gets a full TTL");
        presence.apply(&update("b", &["bob"], &[], false), 63_500);
        assert!(presence.flush().frames.is_empty(), "bob never flickered");
        // b is never heard again: bob goes a TTL after he was last named.
        for at in [72_000, 82_000, 92_000, 102_000] {
            presence.apply(&update("a", &["alice"], &[], false), at);
        }
        assert_eq!(presence.expire(93_500), 0);
        assert_eq!(presence.expire(93_501), 1);
        assert_eq!(presence.flush().frames, vec![frame(&[], &["bob"])]);
    }
}
