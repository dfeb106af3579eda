//! The keyed limiter: one [`Algorithm`] state per key, in shards, with at
//! most `max_keys` keys held.

use super::acquire::{AcquireError, Reservation};
use super::shard::{Shard, Slot};
use super::{Algorithm, Decision};
use crate::clock::{Clock, MonotonicClock};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Shards per limiter. Two workers contend for one shard only when their
/// keys hash to it; 32 makes that rare for many keys, and costs 32 small
/// maps. One hot key always meets in one shard: see the contention step.
const SHARDS: usize = 32;

// ANCHOR: limiter
/// A rate limiter with one [`Algorithm`] state per key `K` (a client
/// address, an API key), at most `max_keys` of them, deciding by the clock
/// `C`. Share it with an `Arc`; it is `Send + Sync`.
///
/// The keys are split over up to 32 shards by a hash of the key, each a
/// std `Mutex` around its keys. A lock is held for one decision only (a
/// few map operations and the algorithm's sum: no I/O, no yield), and never
/// across a park or a sleep: [`acquire`](Self::acquire) reserves under the
/// lock, then sleeps after releasing it. So a worker that finds a shard
/// locked waits only for the decisions of the other workers already there,
/// and a coroutine never carries a guard to another thread.
///
/// **Bounded memory.** Each shard holds at most its share of `max_keys`
/// keys in least-recently-seen order. A new key in a full shard takes the
/// place of an idle key (one whose state is back to a full quota:
/// forgetting it changes no decision; counted by [`expired`](Self::expired)),
/// or, when none of the stalest keys is idle, of the least recently seen
/// key (counted by [`evicted`](Self::evicted)): that key starts over with a
/// full quota if it comes back. Idle keys stay until room is needed:
/// dropping one early would free no memory, and would cost an insert when
/// it came back. Evicting rather than refusing new keys is a choice: a flood of new
/// addresses then cannot lock out every client that is not yet known, and
/// what it costs is at most one fresh quota for a key quiet longer than any
/// other in its shard. A key with waiters (reservations ahead of now) is
/// never evicted.
pub struct Limiter<K, A: Algorithm, C: Clock = MonotonicClock> {
    algorithm: A,
    clock: C,
    /// Seeds the shard choice (see [`ShardHasher`]).
    seed: u64,
    shards: Box<[Locked<K, A::State>]>,
    max_keys: usize,
}
// ANCHOR_END: limiter

/// A shard behind its lock, alone on its cache line (or lines), so two
/// workers locking two shards do not bounce one line between their cores.
#[repr(align(64))]
struct Locked<K, S>(Mutex<Shard<K, S>>);

impl<K, A> Limiter<K, A, MonotonicClock>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Algorithm,
{
    /// A limiter on the real clock for at most `max_keys` keys.
    ///
    /// # Panics
    ///
    /// If `max_keys` is 0 (a program checks its `--max-keys` first, with
    /// [`crate::cli::at_least_one`]).
    pub fn new(algorithm: A, max_keys: usize) -> Self {
        Limiter::with_clock(algorithm, max_keys, MonotonicClock::new())
    }
}

impl<K, A, C> Limiter<K, A, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Algorithm,
    C: Clock,
{
    /// A limiter for at most `max_keys` keys, deciding by `clock` (a
    /// [`ManualClock`](crate::clock::ManualClock) in tests).
    ///
    /// # Panics
    ///
    /// If `max_keys` is 0.
    pub fn with_clock(algorithm: A, max_keys: usize, clock: C) -> Self {
        assert!(
            max_keys > 0,
            "a limiter must be able to hold at least one key"
        );
        // Every shard holds at least one key, and the shares add up to
        // exactly max_keys.
        let shards = SHARDS.min(max_keys);
        let (share, extra) = (max_keys / shards, max_keys % shards);
        let shards = (0..shards)
            .map(|i| Locked(Mutex::new(Shard::new(share + usize::from(i < extra)))))
            .collect();
        Limiter {
            algorithm,
            clock,
            seed: RandomState::new().hash_one(0u64),
            shards,
            max_keys,
        }
    }

    // ANCHOR: check
    /// Decide for `cost` units of `key` now, consuming them when admitted.
    ///
    /// Never blocks and never yields: it holds one shard's std `Mutex` for
    /// this one decision. While the key has waiters from
    /// [`acquire`](Self::acquire), the answer is `Denied` until the last of
    /// them has gone, with that time as `retry_after` (a lower bound: the
    /// quota may still be short then): a `check` never overtakes a parked
    /// caller.
    pub fn check(&self, key: &K, cost: u64) -> Decision {
        let now = self.clock.now();
        self.shard(key).check(&self.algorithm, key, now, cost)
    }
    // ANCHOR_END: check

    // ANCHOR: acquire
    /// Park the calling coroutine until `cost` units of `key` are admitted,
    /// or fail at once if that would take longer than `deadline`.
    ///
    /// Callers for one key are served in arrival order: each reserves the
    /// earliest time after every earlier caller (see
    /// [`reserve`](Self::reserve)), so a later `acquire` or `check` never
    /// overtakes a parked one, however small its cost. Whether the deadline
    /// can be met is decided up front, so no caller waits for nothing.
    /// Errors: [`AcquireError::Exceeds`] when the algorithm will never admit
    /// `cost` (more than the burst, or a window's rate),
    /// [`AcquireError::Deadline`] with the time it would have taken.
    ///
    /// It returns at the reserved time, or up to about 1 ms after it (the
    /// wait is rounded up to whole milliseconds). A caller cancelled while it waits leaves
    /// its units consumed: the limiter admits less, never more. (`Clone` on
    /// the state: the search for the turn runs on a copy, so a refusal
    /// consumes nothing; every algorithm here has it.)
    pub fn acquire(&self, key: &K, cost: u64, deadline: Duration) -> Result<(), AcquireError>
    where
        A::State: Clone,
    {
        self.reserve(key, cost, deadline)?.wait(&self.clock);
        Ok(())
    }
    // ANCHOR_END: acquire

    /// The first half of [`acquire`](Self::acquire), which never blocks:
    /// consume `cost` units of `key` at the earliest time the algorithm
    /// admits them after every earlier reservation of the key, if that is at
    /// most `deadline` from now, and say when that is.
    /// [`Reservation::wait`] is the second half.
    pub fn reserve(
        &self,
        key: &K,
        cost: u64,
        deadline: Duration,
    ) -> Result<Reservation, AcquireError>
    where
        A::State: Clone,
    {
        let now = self.clock.now();
        let at = self
            .shard(key)
            .reserve(&self.algorithm, key, now, cost, deadline)?;
        Ok(Reservation::new(at))
    }

    /// Keys held now (at most [`max_keys`](Self::max_keys)). Locks each
    /// shard in turn, briefly.
    pub fn keys(&self) -> usize {
        self.sum(|shard| shard.len() as u64) as usize
    }

    /// Keys dropped while they still held state, to stay under `max_keys`:
    /// each would have started over with a full quota had it come back.
    pub fn evicted(&self) -> u64 {
        self.sum(|shard| shard.evicted)
    }

    /// Idle keys dropped (their state was back to a full quota, so no
    /// decision changed).
    pub fn expired(&self) -> u64 {
        self.sum(|shard| shard.expired)
    }

    /// The most keys this limiter holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Bytes one held key takes in the limiter's own tables: its slot
    /// (key, state, two links) and its index entry (key, slot number, one
    /// control byte). Add what the state holds on the heap
    /// ([`Algorithm::state_bytes`] minus the state's own size) for the
    /// sliding log; every other algorithm holds nothing there.
    pub fn entry_bytes(&self) -> usize {
        std::mem::size_of::<Slot<K, A::State>>() + std::mem::size_of::<(K, u32)>() + 1
    }

    /// The algorithm every key is decided by.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }

    /// The clock decisions are made by.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, A::State>> {
        let mut hasher = ShardHasher(self.seed);
        key.hash(&mut hasher);
        // The multiply leaves its best bits at the top: take the shard from
        // there (a multiply-shift instead of a division).
        let i = ((hasher.finish() >> 32) * self.shards.len() as u64) >> 32;
        lock(&self.shards[i as usize].0)
    }

    fn sum(&self, f: impl Fn(&Shard<K, A::State>) -> u64) -> u64 {
        self.shards.iter().map(|s| f(&lock(&s.0))).sum()
    }
}

/// Picks a key's shard: FxHash's rotate-xor-multiply step over the key's
/// words, from a seed drawn once per limiter. It is several times cheaper
/// than std's SipHash, which the key is hashed with again inside its shard
/// (whose map is what crafted keys could attack). The shard choice need not
/// resist crafted keys: keys aimed at one shard only churn that shard's
/// 1/32 of `max_keys`, which a flood of any keys can do to every shard.
struct ShardHasher(u64);

impl ShardHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for ShardHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A shard's lock. Nothing in a decision panics by design; if an algorithm
/// did, its key's state may be half-updated, which costs that key one wrong
/// decision at worst, so later callers go on rather than panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
