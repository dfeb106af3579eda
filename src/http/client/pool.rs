//! Idle keep-alive connections, per (scheme, host, port).
//!
//! A std `Mutex` guards the map, held only to push or pop a connection
//! (a few hundred nanoseconds, no I/O, no yield inside), so it can never
//! hold a may worker while a coroutine waits. Connections closed here
//! (expired or over the cap) are dropped after the lock is released: a
//! close is a system call.

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::connect::Conn;

/// Where a connection goes: a connection is reused only for the same
/// scheme, host and port (an `https` connection is bound to its name by
/// its certificate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) https: bool,
    pub(super) host: String,
    pub(super) port: u16,
}

/// A connection with the buffer its responses are read through: the
/// buffer stays with it, so nothing a server sent is lost between uses.
pub(super) type Connection = BufReader<Conn>;

struct Idle {
    connection: Connection,
    since: Instant,
}

struct State {
    idle: HashMap<Key, Vec<Idle>>,
    idle_count: usize,
    last_sweep: Instant,
}

// ANCHOR: pool
/// Idle connections, at most `max_per_host` per key, none older than
/// `idle_timeout`.
pub(super) struct Pool {
    state: Mutex<State>,
    max_per_host: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(super) fn new(max_per_host: usize, idle_timeout: Duration) -> Pool {
        let state = State {
            idle: HashMap::new(),
            idle_count: 0,
            last_sweep: Instant::now(),
        };
        Pool {
            state: Mutex::new(state),
            max_per_host,
            idle_timeout,
        }
    }

    /// The most recently used idle connection for `key` that is not too
    /// old (the newest is the least likely to have been closed by the
    /// server).
    pub(super) fn take(&self, key: &Key) -> Option<Connection> {
        let mut expired = Vec::new();
        let found = {
            let mut state = self.state.lock().unwrap();
            let found = self.pop_fresh(&mut state, key, &mut expired);
            self.sweep_if_due(&mut state, &mut expired);
            found
        };
        drop(expired); // closed outside the lock
        found
    }

    /// Keep `connection` for the next request to `key`, unless `key`
    /// already has `max_per_host` idle ones.
    pub(super) fn put(&self, key: Key, connection: Connection) {
        let mut expired = Vec::new();
        let refused = {
            let mut state = self.state.lock().unwrap();
            self.sweep_if_due(&mut state, &mut expired);
            let idle = state.idle.entry(key).or_default();
            let refused = match idle.len() < self.max_per_host {
                true => {
                    idle.push(Idle {
                        connection,
                        since: Instant::now(),
                    });
                    None
                }
                false => Some(connection),
            };
            state.idle_count += usize::from(refused.is_none());
            refused
        };
        drop((expired, refused));
    }
    // ANCHOR_END: pool

    /// Idle connections now.
    pub(super) fn idle_now(&self) -> usize {
        self.state.lock().unwrap().idle_count
    }

    fn pop_fresh(
        &self,
        state: &mut State,
        key: &Key,
        expired: &mut Vec<Idle>,
    ) -> Option<Connection> {
        let idle = state.idle.get_mut(key)?;
        let before = expired.len();
        let mut found = None;
        while let Some(newest) = idle.pop() {
            match newest.since.elapsed() < self.idle_timeout {
                true => {
                    found = Some(newest.connection);
                    break;
                }
                false => expired.push(newest),
            }
        }
        let taken = expired.len() - before + usize::from(found.is_some());
        state.idle_count -= taken;
        if idle.is_empty() {
            state.idle.remove(key);
        }
        found
    }

    /// Close every expired connection of every host, at most twice per
    /// `idle_timeout`: a crawl leaves hosts behind, and their connections
    /// must not stay open until the program ends.
    fn sweep_if_due(&self, state: &mut State, expired: &mut Vec<Idle>) {
        if state.last_sweep.elapsed() < self.idle_timeout / 2 {
            return;
        }
        state.last_sweep = Instant::now();
        let before = expired.len();
        state.idle.retain(|_, idle| {
            // Oldest first: the expired ones are at the front.
            let keep_from = idle
                .iter()
                .position(|i| i.since.elapsed() < self.idle_timeout)
                .unwrap_or(idle.len());
            expired.extend(idle.drain(..keep_from));
            !idle.is_empty()
        });
        state.idle_count -= expired.len() - before;
    }
}
