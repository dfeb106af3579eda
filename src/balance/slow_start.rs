//! HAProxy's `slowstart`: a backend that has just come back gets a share of
//! traffic that grows linearly over a window, so a server with cold caches
//! (or one that failed under load) is not handed its full share at once.

use std::time::Duration;

/// The weight to use `since_up` after a backend came back, for a window of
/// `window`: from 1 (never 0, so it still gets a first request) up to
/// `weight`, linearly; `weight` once the window has passed.
pub fn effective_weight(weight: u32, since_up: Duration, window: Duration) -> u32 {
    if window.is_zero() || since_up >= window {
        return weight;
    }
    let share = weight as u128 * since_up.as_nanos() / window.as_nanos();
    (share as u32).max(1)
}
