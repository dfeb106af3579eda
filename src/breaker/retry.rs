//! How long to wait before each retry: fixed, exponential, or exponential
//! with full jitter, as in Marc Brooker's "Exponential Backoff And Jitter"
//! (AWS Architecture Blog, 2015,
//! <https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>).
//!
//! Without jitter, every client that failed at the same moment retries at the
//! same moment, so a backend that is recovering meets the whole crowd again,
//! again and again. Full jitter spreads each retry uniformly over
//! `[0, min(cap, base * 2^retry)]`, which the article measured to do the
//! least total work of the variants it tried.
//!
//! Every delay is rounded up to at least 1 ms, in whole milliseconds:
//! may 0.3.51 keeps a coroutine's timeout in whole milliseconds, treats 0 as
//! "none", and a sleep of a few microseconds can corrupt its heap (the
//! book's Pitfalls reference, "Known may 0.3.51 bugs"), so a shorter delay is
//! not one may can keep.

use std::time::Duration;

use crate::timeout::for_may;

/// The shortest delay a policy returns: the shortest wait may can keep.
pub const MIN_DELAY: Duration = Duration::from_millis(1);

/// Whether to randomise the exponential delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `min(cap, base * 2^retry)`.
    None,
    /// Uniform in `[0, min(cap, base * 2^retry)]` (AWS's "full jitter").
    Full,
}

// ANCHOR: policy
/// How many times to retry and how long to wait before each retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: u32,
    /// The delay before the first retry; it doubles for each one after.
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
    /// Whether to spread the delays at random.
    pub jitter: Jitter,
}
// ANCHOR_END: policy

impl RetryPolicy {
    /// `max_retries` retries, each after the same `delay` (the policy that
    /// makes an outage worse: every client comes back at once).
    pub fn fixed(max_retries: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_retries,
            base: delay,
            cap: delay,
            jitter: Jitter::None,
        }
    }

    /// Delays `base`, `2 base`, `4 base`, ... up to `cap`, without jitter.
    pub fn exponential(max_retries: u32, base: Duration, cap: Duration) -> Self {
        RetryPolicy {
            max_retries,
            base,
            cap,
            jitter: Jitter::None,
        }
    }

    /// Exponential delays with full jitter.
    pub fn full_jitter(max_retries: u32, base: Duration, cap: Duration) -> Self {
        RetryPolicy {
            jitter: Jitter::Full,
            ..RetryPolicy::exponential(max_retries, base, cap)
        }
    }

    // ANCHOR: delay
    /// The wait before retry number `retry`, counting from 0 (the first
    /// retry waits `delay(0, ..)`). Draws from `rng` only with
    /// [`Jitter::Full`], so a seeded `fastrand::Rng` replays the same delays.
    /// Never under [`MIN_DELAY`], always whole milliseconds.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        // 2^retry saturates at u32::MAX, far past any cap worth having.
        let doubled = self.base.saturating_mul(2u32.saturating_pow(retry));
        let ceiling = doubled.min(self.cap);
        let delay = match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(0..=nanos))
            }
        };
        for_may(delay).max(MIN_DELAY)
    }
    // ANCHOR_END: delay

    /// The delays before each of the `max_retries` retries, in order.
    pub fn delays<'a>(&'a self, rng: &'a mut fastrand::Rng) -> impl Iterator<Item = Duration> + 'a {
        (0..self.max_retries).map(move |retry| self.delay(retry, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fixed_waits_the_same_every_time() {
        let policy = RetryPolicy::fixed(3, ms(50));
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(policy.delays(&mut rng).collect::<Vec<_>>(), [ms(50); 3]);
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let policy = RetryPolicy::exponential(6, ms(100), ms(1_000));
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            policy.delays(&mut rng).collect::<Vec<_>>(),
            [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]
        );
        // No overflow for absurd retry numbers.
        assert_eq!(policy.delay(u32::MAX, &mut rng), ms(1_000));
    }

    #[test]
    fn full_jitter_replays_exactly_from_a_seed() {
        let policy = RetryPolicy::full_jitter(5, ms(100), ms(1_000));
        let first: Vec<_> = policy.delays(&mut fastrand::Rng::with_seed(42)).collect();
        let again: Vec<_> = policy.delays(&mut fastrand::Rng::with_seed(42)).collect();
        let other: Vec<_> = policy.delays(&mut fastrand::Rng::with_seed(43)).collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
        // Pinned, so a change of fastrand's stream (which would change the
        // book's shown output) fails here first.
        assert_eq!(first, PINNED_SEED_42.map(ms));
    }

    /// `full_jitter(5, 100ms, 1s)` from `Rng::with_seed(42)`.
    const PINNED_SEED_42: [u64; 5] = [80, 99, 322, 32, 543];

    #[test]
    fn full_jitter_stays_within_its_bounds_and_spreads_over_them() {
        let policy = RetryPolicy::full_jitter(10, ms(10), ms(80));
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 0..10u32 {
            let ceiling = ms(10 * 2u64.pow(retry)).min(ms(80));
            let draws: Vec<_> = (0..2_000).map(|_| policy.delay(retry, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d >= MIN_DELAY && *d <= ceiling));
            let mean = draws.iter().sum::<Duration>() / 2_000;
            // Uniform over [0, ceiling], rounded up to whole ms: the mean is
            // near half the ceiling (loose bounds: this is not a perf test).
            assert!(
                mean > ceiling * 4 / 10 && mean < ceiling * 6 / 10,
                "{mean:?}"
            );
        }
    }

    #[test]
    fn no_delay_is_shorter_than_may_can_keep() {
        let mut rng = fastrand::Rng::with_seed(3);
        let tiny = RetryPolicy::exponential(3, Duration::from_micros(100), ms(1));
        assert_eq!(tiny.delays(&mut rng).collect::<Vec<_>>(), [ms(1); 3]);
        let zero = RetryPolicy::fixed(1, Duration::ZERO);
        assert_eq!(zero.delay(0, &mut rng), MIN_DELAY);
        // 1.2 ms is rounded up to 2 ms, never down.
        let odd = RetryPolicy::fixed(1, Duration::from_micros(1_200));
        assert_eq!(odd.delay(0, &mut rng), ms(2));
    }
}
