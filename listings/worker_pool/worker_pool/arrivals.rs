//! The arrival trace: `--jobs` jobs in bursts of `--burst`, one burst every
//! `--gap`. Bursts are what a dynamic pool is for: a fixed pool sized for
//! the quiet time queues each burst, one sized for the burst idles between.

use std::ops::Range;
use std::time::Duration;

/// One burst: its jobs (by index) and when they are all submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    pub at: Duration,
    pub jobs: Range<usize>,
}

// ANCHOR: trace
/// The bursts of a run: `jobs` jobs, `burst` at a time (the last may hold
/// fewer), the k-th at `k * gap`.
pub fn trace(jobs: usize, burst: usize, gap: Duration) -> Vec<Burst> {
    (0..jobs.div_ceil(burst))
        .map(|k| Burst {
            at: gap * k as u32,
            jobs: k * burst..jobs.min((k + 1) * burst),
        })
        .collect()
}
// ANCHOR_END: trace

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_cover_every_job_once_and_the_last_may_be_short() {
        let ms = Duration::from_millis;
        let bursts = trace(5, 2, ms(100));
        assert_eq!(
            bursts,
            [
                Burst {
                    at: ms(0),
                    jobs: 0..2
                },
                Burst {
                    at: ms(100),
                    jobs: 2..4
                },
                Burst {
                    at: ms(200),
                    jobs: 4..5
                },
            ]
        );
    }
}
