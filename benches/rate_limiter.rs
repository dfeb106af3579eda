//! The rate-limiting chapter's numbers: each algorithm's cost per decision,
//! state per key and what it admits on the chapter's trace, then our keyed
//! `Limiter` against `governor`, the crate most Rust users would pick.
//!
//! 1. One hot key, arrivals at twice the rate (half admitted, half denied,
//!    like the trace's steady phase), time given to the rule directly:
//!    criterion's median per decision for the six algorithms, and governor's
//!    direct limiter on its `FakeRelativeClock` moved the same way. The
//!    trace columns replay `ratelimit::trace::adversarial` through each,
//!    governor included. Writes `book/rate_limiter/benchmarks.md`.
//! 2. Keyed, on real clocks: `Limiter::check` against governor's
//!    `check_key` (never `until_ready`), on one thread and from 1,000
//!    coroutines on 2 may workers, over 10,000 keys or one hot key. Each
//!    cell is the median of 7 runs of at least a million decisions.
//!    Writes `book/rate_limiter/governor.md`.
//!
//! `cargo bench --bench rate_limiter` rewrites both (about a minute).

mod support;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::InMemoryState;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};
use may_patterns::clock::{Clock, ManualClock, MonotonicClock};
use may_patterns::ratelimit::trace::{adversarial, replay, replay_decisions, Report};
use may_patterns::ratelimit::{
    Algorithm, AlgorithmKind, AnyAlgorithm, Decision, Gcra, Limiter, Quota,
};
use support::Cell;

const CHAPTER: &str = "rate_limiter";
const GROUP: &str = "rate_limiter_decide";

/// The chapter's quota: 10 per second, 10 at once.
fn trace_quota() -> Quota {
    Quota::per_second(10, 10).expect("a valid quota")
}

fn governor_quota(rate: u32, burst: u32) -> governor::Quota {
    let nonzero = |n| NonZeroU32::new(n).expect("not zero");
    governor::Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst))
}

// ---- 1. the six algorithms and governor on one key --------------------------

/// Bench one algorithm (one decision per iteration, each half an interval
/// after the previous), replay the trace through it, and make its row.
fn algorithm_row<A: Algorithm>(c: &mut Criterion, algorithm: A) -> (String, Vec<Cell>) {
    let step = algorithm.quota().interval() / 2;
    c.benchmark_group(GROUP)
        .bench_function(algorithm.name(), |b| {
            let (mut state, mut now) = (algorithm.new_state(Duration::ZERO), Duration::ZERO);
            b.iter(|| {
                now += step;
                black_box(algorithm.decide(&mut state, black_box(now), 1))
            })
        });
    let trace = adversarial(algorithm.quota());
    let mut state = algorithm.new_state(Duration::ZERO);
    for arrival in &trace {
        algorithm.decide(&mut state, arrival.at, arrival.cost);
    }
    let bytes = algorithm.state_bytes(&state);
    trace_row(algorithm.name(), &replay(&algorithm, &trace), bytes)
}

fn bench_governor_direct(c: &mut Criterion) {
    let step = trace_quota().interval() / 2;
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::direct_with_clock(governor_quota(10, 10), clock.clone());
    c.benchmark_group(GROUP).bench_function("governor", |b| {
        b.iter(|| {
            clock.advance(step);
            black_box(limiter.check().is_ok())
        })
    });
}

/// Governor's direct limiter replayed through the trace on a fake clock.
fn governor_on_the_trace() -> Report {
    let quota = trace_quota();
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::direct_with_clock(governor_quota(10, 10), clock.clone());
    let mut at = Duration::ZERO;
    replay_decisions("governor", quota, &adversarial(quota), |arrival| {
        clock.advance(arrival.at - at);
        at = arrival.at;
        match limiter.check() {
            // Only admitted-or-not and the wait count in a report.
            Ok(()) => Decision::Allowed {
                remaining: 0,
                reset: Duration::ZERO,
            },
            Err(not_until) => Decision::Denied {
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(&clock)),
                reset: Duration::ZERO,
            },
        }
    })
}

fn trace_row(name: &str, report: &Report, bytes: usize) -> (String, Vec<Cell>) {
    let ns = support::median_ns(GROUP, name).map_or(Cell::Empty, Cell::Nanos);
    let most = report.phases.iter().map(|p| p.most_in_a_period).max();
    (
        name.to_string(),
        vec![
            ns,
            Cell::Bytes(bytes as f64),
            Cell::Whole(report.admitted()),
            Cell::Whole(most.unwrap_or(0)),
        ],
    )
}

fn algorithms_table(c: &mut Criterion) {
    let quota = trace_quota();
    let mut rows = Vec::new();
    // Each concrete type, as a program that knows its algorithm uses it.
    for kind in AlgorithmKind::ALL {
        rows.push(match AnyAlgorithm::new(kind, quota) {
            AnyAlgorithm::FixedWindow(a) => algorithm_row(c, a),
            AnyAlgorithm::SlidingLog(a) => algorithm_row(c, a),
            AnyAlgorithm::SlidingCounter(a) => algorithm_row(c, a),
            AnyAlgorithm::TokenBucket(a) => algorithm_row(c, a),
            AnyAlgorithm::Gcra(a) => algorithm_row(c, a),
            AnyAlgorithm::LeakyQueue(a) => algorithm_row(c, a),
        });
    }
    bench_governor_direct(c);
    let governor_bytes = std::mem::size_of::<InMemoryState>();
    rows.push(trace_row(
        "governor",
        &governor_on_the_trace(),
        governor_bytes,
    ));
    let offered = adversarial(quota).len();
    let note = format!(
        "One key at {quota}. Time per decision: criterion's median, arrivals at twice \
         the rate (half admitted), `now` handed to the rule (governor: its fake clock). \
         State per key: the algorithm's own, after the trace (a keyed map around it is not counted). \
         Admitted: of the trace's {offered} arrivals; most in any 1 s: the limit is 10."
    );
    support::write_cells_table(
        CHAPTER,
        "benchmarks.md",
        &note,
        &[
            "time per decision",
            "state per key",
            "admitted on the trace",
            "most in any 1 s",
        ],
        &rows,
    );
}

// ---- 2. keyed: our Limiter against governor's check_key ---------------------

const RUNS: usize = 7;
const DECISIONS: u64 = 2_000_000;
const COROUTINES: u64 = 1_000;
const PER_COROUTINE: u64 = 1_000;
const KEYS: u64 = 10_000;

/// The median over `RUNS` of `run()`, which returns ns per decision.
fn median(mut run: impl FnMut() -> f64) -> f64 {
    let mut times: Vec<f64> = (0..RUNS).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

/// `DECISIONS` calls of `check(i)` on this thread; ns per call.
fn one_thread(check: impl Fn(u64) -> bool) -> f64 {
    median(|| {
        let started = Instant::now();
        for i in 0..DECISIONS {
            black_box(check(black_box(i)));
        }
        started.elapsed().as_nanos() as f64 / DECISIONS as f64
    })
}

/// `COROUTINES` coroutines on the 2 may workers, each `PER_COROUTINE`
/// calls of `check(i)` with its own run of `i`; wall ns per call.
fn coroutines(check: impl Fn(u64) -> bool + Send + Sync + 'static) -> f64 {
    let check = Arc::new(check);
    median(|| {
        let started = Instant::now();
        let handles: Vec<_> = (0..COROUTINES)
            .map(|c| {
                let check = Arc::clone(&check);
                may::go!(move || {
                    for j in 0..PER_COROUTINE {
                        black_box(check(c * PER_COROUTINE + j));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a checking coroutine");
        }
        started.elapsed().as_nanos() as f64 / (COROUTINES * PER_COROUTINE) as f64
    })
}

/// A quota no key reaches here (every decision admitted), or one every key
/// exceeds (nearly every decision denied).
fn quotas(admitted: bool) -> (Quota, governor::Quota) {
    if admitted {
        let ours = Quota::per_second(1_000_000_000, 1_000_000_000).expect("a valid quota");
        (ours, governor_quota(1_000_000_000, 1_000_000_000))
    } else {
        (trace_quota(), governor_quota(10, 10))
    }
}

/// One measurement on this thread, or from the coroutines.
fn measure(contended: bool, check: impl Fn(u64) -> bool + Send + Sync + 'static) -> f64 {
    if contended {
        coroutines(check)
    } else {
        one_thread(check)
    }
}

/// Ours and governor's keyed limiters on `keys` keys, on real clocks and
/// then on fake ones (time stands still; the quota is large enough that it
/// does not matter): ns per decision, [ours, governor, ours fake, governor fake].
fn keyed(keys: u64, admitted: bool, contended: bool) -> [f64; 4] {
    let (quota, gquota) = quotas(admitted);
    let max_keys = 2 * KEYS as usize;
    let ours: Limiter<u64, Gcra> = Limiter::new(Gcra::new(quota), max_keys);
    let theirs: DefaultKeyedRateLimiter<u64> = RateLimiter::keyed(gquota);
    let ours_fake = Limiter::with_clock(Gcra::new(quota), max_keys, ManualClock::new());
    let store = DefaultKeyedStateStore::<u64>::default();
    let theirs_fake: RateLimiter<u64, _, FakeRelativeClock, NoOpMiddleware<Nanos>> =
        RateLimiter::new(gquota, store, FakeRelativeClock::default());
    [
        measure(contended, move |i| ours.check(&(i % keys), 1).is_admitted()),
        measure(contended, move |i| theirs.check_key(&(i % keys)).is_ok()),
        measure(contended, move |i| {
            ours_fake.check(&(i % keys), 1).is_admitted()
        }),
        measure(contended, move |i| {
            theirs_fake.check_key(&(i % keys)).is_ok()
        }),
    ]
}

/// The same without keys: `Gcra::decide` on one state against governor's
/// direct limiter, reading a real clock, then a fake one.
fn direct() -> [f64; 4] {
    let (quota, gquota) = quotas(true);
    let gcra = Gcra::new(quota);
    let state = std::cell::RefCell::new(gcra.new_state(Duration::ZERO));
    let decide = |now| gcra.decide(&mut state.borrow_mut(), now, 1).is_admitted();
    let (clock, manual) = (MonotonicClock::new(), ManualClock::new());
    let theirs: DefaultDirectRateLimiter = RateLimiter::direct(gquota);
    let theirs_fake = RateLimiter::direct_with_clock(gquota, FakeRelativeClock::default());
    [
        one_thread(|_| decide(clock.now())),
        one_thread(|_| theirs.check().is_ok()),
        one_thread(|_| decide(manual.now())),
        one_thread(|_| theirs_fake.check().is_ok()),
    ]
}

/// What one clock read costs: ours (`Instant::elapsed`) and governor's
/// default (quanta, the TSC).
fn clock_reads() -> [f64; 2] {
    use governor::clock::Clock as _;
    let ours = MonotonicClock::new();
    let theirs = governor::clock::DefaultClock::default();
    let start = theirs.now();
    [
        one_thread(|_| ours.now() > Duration::ZERO),
        one_thread(|_| theirs.now() > start),
    ]
}

fn keyed_table() {
    let ratio = |a: f64, b: f64| Cell::Count(a / b);
    let row = |what: &str, [ours, theirs, ours_fake, theirs_fake]: [f64; 4]| {
        let cells = vec![
            Cell::Nanos(ours),
            Cell::Nanos(theirs),
            ratio(ours, theirs),
            Cell::Nanos(ours_fake),
            Cell::Nanos(theirs_fake),
            ratio(ours_fake, theirs_fake),
        ];
        (what.to_string(), cells)
    };
    let [ours_clock, theirs_clock] = clock_reads();
    let mut rows = vec![(
        "one clock read (ours: `Instant`; governor: quanta)".to_string(),
        vec![
            Cell::Nanos(ours_clock),
            Cell::Nanos(theirs_clock),
            ratio(ours_clock, theirs_clock),
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
        ],
    )];
    rows.push(row("direct (one limit, no key), one thread", direct()));
    rows.push(row(
        "one thread, one hot key, admitted",
        keyed(1, true, false),
    ));
    rows.push(row(
        "one thread, one hot key, denied",
        keyed(1, false, false),
    ));
    rows.push(row(
        "one thread, 10,000 keys in turn, admitted",
        keyed(KEYS, true, false),
    ));
    rows.push(row(
        "1,000 coroutines on 2 workers, 10,000 keys, admitted",
        keyed(KEYS, true, true),
    ));
    rows.push(row(
        "1,000 coroutines on 2 workers, one hot key, admitted",
        keyed(1, true, true),
    ));
    support::write_cells_table(
        CHAPTER,
        "governor.md",
        "Wall time per decision, median of 7 runs of 1 or 2 million decisions. Ours: \
         `Limiter<u64, Gcra>` (std-Mutex shards) or `Gcra::decide`; governor 0.10: \
         `RateLimiter::keyed` (dashmap) with `check_key`, or `RateLimiter::direct`. \
         Real clocks: ours `MonotonicClock`, governor's quanta; fake: `ManualClock` and \
         `FakeRelativeClock`, time standing still. Admitted: 1e9 per second, burst 1e9; \
         denied: 10 per second, burst 10.",
        &[
            "ours",
            "governor",
            "ours ÷ governor",
            "ours, fake clock",
            "governor, fake clock",
            "ours ÷ governor, fake clocks",
        ],
        &rows,
    );
}

fn main() {
    support::configure_may();
    let mut c = support::criterion()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    algorithms_table(&mut c);
    keyed_table();
}
