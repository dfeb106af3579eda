//! Demand and cancel: the subscriber's side of a stream ([`Subscription`])
//! and a source's side ([`Demand`]).
//!
//! A source runs on its own coroutine and may emit only what was requested
//! (rule 1.1). [`Demand`] keeps the count and parks that coroutine while it
//! is zero, without spinning: `request` adds to the count and, if the source
//! is parked, posts one wake-up to a may semaphore. `request` never calls
//! the subscriber, so a subscriber may call it from inside `on_next`
//! without recursion (rule 3.3): the source's loop picks the demand up after
//! `on_next` returns.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use may::sync::Semphore;

use super::Error;

/// What a subscription does with demand and cancel. Sources use [`Demand`];
/// operators that rewrite demand (`take`, `flat_map`, ...) implement their
/// own and wrap the upstream's [`Subscription`].
// ANCHOR: control
pub trait Control: Send + Sync + 'static {
    /// Add `n` to the demand; `0` is an error the stream must report (3.9).
    fn request(&self, n: u64);
    /// Stop the stream; calling it again does nothing (3.5, 3.7).
    fn cancel(&self);
}
// ANCHOR_END: control

/// The handle a subscriber gets in `on_subscribe`. Clones share one stream.
#[derive(Clone)]
pub struct Subscription {
    control: Arc<dyn Control>,
}

impl Subscription {
    /// A subscription driven by `control`.
    pub fn new(control: impl Control) -> Subscription {
        Subscription {
            control: Arc::new(control),
        }
    }

    /// Ask for `n` more items. Demand adds up and saturates at `u64::MAX`,
    /// which means "no limit" (3.17). `request(0)` ends the stream with
    /// [`Error::NonPositiveRequest`] (3.9).
    pub fn request(&self, n: u64) {
        self.control.request(n)
    }

    /// Stop the stream. Idempotent; signals already on their way may still
    /// arrive, then none (3.6, 3.8).
    pub fn cancel(&self) {
        self.control.cancel()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

// ANCHOR: state
/// The counters both sides share. Guarded by a std `Mutex`: every critical
/// section is a few field updates with no yield or park inside, so the lock
/// is never held across a park and never makes a may worker wait for long.
#[derive(Default)]
struct State {
    /// Items requested and not yet emitted; `u64::MAX` means unbounded.
    outstanding: u64,
    cancelled: bool,
    /// `request(0)` was called and not yet reported.
    invalid: bool,
    /// Every `Subscription` clone is gone: no demand can ever arrive again.
    orphaned: bool,
    /// The source is parked on `wake` (or about to): the next change posts.
    parked: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wake-ups for a parked source: at most one is posted per park.
    wake: Semphore,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so poisoning cannot happen;
        // recover the guard anyway rather than propagate a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply `change` and wake the source if it was parked.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let wake = {
            let mut state = self.lock();
            change(&mut state);
            std::mem::take(&mut state.parked)
        };
        if wake {
            self.wake.post();
        }
    }
}

/// The control behind a source's [`Subscription`].
struct DemandControl {
    shared: Arc<Shared>,
}

impl Control for DemandControl {
    fn request(&self, n: u64) {
        self.shared.update(|state| {
            if n == 0 {
                state.invalid = true;
            } else {
                state.outstanding = state.outstanding.saturating_add(n);
            }
        });
    }

    fn cancel(&self) {
        self.shared.update(|state| state.cancelled = true);
    }
}

// ANCHOR_END: state

impl Drop for DemandControl {
    /// The last `Subscription` clone is gone: once the outstanding demand is
    /// spent the source can stop instead of parking forever.
    fn drop(&mut self) {
        self.shared.update(|state| state.orphaned = true);
    }
}

/// A source's side of demand: the outstanding count, the cancelled flag, the
/// invalid-request flag, and a park/wake so the source's coroutine waits for
/// demand without spinning. Clones share one stream.
#[derive(Clone)]
pub struct Demand {
    shared: Arc<Shared>,
}

impl Demand {
    /// A fresh stream with no demand: the subscription goes to the
    /// subscriber, the demand stays with the source.
    pub fn new() -> (Subscription, Demand) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Semphore::new(0),
        });
        let control = DemandControl {
            shared: shared.clone(),
        };
        (Subscription::new(control), Demand { shared })
    }

    // ANCHOR: take_one
    /// Park until there is demand (take one unit and return `Ok(true)`), the
    /// subscriber cancelled or can never ask again (`Ok(false)`: stop), or
    /// it requested 0 (`Err(NonPositiveRequest)`: signal it and stop; later
    /// calls return `Ok(false)`). Cancel wins over pending demand, so a
    /// cancelled source emits nothing more (3.6).
    pub fn take_one(&self) -> Result<bool, Error> {
        loop {
            if let Some(answer) = self.poll(true)? {
                return Ok(answer);
            }
            self.shared.wake.wait();
        }
    }

    /// [`Demand::take_one`] without parking: `Ok(None)` when there is no
    /// demand yet (for a source that has something else to wait on too).
    pub fn try_take_one(&self) -> Result<Option<bool>, Error> {
        self.poll(false)
    }

    /// One look at the state; with `park`, announce that the caller is about
    /// to wait on `wake` if there is nothing to take.
    fn poll(&self, park: bool) -> Result<Option<bool>, Error> {
        let mut state = self.shared.lock();
        if state.cancelled {
            return Ok(Some(false));
        }
        if state.invalid {
            // Reported once; the stream is over after it.
            state.cancelled = true;
            return Err(Error::NonPositiveRequest);
        }
        if state.outstanding > 0 {
            if state.outstanding != u64::MAX {
                state.outstanding -= 1;
            }
            return Ok(Some(true));
        }
        if state.orphaned {
            return Ok(Some(false));
        }
        // Set under the same lock that saw no demand, so a request that comes
        // after this point sees `parked` and posts.
        state.parked = park;
        Ok(None)
    }
    // ANCHOR_END: take_one

    /// Whether the subscriber cancelled (or the stream already reported an
    /// invalid request).
    pub fn is_cancelled(&self) -> bool {
        self.shared.lock().cancelled
    }

    /// Demand requested and not yet taken (`u64::MAX`: unbounded).
    pub fn outstanding(&self) -> u64 {
        self.shared.lock().outstanding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_left_behind_by_a_dropped_subscription_is_still_served() {
        let (subscription, demand) = Demand::new();
        subscription.request(2);
        drop(subscription);
        // Called on the test's thread: a wrong answer would park it for good,
        // so every answer here must come without waiting.
        assert_eq!(demand.take_one(), Ok(true));
        assert_eq!(demand.take_one(), Ok(true));
        assert_eq!(demand.take_one(), Ok(false), "no one can ask again");
    }

    #[test]
    fn try_take_one_never_waits_and_cancel_wins() {
        let (subscription, demand) = Demand::new();
        assert_eq!(demand.try_take_one(), Ok(None));
        subscription.request(u64::MAX);
        assert_eq!(demand.try_take_one(), Ok(Some(true)));
        assert_eq!(demand.outstanding(), u64::MAX, "unbounded stays unbounded");
        subscription.cancel();
        assert!(demand.is_cancelled());
        assert_eq!(demand.try_take_one(), Ok(Some(false)));
    }

    #[test]
    fn an_invalid_request_is_reported_once() {
        let (subscription, demand) = Demand::new();
        subscription.request(0);
        assert_eq!(demand.try_take_one(), Err(Error::NonPositiveRequest));
        assert_eq!(demand.try_take_one(), Ok(Some(false)));
    }
}
