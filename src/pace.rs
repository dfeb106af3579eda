//! Simulated per-item costs for the book's examples: "this stage waits 200 µs
//! per item" without sub-millisecond coroutine sleeps.
//!
//! Why not just `may::coroutine::sleep(Duration::from_micros(200))`? In may
//! 0.3.51 a coroutine sleep races with the timer thread and can corrupt the
//! heap; short sleeps lose the race often, and no length is proven safe (the
//! book's Pitfalls reference, "Known may 0.3.51 bugs", reproduces it with
//! `listings/pitfalls/pitfall_short_sleep.rs`). A [`Pacer`] keeps the average
//! rate the caller asked for but sleeps rarely, and only when at least
//! [`Pacer::MIN_SLEEP`] is owed.

use std::time::Duration;

/// Accumulates small waits and sleeps them off in chunks of at least
/// [`Pacer::MIN_SLEEP`]. One per coroutine; it is not shared.
#[derive(Debug, Default)]
pub struct Pacer {
    owed: Duration,
}

impl Pacer {
    /// The shortest coroutine sleep a pacer makes.
    pub const MIN_SLEEP: Duration = Duration::from_millis(1);

    pub fn new() -> Self {
        Pacer::default()
    }

    /// Account for `cost` of waiting (simulated I/O, a remote call); sleep
    /// once the total owed reaches [`Pacer::MIN_SLEEP`]. Over many calls the
    /// caller waits about `cost` per call, in bursts instead of evenly.
    pub fn wait(&mut self, cost: Duration) {
        self.owed += cost;
        if self.owed >= Self::MIN_SLEEP {
            may::coroutine::sleep(self.owed);
            self.owed = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn small_waits_add_up_to_their_total() {
        let mut pacer = Pacer::new();
        let started = Instant::now();
        for _ in 0..20 {
            pacer.wait(Duration::from_micros(250)); // 5 ms in all
        }
        assert!(started.elapsed() >= Duration::from_millis(5));
        assert_eq!(pacer.owed, Duration::ZERO);
    }

    #[test]
    fn nothing_is_slept_until_a_millisecond_is_owed() {
        let mut pacer = Pacer::new();
        pacer.wait(Duration::from_micros(900));
        assert_eq!(pacer.owed, Duration::from_micros(900));
        pacer.wait(Duration::from_micros(100));
        assert_eq!(pacer.owed, Duration::ZERO);
    }
}
