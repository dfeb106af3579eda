//! Helpers the algorithms' unit tests share.

use super::{Algorithm, Decision};
use std::time::Duration;

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const NS: Duration = Duration::from_nanos(1);

/// At `at`, a request of `cost` is denied with exactly `retry_after`; it is
/// still denied 1 ns before `at + retry_after` and admitted at it.
pub(crate) fn assert_retry_exact<A: Algorithm>(
    alg: &A,
    state: &A::State,
    at: Duration,
    cost: u64,
    retry_after: Duration,
) where
    A::State: Clone,
{
    let mut s = state.clone();
    match alg.decide(&mut s, at, cost) {
        Decision::Denied { retry_after: r, .. } => assert_eq!(r, retry_after, "retry_after"),
        other => panic!("expected a denial at {at:?}, got {other:?}"),
    }
    let mut s = state.clone();
    let early = alg.decide(&mut s, at + retry_after - NS, cost);
    assert!(!early.is_admitted(), "admitted 1 ns early: {early:?}");
    let mut s = state.clone();
    let on_time = alg.decide(&mut s, at + retry_after, cost);
    assert!(on_time.is_admitted(), "denied on time: {on_time:?}");
}

/// An hour before the end of `u64` nanoseconds an algorithm still counts,
/// and at `Duration::MAX` (past it) nothing panics.
pub(crate) fn assert_huge_times_do_not_wrap<A: Algorithm>(alg: &A) {
    let far = Duration::from_nanos(u64::MAX) - Duration::from_secs(3600);
    let mut s = alg.new_state(far);
    let most = alg.quota().rate().max(alg.quota().burst());
    let admitted = (0..=most).filter(|_| alg.decide(&mut s, far, 1).is_admitted());
    assert!(
        (1..=most).contains(&(admitted.count() as u64)),
        "counted at {far:?}"
    );
    for cost in [1, u64::MAX] {
        alg.decide(&mut s, Duration::MAX, cost);
        alg.decide(&mut s, far, cost);
    }
    let mut fresh = alg.new_state(Duration::MAX);
    let never = alg.decide(&mut fresh, Duration::MAX, u64::MAX);
    assert!(matches!(
        never,
        Decision::Denied {
            retry_after: Duration::MAX,
            ..
        }
    ));
}
