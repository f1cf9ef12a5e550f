//! The rooms one connection is in, each with a value of its own (its read
//! state, see `session.rs`): a list, not a hash map. Most connections are
//! in one room or a few, and a hash map's first table held four entries and
//! their control bytes, about 340 bytes, for every connection, idle or
//! not; the list holds exactly its rooms (80 bytes for one), and looking a
//! room up among a few by comparing names costs no more than hashing one.
//! A connection is in at most `MAX_ROOMS_PER_CONNECTION` (256) rooms.

pub struct Joined<V> {
    rooms: Vec<(String, V)>,
}

impl<V> Default for Joined<V> {
    fn default() -> Self {
        Self { rooms: Vec::new() }
    }
}

impl<V> Joined<V> {
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn contains(&self, room: &str) -> bool {
        self.position(room).is_some()
    }

    pub fn get_mut(&mut self, room: &str) -> Option<&mut V> {
        let at = self.position(room)?;
        Some(&mut self.rooms[at].1)
    }

    /// Adds `room`, or replaces its value when it is there already.
    pub fn insert(&mut self, room: String, value: V) {
        match self.position(&room) {
            Some(at) => self.rooms[at].1 = value,
            None => {
                // Room for one more, not for the doubling a Vec does: joins
                // are rare, and an idle connection keeps what it reserved.
                self.rooms.reserve_exact(1);
                self.rooms.push((room, value));
            }
        }
    }

    /// Takes `room` out; its value, if it was there.
    pub fn remove(&mut self, room: &str) -> Option<V> {
        let at = self.position(room)?;
        let (_, value) = self.rooms.swap_remove(at);
        if self.rooms.is_empty() {
            self.rooms = Vec::new();
        }
        Some(value)
    }

    pub fn rooms(&self) -> impl Iterator<Item = &String> {
        self.rooms.iter().map(|(room, _)| room)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.rooms.iter().map(|(room, value)| (room, value))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rooms.iter().map(|(_, value)| value)
    }

    fn position(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|(name, _)| name == room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_and_go_with_their_values() {
        let mut joined = Joined::default();
        assert!(joined.is_empty());
        joined.insert("a".to_owned(), 1);
        joined.insert("b".to_owned(), 2);
        joined.insert("a".to_owned(), 3);
        assert_eq!(joined.len(), 2, "a room joined again is replaced, not doubled");
        assert_eq!(joined.get_mut("a"), Some(&mut 3));
        assert!(joined.contains("b") && !joined.contains("c"));
        assert_eq!(joined.remove("a"), Some(3));
        assert_eq!(joined.remove("a"), None);
        assert_eq!(joined.rooms().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(joined.iter().map(|(r, v)| (r.as_str(), *v)).collect::<Vec<_>>(), vec![("b", 2)]);
        assert_eq!(joined.values().sum::<i32>(), 2);
        assert_eq!(joined.remove("b"), Some(2));
        assert!(joined.is_empty());
    }
}
