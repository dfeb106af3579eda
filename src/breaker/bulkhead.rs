//! A bulkhead: at most N calls in flight to one dependency, so a slow one
//! ties up at most N coroutines instead of all of them (resilience4j's
//! `SemaphoreBulkhead` with no wait, <https://resilience4j.readme.io/docs/bulkhead>).
//!
//! It never waits: a call over the limit is refused at once and the caller
//! falls back. (A waiting bulkhead is a bounded queue; the producer-consumer
//! chapter's `bounded` channel is that.) Lock-free: one atomic counter.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::config::ConfigError;

// ANCHOR: bulkhead
/// At most `max_in_flight` permits out at once. `Send + Sync`.
#[derive(Debug)]
pub struct Bulkhead {
    max_in_flight: usize,
    in_flight: AtomicUsize,
    admitted: AtomicU64,
    rejected: AtomicU64,
}

impl Bulkhead {
    /// A bulkhead that admits up to `max_in_flight` calls at once; 0 is
    /// refused (it would admit nothing).
    pub fn new(max_in_flight: usize) -> Result<Self, ConfigError> {
        if max_in_flight == 0 {
            return Err(ConfigError::ZeroBulkhead);
        }
        Ok(Bulkhead {
            max_in_flight,
            in_flight: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// A permit if fewer than `max_in_flight` are out, else `None` at once.
    /// Dropping the permit gives the place back.
    pub fn try_enter(&self) -> Option<BulkheadPermit<'_>> {
        // Increment only below the limit, so in_flight never exceeds it,
        // not even for an instant.
        let entered = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            });
        match entered {
            Ok(_) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Some(BulkheadPermit { bulkhead: self })
            }
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
    // ANCHOR_END: bulkhead

    /// The limit.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Permits out now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Calls admitted since the bulkhead was made.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Calls refused since the bulkhead was made.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// One place in a [`Bulkhead`], given back on drop.
#[derive(Debug)]
#[must_use = "dropping the permit gives its place back at once"]
pub struct BulkheadPermit<'a> {
    bulkhead: &'a Bulkhead,
}

impl Drop for BulkheadPermit<'_> {
    fn drop(&mut self) {
        self.bulkhead.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn admits_up_to_the_limit_and_refuses_at_once_beyond_it() {
        let bulkhead = Bulkhead::new(2).unwrap();
        let a = bulkhead.try_enter().unwrap();
        let b = bulkhead.try_enter().unwrap();
        assert!(bulkhead.try_enter().is_none());
        assert_eq!(bulkhead.in_flight(), 2);
        drop(a);
        let c = bulkhead.try_enter().expect("a's place is free");
        assert!(bulkhead.try_enter().is_none());
        drop((b, c));
        assert_eq!(bulkhead.in_flight(), 0);
        assert_eq!((bulkhead.admitted(), bulkhead.rejected()), (3, 2));
    }

    #[test]
    fn zero_is_refused_with_a_sentence() {
        assert_eq!(
            Bulkhead::new(0).unwrap_err().to_string(),
            "a bulkhead must admit at least one call in flight"
        );
    }

    #[test]
    fn threads_hammering_it_never_see_more_than_the_limit_inside() {
        let bulkhead = Arc::new(Bulkhead::new(3).unwrap());
        // Counted by the callers themselves, not by the bulkhead.
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (bulkhead, inside, most) = (bulkhead.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(_permit) = bulkhead.try_enter() {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::hint::spin_loop();
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(bulkhead.in_flight(), 0);
        assert_eq!(bulkhead.admitted() + bulkhead.rejected(), 160_000);
    }
}
