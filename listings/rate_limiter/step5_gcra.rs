//! Step 5: GCRA. The token bucket's decisions from one timestamp, the
//! theoretical arrival time of the next unit: what `governor` and
//! redis-cell keep per key.

use may_patterns::ratelimit::trace::{adversarial, replay, Report};
use may_patterns::ratelimit::{Algorithm, Gcra, Quota, TokenBucket};
use std::time::Duration;

// ANCHOR: main
/// GCRA on the chapter's trace.
fn on_the_trace(quota: Quota) -> Report {
    replay(&Gcra::new(quota), &adversarial(quota))
}

/// Run GCRA and the token bucket side by side on the trace: how many
/// decisions differ, and the bytes of state each keeps per key.
fn against_the_token_bucket(quota: Quota) -> (usize, usize, usize, usize) {
    let (gcra, bucket) = (Gcra::new(quota), TokenBucket::new(quota));
    let (mut g, mut b) = (
        gcra.new_state(Duration::ZERO),
        bucket.new_state(Duration::ZERO),
    );
    let trace = adversarial(quota);
    let differ = trace
        .iter()
        .filter(|a| gcra.decide(&mut g, a.at, a.cost) != bucket.decide(&mut b, a.at, a.cost))
        .count();
    (
        trace.len(),
        differ,
        gcra.state_bytes(&g),
        bucket.state_bytes(&b),
    )
}

fn main() {
    let quota = Quota::per_second(10, 10).expect("a valid quota");
    println!("{}", on_the_trace(quota));
    let (decisions, differ, gcra, bucket) = against_the_token_bucket(quota);
    println!("against the token bucket: {differ} of {decisions} decisions differ");
    println!("state per key: gcra {gcra} bytes, token bucket {bucket} bytes");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::ratelimit::trace::Phase;

    #[test]
    fn gcra_admits_what_the_token_bucket_admits() {
        let report = on_the_trace(Quota::per_second(10, 10).unwrap());
        let got = Phase::ALL.map(|p| {
            let r = report.phase(p);
            (r.offered, r.admitted, r.most_in_a_period)
        });
        assert_eq!(got, [(20, 10, 10), (80, 49, 19), (40, 20, 19)]);
    }

    #[test]
    fn the_same_decisions_from_half_the_state() {
        let quota = Quota::per_second(10, 10).unwrap();
        assert_eq!(against_the_token_bucket(quota), (140, 0, 8, 16));
    }
}
