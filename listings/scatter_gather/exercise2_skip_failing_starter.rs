//! Exercise 2 (starter): stop asking a backend that keeps failing.
//!
//! A scatter-gather client that asks a dead backend on every query pays for
//! it every time: a connect error at best, the whole deadline at worst. A
//! `FailureTracker` kept across queries skips a backend after
//! `TRIP_AFTER` failures in a row, and lets one query in `PROBE_EVERY`
//! through to it as a probe, so a backend that recovers is used again.
//! TODO: complete `should_ask` and `record`.

// ANCHOR: tracker
/// What the tracker knows about one backend.
#[derive(Debug, Default, Clone)]
#[allow(dead_code)] // the TODO needs it
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
    #[allow(dead_code)] // the TODO needs it
    const TRIP_AFTER: u32 = 3;
    /// While skipped, every this-many-th query still asks it (a probe).
    #[allow(dead_code)] // the TODO needs it
    const PROBE_EVERY: u32 = 4;

    fn new(backends: usize) -> Self {
        FailureTracker {
            backends: vec![Health::default(); backends],
        }
    }

    /// Whether this query should ask `backend`.
    fn should_ask(&mut self, backend: usize) -> bool {
        // TODO: skip a backend with TRIP_AFTER failures in a row, except
        // for one probe every PROBE_EVERY queries.
        let _ = &mut self.backends[backend];
        true
    }

    /// What asking `backend` gave.
    fn record(&mut self, backend: usize, answered: bool) {
        // TODO: count failures in a row; a success starts again from zero.
        let _ = (&mut self.backends[backend], answered);
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
    fn the_starter_asks_every_backend_every_time() {
        let asked = simulate(20);
        assert!(asked.iter().all(|a| a == &[0, 1, 2]));
    }
}
