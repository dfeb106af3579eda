//! One shard of the keyed [`Limiter`](super::Limiter): at most `capacity`
//! keys, kept in least-recently-seen order so the stalest key is found in
//! O(1) when room is needed.
//!
//! The keys live in a slab (`slots`, a `Vec`) threaded by a doubly linked
//! list of slot numbers (newest to oldest), with a `HashMap` from key to slot
//! number. A slab rather than a map of boxed nodes: one allocation per shard
//! instead of one per key, and 4-byte links instead of 8-byte pointers.
//!
//! Every method runs under the shard's lock and does O(1) work (a few map
//! operations and at most [`PROBE`] idle tests); none blocks or yields.

use super::acquire::AcquireError;
use super::{Algorithm, Decision, Quota};
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// "No slot": the end of the recency list.
const NIL: u32 = u32::MAX;

/// How many of the stalest keys an insert into a full shard tests, dropping
/// the idle ones, before it evicts a key that still holds state.
pub(super) const PROBE: usize = 8;

/// How many times [`Shard::reserve`] asks the algorithm for a later time.
/// Every algorithm here names the exact time in one step (its
/// `retry_after`); the bound only stops a faulty one from looping forever.
const MAX_TRIES: usize = 64;

/// One key: its algorithm state and its place in the recency list.
pub(super) struct Slot<K, S> {
    key: K,
    state: S,
    /// Towards the newest key, or NIL.
    newer: u32,
    /// Towards the oldest key, or NIL.
    older: u32,
}

/// Keys of one shard and their states. See the [module docs](self).
pub(super) struct Shard<K, S> {
    index: HashMap<K, u32>,
    slots: Vec<Slot<K, S>>,
    newest: u32,
    oldest: u32,
    capacity: usize,
    /// Keys with reservations past some earlier `now`: until then no one
    /// decides for them at an earlier time (see [`Shard::reserve`]). Empty
    /// unless `acquire` is used, so `check` pays one `is_empty` for it.
    reserved: HashMap<K, Duration>,
    /// Idle keys dropped (no decision changed).
    pub(super) expired: u64,
    /// Keys that still held state, dropped to stay under `capacity`.
    pub(super) evicted: u64,
}

impl<K: Hash + Eq + Clone, S> Shard<K, S> {
    /// An empty shard for at most `capacity` keys (at most `u32::MAX - 1`).
    pub(super) fn new(capacity: usize) -> Self {
        debug_assert!(capacity < NIL as usize);
        Shard {
            index: HashMap::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity,
            reserved: HashMap::new(),
            expired: 0,
            evicted: 0,
        }
    }

    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    // ANCHOR: check
    /// Decide for `cost` units of `key` at `now`.
    pub(super) fn check<A>(&mut self, alg: &A, key: &K, now: Duration, cost: u64) -> Decision
    where
        A: Algorithm<State = S>,
    {
        if let Some(until) = self.reserved_until(key, now) {
            // Waiters hold the key's quota up to `until`: a newcomer does not
            // overtake them, and is told to come back when they have gone.
            let retry_after = until - now;
            return Decision::Denied {
                retry_after,
                reset: retry_after.saturating_add(full_refill(alg.quota())),
            };
        }
        if let Some(&i) = self.index.get(key) {
            self.touch(i);
            return alg.decide(&mut self.slots[i as usize].state, now, cost);
        }
        // A new key is decided on a fresh state first, and stored only when
        // that consumed something: a denied newcomer costs no memory.
        let mut state = alg.new_state(now);
        let decision = alg.decide(&mut state, now, cost);
        if decision.is_admitted() {
            if let Err(retry_after) = self.make_room(alg, now) {
                return Decision::Denied {
                    retry_after,
                    reset: retry_after.saturating_add(full_refill(alg.quota())),
                };
            }
            self.insert(key.clone(), state);
        }
        decision
    }
    // ANCHOR_END: check

    // ANCHOR: reserve
    /// Reserve `cost` units of `key` at the earliest time at or after `now`
    /// that comes after every earlier reservation of the key, and return that
    /// time (plus the leaky queue's wait). The units are consumed at once, so
    /// every later caller, `check` or `reserve`, queues behind this one.
    ///
    /// The search runs on a copy of the key's state (a decision consumes),
    /// so when the turn is more than `deadline` away the error names the
    /// exact time and nothing is consumed.
    pub(super) fn reserve<A>(
        &mut self,
        alg: &A,
        key: &K,
        now: Duration,
        cost: u64,
        deadline: Duration,
    ) -> Result<Duration, AcquireError>
    where
        A: Algorithm<State = S>,
        S: Clone,
    {
        let start = self.reserved_until(key, now).unwrap_or(now);
        let existing = self.index.get(key).copied();
        let mut trial = match existing {
            Some(i) => self.slots[i as usize].state.clone(),
            None => alg.new_state(now),
        };
        let (decided_at, go_at) = earliest(alg, &mut trial, start, cost)?;
        if go_at - now > deadline {
            return Err(AcquireError::Deadline {
                retry_after: go_at - now,
            });
        }
        match existing {
            Some(i) => {
                self.slots[i as usize].state = trial;
                self.touch(i);
            }
            None => {
                self.make_room(alg, now)
                    .map_err(|retry_after| AcquireError::Deadline { retry_after })?;
                self.insert(key.clone(), trial);
            }
        }
        if decided_at > now {
            self.reserved.insert(key.clone(), decided_at);
        }
        Ok(go_at)
    }
    // ANCHOR_END: reserve

    /// The time up to which `key` is reserved, if that is after `now`; a
    /// reservation that has passed is forgotten here.
    fn reserved_until(&mut self, key: &K, now: Duration) -> Option<Duration> {
        if self.reserved.is_empty() {
            return None;
        }
        match self.reserved.get(key) {
            Some(&until) if until > now => Some(until),
            Some(_) => {
                self.reserved.remove(key);
                None
            }
            None => None,
        }
    }

    fn is_reserved(&self, i: u32, now: Duration) -> bool {
        !self.reserved.is_empty()
            && self
                .reserved
                .get(&self.slots[i as usize].key)
                .is_some_and(|&until| until > now)
    }

    // ANCHOR: make_room
    /// Make room for one more key. Nothing to do below `capacity`: idle
    /// keys are left where they are until room is needed, since dropping
    /// one early frees no memory (its slot waits for the next key) and
    /// costs a new insert if it comes back. A full shard drops every idle
    /// key among its [`PROBE`] stalest without reservations, so the next few
    /// new keys find room at once; when none of them is idle, it evicts the
    /// stalest (that key starts again with a full quota). `Err` with the
    /// time until a reservation passes when every key is reserved.
    fn make_room<A: Algorithm<State = S>>(
        &mut self,
        alg: &A,
        now: Duration,
    ) -> Result<(), Duration> {
        if self.slots.len() < self.capacity {
            return Ok(());
        }
        let (mut i, mut probed, mut dropped) = (self.oldest, 0, 0);
        let mut stalest_busy = None;
        while i != NIL && probed < PROBE {
            let mut next = self.slots[i as usize].newer;
            if !self.is_reserved(i, now) {
                probed += 1;
                if alg.is_idle(&self.slots[i as usize].state, now) {
                    // remove() moves the last slot into slot i.
                    let last = (self.slots.len() - 1) as u32;
                    self.remove(i);
                    self.expired += 1;
                    dropped += 1;
                    if next == last {
                        next = i;
                    }
                    if stalest_busy == Some(last) {
                        stalest_busy = Some(i);
                    }
                } else {
                    stalest_busy.get_or_insert(i);
                }
            }
            i = next;
        }
        if dropped > 0 {
            return Ok(());
        }
        match stalest_busy {
            Some(i) => {
                self.remove(i);
                self.evicted += 1;
                Ok(())
            }
            None => Err(self.first_reservation_end(now)),
        }
    }
    // ANCHOR_END: make_room

    /// Time from `now` until the first reservation of this shard passes
    /// (only when every key is reserved: O(keys), and rare).
    fn first_reservation_end(&self, now: Duration) -> Duration {
        self.reserved
            .values()
            .filter(|&&until| until > now)
            .min()
            .map_or(Duration::ZERO, |&until| until - now)
    }

    /// Store a new key as the newest. The caller made room.
    fn insert(&mut self, key: K, state: S) {
        debug_assert!(self.slots.len() < self.capacity);
        if self.slots.len() == self.slots.capacity() {
            // Grow by doubling, but never past the shard's capacity: a full
            // shard then holds no spare slots.
            let grow = self
                .slots
                .capacity()
                .max(4)
                .min(self.capacity - self.slots.len());
            self.slots.reserve_exact(grow);
        }
        let i = self.slots.len() as u32;
        self.index.insert(key.clone(), i);
        self.slots.push(Slot {
            key,
            state,
            newer: NIL,
            older: NIL,
        });
        self.link_newest(i);
    }

    /// Make slot `i` the newest.
    fn touch(&mut self, i: u32) {
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
    }

    fn link_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        let slot = &mut self.slots[i as usize];
        slot.newer = NIL;
        slot.older = old_newest;
        if old_newest != NIL {
            self.slots[old_newest as usize].newer = i;
        } else {
            self.oldest = i;
        }
        self.newest = i;
    }

    fn unlink(&mut self, i: u32) {
        let Slot { newer, older, .. } = self.slots[i as usize];
        if newer != NIL {
            self.slots[newer as usize].older = older;
        } else {
            self.newest = older;
        }
        if older != NIL {
            self.slots[older as usize].newer = newer;
        } else {
            self.oldest = newer;
        }
    }

    /// Forget slot `i`'s key; the last slot moves into its place.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let gone = self.slots.swap_remove(i as usize);
        self.index.remove(&gone.key);
        self.reserved.remove(&gone.key);
        if let Some(moved) = self.slots.get(i as usize) {
            let (newer, older) = (moved.newer, moved.older);
            if newer != NIL {
                self.slots[newer as usize].older = i;
            } else {
                self.newest = i;
            }
            if older != NIL {
                self.slots[older as usize].newer = i;
            } else {
                self.oldest = i;
            }
            if let Some(slot) = self.index.get_mut(&self.slots[i as usize].key) {
                *slot = i;
            }
        }
    }

    /// Panics unless the list, the slab and the index agree: every slot on
    /// the list once, links both ways, the index pointing at each slot.
    #[cfg(test)]
    pub(super) fn assert_consistent(&self) {
        let (mut i, mut seen, mut newer) = (self.newest, 0, NIL);
        while i != NIL {
            let slot = &self.slots[i as usize];
            assert_eq!(slot.newer, newer, "back link of slot {i}");
            assert_eq!(self.index.get(&slot.key), Some(&i), "index of slot {i}");
            (newer, i, seen) = (i, slot.older, seen + 1);
        }
        assert_eq!(self.oldest, newer, "the oldest end");
        assert_eq!(
            (seen, self.index.len()),
            (self.slots.len(), self.slots.len())
        );
        assert!(self.slots.len() <= self.capacity);
    }

    /// Keys from the newest to the oldest (tests check the order).
    #[cfg(test)]
    pub(super) fn keys_newest_first(&self) -> Vec<K> {
        let mut keys = Vec::new();
        let mut i = self.newest;
        while i != NIL {
            keys.push(self.slots[i as usize].key.clone());
            i = self.slots[i as usize].older;
        }
        keys
    }
}

/// The earliest time at or after `start` at which `alg` admits `cost` on
/// `state`, deciding (and so consuming) there. Returns that time and when
/// the caller may go (later by a leaky queue's wait), or `Exceeds` when
/// that never comes.
fn earliest<A: Algorithm>(
    alg: &A,
    state: &mut A::State,
    start: Duration,
    cost: u64,
) -> Result<(Duration, Duration), AcquireError> {
    let mut at = start;
    for _ in 0..MAX_TRIES {
        match alg.decide(state, at, cost) {
            Decision::Allowed { .. } => return Ok((at, at)),
            Decision::Queued { wait, .. } => return Ok((at, at.saturating_add(wait))),
            Decision::Denied { retry_after, .. } if retry_after == Duration::MAX => {
                return Err(AcquireError::Exceeds)
            }
            // A denial consumes nothing and names the time to try again.
            Decision::Denied { retry_after, .. } => {
                at = at.saturating_add(retry_after.max(Duration::from_nanos(1)));
            }
        }
    }
    // Only a faulty algorithm gets here (every denial names the time that
    // admits): say "not in time, nor ever known" rather than loop on.
    Err(AcquireError::Deadline {
        retry_after: Duration::MAX,
    })
}

/// Upper bound on the time an emptied quota takes to fill again: `burst`
/// intervals (for the window algorithms, at most one period more).
fn full_refill(quota: Quota) -> Duration {
    let nanos = quota
        .interval()
        .as_nanos()
        .saturating_mul(u128::from(quota.burst()));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
