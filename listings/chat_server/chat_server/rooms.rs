//! The room manager: which rooms exist, who is in each, and their topics.
//!
//! Owned by the router's coroutine alone, so it needs no lock. It keeps the
//! room side of membership (members of a room); the router keeps the user
//! side (rooms of a user) and the per-client cap. A room is created by its
//! first JOIN and deleted with its last member, so the number of rooms is
//! bounded by [`Rooms::new`]'s `max_rooms` and the members of all rooms
//! together by clients times their per-client cap. Members are kept sorted
//! by id, so NAMES and WHO come out in the same order on every run.

use std::collections::{BTreeMap, BTreeSet};

use crate::irc::casefold;
use crate::outbox::ClientId;

// ANCHOR: room
/// A room's topic and who set it when (RPL_TOPICWHOTIME, 333).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub text: String,
    pub set_by: String,
    /// Seconds since the epoch.
    pub set_at: u64,
}

/// One room.
#[derive(Debug)]
pub struct Room {
    /// The name as its creator spelled it (`#Rust`); lookups use the casefolded one.
    pub name: String,
    pub topic: Option<Topic>,
    members: BTreeSet<ClientId>,
}

impl Room {
    /// Members in id order (the order they connected).
    pub fn members(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.members.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn has(&self, id: ClientId) -> bool {
        self.members.contains(&id)
    }
}

/// Why a JOIN could not add a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The room does not exist and the server already has `max_rooms`.
    ServerFull,
}

/// Every room, by casefolded name.
#[derive(Debug)]
pub struct Rooms {
    rooms: BTreeMap<String, Room>,
    max_rooms: usize,
}
// ANCHOR_END: room

// ANCHOR: rooms
impl Rooms {
    /// No rooms yet; at most `max_rooms` at once.
    pub fn new(max_rooms: usize) -> Rooms {
        Rooms {
            rooms: BTreeMap::new(),
            max_rooms,
        }
    }

    /// The room called `name` in any case.
    pub fn get(&self, name: &str) -> Option<&Room> {
        self.rooms.get(&casefold(name))
    }

    /// Adds `id` to `name`, creating the room if it is new. Ok(false): `id`
    /// was already a member (a second JOIN is not announced again).
    pub fn join(&mut self, name: &str, id: ClientId) -> Result<bool, JoinError> {
        let key = casefold(name);
        if !self.rooms.contains_key(&key) && self.rooms.len() >= self.max_rooms {
            return Err(JoinError::ServerFull);
        }
        let room = self.rooms.entry(key).or_insert_with(|| Room {
            name: name.to_string(),
            topic: None,
            members: BTreeSet::new(),
        });
        Ok(room.members.insert(id))
    }

    /// Removes `id` from `name`; the room goes when its last member does.
    /// Returns whether `id` was a member.
    pub fn leave(&mut self, name: &str, id: ClientId) -> bool {
        let key = casefold(name);
        let Some(room) = self.rooms.get_mut(&key) else {
            return false;
        };
        let was = room.members.remove(&id);
        if room.members.is_empty() {
            self.rooms.remove(&key);
        }
        was
    }

    /// Sets (Some) or clears (None) the topic of an existing room.
    pub fn set_topic(&mut self, name: &str, topic: Option<Topic>) {
        if let Some(room) = self.rooms.get_mut(&casefold(name)) {
            room.topic = topic;
        }
    }

    /// Every room, in casefolded-name order (for LIST).
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }
}
// ANCHOR_END: rooms

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_lives_from_its_first_join_to_its_last_part() {
        let mut rooms = Rooms::new(10);
        assert_eq!(rooms.join("#Rust", ClientId(2)), Ok(true));
        assert_eq!(rooms.join("#rust", ClientId(1)), Ok(true));
        assert_eq!(rooms.join("#RUST", ClientId(1)), Ok(false));
        let room = rooms.get("#rUST").unwrap();
        assert_eq!(room.name, "#Rust");
        assert_eq!(
            room.members().collect::<Vec<_>>(),
            [ClientId(1), ClientId(2)]
        );
        assert!(rooms.leave("#rust", ClientId(1)));
        assert!(!rooms.leave("#rust", ClientId(1)));
        assert_eq!(rooms.iter().count(), 1);
        assert!(rooms.leave("#rust", ClientId(2)));
        assert!(rooms.get("#rust").is_none());
        assert_eq!(rooms.iter().count(), 0);
        assert!(!rooms.leave("#nowhere", ClientId(1)));
    }

    #[test]
    fn the_server_cap_counts_rooms_not_joins() {
        let mut rooms = Rooms::new(2);
        rooms.join("#a", ClientId(1)).unwrap();
        rooms.join("#b", ClientId(1)).unwrap();
        assert_eq!(rooms.join("#c", ClientId(1)), Err(JoinError::ServerFull));
        // Joining a room that exists is fine when the server is full.
        assert_eq!(rooms.join("#A", ClientId(2)), Ok(true));
        rooms.leave("#b", ClientId(1));
        assert_eq!(rooms.join("#c", ClientId(1)), Ok(true));
    }

    #[test]
    fn topics_belong_to_existing_rooms() {
        let mut rooms = Rooms::new(2);
        let topic = Topic {
            text: "hi".into(),
            set_by: "a".into(),
            set_at: 1,
        };
        rooms.set_topic("#a", Some(topic.clone()));
        assert!(rooms.get("#a").is_none());
        rooms.join("#a", ClientId(1)).unwrap();
        rooms.set_topic("#A", Some(topic.clone()));
        assert_eq!(rooms.get("#a").unwrap().topic, Some(topic));
        rooms.set_topic("#a", None);
        assert_eq!(rooms.get("#a").unwrap().topic, None);
        let names: Vec<_> = rooms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["#a"]);
    }
}
