//! Exercise 2 (solution): stop asking a backend that keeps failing.
//!
//! A scatter-gather client that asks a dead backend on every query pays for
//! it every time: a connect error at best, the whole deadline at worst. A
//! `FailureTracker` kept across queries skips a backend after
//! `TRIP_AFTER` failures in a row, and lets one query in `PROBE_EVERY`
//! through to it as a probe, so a backend that recovers is used again.

// ANCHOR: tracker
/// What the tracker knows about one backend.
#[derive(Debug, Default, Clone)]
struct Health {
    /// Failures in a row; a success resets it.
    failures_in_a_row: u32,
    /// Queries skipped since the backend tripped.
    skipped: u32,
}

/// Per-backend failure counts that outlive one query.
struct FailureTracker {
    backends: Vec<Health>,
}

impl FailureTracker {
    /// Failures in a row after which a backend is skipped.
    const TRIP_AFTER: u32 = 3;
    /// While skipped, every this-many-th query still asks it (a probe).
    const PROBE_EVERY: u32 = 4;

    fn new(backends: usize) -> Self {
        FailureTracker {
            backends: vec![Health::default(); backends],
        }
    }

    /// Whether this query should ask `backend`.
    fn should_ask(&mut self, backend: usize) -> bool {
        let health = &mut self.backends[backend];
        if health.failures_in_a_row < Self::TRIP_AFTER {
            return true;
        }
        health.skipped += 1;
        if health.skipped == Self::PROBE_EVERY {
            health.skipped = 0;
            return true; // the probe
        }
        false
    }

    /// What asking `backend` gave.
    fn record(&mut self, backend: usize, answered: bool) {
        let health = &mut self.backends[backend];
        if answered {
            *health = Health::default();
        } else {
            health.failures_in_a_row += 1;
        }
    }
}
// ANCHOR_END: tracker

/// Whether `backend` answers query `query`: backend 2 is down for queries
/// 0-11, then comes back.
fn answers(backend: usize, query: usize) -> bool {
    backend != 2 || query >= 12
}

/// Run `queries` queries over 3 backends; for each, the backends asked.
fn simulate(queries: usize) -> Vec<Vec<usize>> {
    let mut tracker = FailureTracker::new(3);
    (0..queries)
        .map(|query| {
            let asked: Vec<usize> = (0..3).filter(|&b| tracker.should_ask(b)).collect();
            for &b in &asked {
                tracker.record(b, answers(b, query));
            }
            asked
        })
        .collect()
}

fn main() {
    for (query, asked) in simulate(20).iter().enumerate() {
        let skipped = !asked.contains(&2);
        println!(
            "query {query:>2}: asked {asked:?}{}",
            if skipped { ", skipped 2" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_backend_is_skipped_probed_and_taken_back() {
        let asked = simulate(20);
        let asked_2: Vec<usize> = (0..20).filter(|&q| asked[q].contains(&2)).collect();
        // Queries 0-2 fail and trip it; then one probe in every 4 queries:
        // 6 and 10 fail, 14 answers (it is back from query 12), and from
        // then on it is asked every time.
        assert_eq!(asked_2, [0, 1, 2, 6, 10, 14, 15, 16, 17, 18, 19]);
        assert!(asked.iter().all(|a| a.contains(&0) && a.contains(&1)));
    }

    #[test]
    fn one_success_resets_the_count() {
        let mut t = FailureTracker::new(1);
        for answered in [false, false, true, false, false] {
            assert!(t.should_ask(0));
            t.record(0, answered);
        }
        assert!(t.should_ask(0), "two failures in a row, not three");
    }
}
