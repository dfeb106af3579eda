//! The one interface every rate-limiting algorithm implements.

use super::{Decision, Quota};
use std::time::Duration;

/// A rate-limiting algorithm: the rule, without the state it keeps per key.
///
/// The rule is pure: it is handed the state and `now` and returns a
/// decision, so a test drives it with exact nanoseconds, a keyed limiter
/// keeps one `State` per key, and a Redis script can do the same sum.
// ANCHOR: algorithm
pub trait Algorithm: Send + Sync + 'static {
    /// What one key needs: a few integers, or the sliding log's timestamps.
    type State: Send + 'static;
    /// The name the gateway's `--algorithm` takes ("token-bucket", ...).
    fn name(&self) -> &'static str;
    /// The quota this algorithm enforces.
    fn quota(&self) -> Quota;
    /// The state of a key first seen at `now`: a full quota.
    fn new_state(&self, now: Duration) -> Self::State;
    /// Decide for `cost` units at `now`; when admitted, consume them.
    /// Never blocks; O(1) except the sliding log's retry time, O(rate).
    fn decide(&self, state: &mut Self::State, now: Duration, cost: u64) -> Decision;
    /// True when forgetting this state at `now` changes no future decision
    /// (the key is back to a full quota): a keyed limiter may evict it.
    fn is_idle(&self, state: &Self::State, now: Duration) -> bool;
    /// Bytes this state holds (heap included), for the memory-per-key column.
    fn state_bytes(&self, state: &Self::State) -> usize;
}
// ANCHOR_END: algorithm
