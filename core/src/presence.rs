//! Who the edges say is in a room: the table every edge keeps of the
//! others' presence records (`sb.ephemeral`), and the notifier of all of
//! them. A user is named by an edge while they have a connection in the
//! room there; an edge names all its users again at every refresh, so an
//! entry that has not been named for [`TTL_REFRESHES`] refreshes is gone:
//! its edge died, or lost Kafka, or the records were lost.

use std::collections::HashMap;
use std::time::Duration;

use switchboard_schemas::envelope::PresenceUpdate;

/// A user an edge stops naming is dropped after this many refreshes: two
/// refreshes can be lost (or late) without anyone flapping.
pub const TTL_REFRESHES: u32 = 3;

/// How long an entry lasts without being named again, in milliseconds.
pub fn ttl_ms(refresh: Duration) -> i64 {
    (refresh * TTL_REFRESHES).as_millis() as i64
}

/// One room's users as the edges named them: user → node → when (ms since
/// the Unix epoch) that node last named them.
#[derive(Debug, Default)]
pub struct Roster {
    users: HashMap<String, HashMap<String, i64>>,
}

impl Roster {
    /// Applies one edge's record, named at `at`.
    pub fn apply(&mut self, update: &PresenceUpdate, at: i64) {
        for user in &update.here {
            self.users.entry(user.clone()).or_default().insert(update.node.clone(), at);
        }
        for user in &update.left {
            if let Some(nodes) = self.users.get_mut(user) {
                nodes.remove(&update.node);
                if nodes.is_empty() {
                    self.users.remove(user);
                }
            }
        }
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    pub fn users(&self) -> impl Iterator<Item = &String> {
        self.users.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Counts every entry as named at `at`: its reader was cut off from the
    /// stream, so not hearing an edge meanwhile says nothing about it.
    pub fn renew(&mut self, at: i64) {
        for nodes in self.users.values_mut() {
            for named in nodes.values_mut() {
                *named = (*named).max(at);
            }
        }
    }

    /// Drops the entries older than `ttl` at `now`; returns the users who
    /// lost one (each was there until now).
    pub fn expire(&mut self, now: i64, ttl: i64) -> Vec<String> {
        let mut touched = Vec::new();
        self.users.retain(|user, nodes| {
            let before = nodes.len();
            nodes.retain(|_, at| now - *at <= ttl);
            if nodes.len() < before {
                touched.push(user.clone());
            }
            !nodes.is_empty()
        });
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(node: &str, here: &[&str], left: &[&str]) -> PresenceUpdate {
        PresenceUpdate {
            room: "r".into(),
            node: node.into(),
            here: here.iter().map(|u| u.to_string()).collect(),
            left: left.iter().map(|u| u.to_string()).collect(),
            sync: false,
        }
    }

    #[test]
    fn a_user_is_there_while_any_edge_names_them() {
        let mut roster = Roster::default();
        roster.apply(&update("a", &["alice", "bob"], &[]), 0);
        roster.apply(&update("b", &["alice"], &[]), 0);
        roster.apply(&update("a", &[], &["alice"]), 1);
        assert!(roster.contains("alice"), "still on b");
        roster.apply(&update("b", &[], &["alice"]), 2);
        assert!(!roster.contains("alice"));
        assert_eq!(roster.users().collect::<Vec<_>>(), ["bob"]);
    }

    #[test]
    fn entries_not_named_again_within_the_ttl_expire() {
        let ttl = ttl_ms(Duration::from_secs(10));
        assert_eq!(ttl, 30_000);
        let mut roster = Roster::default();
        roster.apply(&update("a", &["alice", "bob"], &[]), 0);
        roster.apply(&update("b", &["bob"], &[]), 20_000);
        roster.apply(&update("a", &["carol"], &[]), 20_000);
        assert!(roster.expire(30_000, ttl).is_empty());
        let mut expired = roster.expire(30_001, ttl);
        expired.sort();
        assert_eq!(expired, ["alice", "bob"]);
        assert!(!roster.contains("alice"));
        assert!(roster.contains("bob"), "b named bob later");
        assert!(roster.contains("carol"));

        roster.renew(40_000);
        assert!(roster.expire(70_000, ttl).is_empty(), "a full TTL from the renewal");
        assert_eq!(roster.expire(70_001, ttl).len(), 2);
    }
}
