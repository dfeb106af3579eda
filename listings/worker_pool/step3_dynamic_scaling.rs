//! Step 3: a pool that grows for a burst and shrinks after it.
//!
//! The same bursty trace (a fixed seed: three bursts of 80 jobs, 400 ms
//! apart, each job waiting 1-5 ms) runs on three pools: fixed at `MIN`
//! workers, fixed at `MAX`, and dynamic between the two. For each it prints
//! the jobs' latency (submit to done), the average worker count over the
//! trace (the dynamic pool's from its timeline, one sample per scaler
//! tick; a fixed pool has no scaler and always its size) and the scale
//! events.
//!
//! The jobs wait on `may_patterns::alarm`, not on a may sleep: hundreds of
//! short sleeps a second are what may 0.3.51's timer races need (the
//! Pitfalls reference, "Known may 0.3.51 bugs").

use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::pool::{Config, JobHandle, Pool, ScaleKind};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const MIN: usize = 2;
const MAX: usize = 8;
const BURSTS: u32 = 3;
const BURST: usize = 80;
/// A burst arrives every PERIOD: far more than a burst takes, so each pool
/// ends every burst, and the dynamic one has time to shrink.
const PERIOD: Duration = Duration::from_millis(400);
const SEED: u64 = 13;

// ANCHOR: config
/// The dynamic pool: it looks every 5 ms, grows when a job has waited
/// 10 ms, and gives back workers that were spare for all of `idle`.
fn dynamic(idle: Duration) -> Config {
    let mut config = Config::dynamic(MIN, MAX, 2 * BURST);
    config.tick = Duration::from_millis(5);
    config.grow_after = Duration::from_millis(10);
    config.idle = idle;
    config
}

/// Two settings of `idle` to compare: a quarter of the gap between bursts
/// and a sixteenth (shorter, and the pool pays for its spare workers for
/// less time after each burst).
const IDLE: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(25)];
// ANCHOR_END: config

// ANCHOR: trace
/// How long each job of the trace waits, burst by burst: the same on every
/// run and for every pool.
fn trace() -> Vec<Vec<Duration>> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    (0..BURSTS)
        .map(|_| {
            (0..BURST)
                .map(|_| Duration::from_millis(rng.u64(1..=5)))
                .collect()
        })
        .collect()
}

/// Replay the trace on a pool made from `config`: each burst submitted at
/// once at its time, then wait out the last period.
fn replay(config: Config) -> Outcome {
    let pool = Pool::new(config.clone()).expect("a valid config");
    let start = Instant::now();
    let mut handles: Vec<JobHandle<()>> = Vec::new();
    for (i, burst) in trace().into_iter().enumerate() {
        let at = start + PERIOD * i as u32;
        alarm::shared().sleep(at.saturating_duration_since(Instant::now()));
        for wait in burst {
            handles.push(
                pool.submit(move || alarm::shared().sleep(wait))
                    .expect("open"),
            );
        }
    }
    let mut latency: Vec<Duration> = handles
        .into_iter()
        .map(|h| {
            let ((), t) = h.join_timed().expect("no job fails");
            t.queued + t.ran
        })
        .collect();
    let end = start + PERIOD * BURSTS;
    alarm::shared().sleep(end.saturating_duration_since(Instant::now()));
    latency.sort();
    Outcome::new(&config, &pool, latency)
}
// ANCHOR_END: trace

/// What one pool did with the trace.
#[derive(Debug)]
struct Outcome {
    p50: Duration,
    p99: Duration,
    average_workers: f64,
    fewest: usize,
    most: usize,
    /// Workers at the end of the trace, a period after its last burst.
    at_end: usize,
    grew: usize,
    shrank: usize,
}

// ANCHOR: outcome
impl Outcome {
    fn new(config: &Config, pool: &Pool, latency: Vec<Duration>) -> Outcome {
        let at = |q: f64| latency[((latency.len() - 1) as f64 * q).round() as usize];
        // One sample per tick, so their mean is the time-average. A fixed
        // pool records none: it is always its size.
        let workers: Vec<usize> = match pool.timeline() {
            samples if samples.is_empty() => vec![config.max],
            samples => samples.iter().map(|s| s.workers).collect(),
        };
        let events = pool.events();
        Outcome {
            p50: at(0.50),
            p99: at(0.99),
            average_workers: workers.iter().sum::<usize>() as f64 / workers.len() as f64,
            fewest: *workers.iter().min().unwrap(),
            most: *workers.iter().max().unwrap(),
            at_end: *workers.last().unwrap(),
            grew: events.iter().filter(|e| e.kind == ScaleKind::Grew).count(),
            shrank: events
                .iter()
                .filter(|e| e.kind == ScaleKind::Shrank)
                .count(),
        }
    }
}
// ANCHOR_END: outcome

fn main() {
    configure_once(TEST_SETTINGS);
    println!(
        "{BURSTS} bursts of {BURST} jobs, {PERIOD:?} apart, each job waiting 1-5ms (seed {SEED})"
    );
    // Measured values are not padded: the book's output check compares
    // them loosely, but not the spaces a wider number would take.
    println!("latency is submit to done; workers: average (fewest-most), at the end");
    let pools = [
        (format!("fixed({MIN})"), Config::fixed(MIN, 2 * BURST)),
        (format!("fixed({MAX})"), Config::fixed(MAX, 2 * BURST)),
    ]
    .into_iter()
    .chain(IDLE.map(|idle| (format!("dynamic, idle {idle:?}"), dynamic(idle))));
    for (name, config) in pools {
        let o = replay(config);
        println!(
            "{name:<20}  p50 {:.1?}  p99 {:.1?}  workers ~{:.1} (~{}-~{}), ~{}  ~{} grew, ~{} shrank",
            o.p50, o.p99, o.average_workers, o.fewest, o.most, o.at_end, o.grew, o.shrank
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::{Mutex, MutexGuard};

    /// The tests time pools on the same two cores: one at a time, so one
    /// test's burst does not slow the other's.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn setup() -> MutexGuard<'static, ()> {
        configure_for_tests();
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn the_trace_is_the_same_on_every_run() {
        assert_eq!(trace(), trace());
        assert_eq!(trace().concat().len(), BURSTS as usize * BURST);
    }

    #[test]
    fn the_dynamic_pool_grows_for_a_burst_shrinks_after_and_stays_in_bounds() {
        let _one = setup();
        let o = replay(dynamic(IDLE[0]));
        assert!(o.most > MIN, "it never grew: {o:?}");
        assert!(o.most <= MAX, "above max: {o:?}");
        assert!(o.fewest >= MIN, "below min: {o:?}");
        // A period after the last burst, the spare workers have retired.
        assert!(o.shrank >= 1, "it never shrank: {o:?}");
        assert_eq!(o.at_end, MIN, "{o:?}");
        assert!(o.average_workers < MAX as f64, "{o:?}");
    }

    #[test]
    fn the_dynamic_pool_cuts_the_tail_of_the_small_fixed_pool() {
        let _one = setup();
        let small = replay(Config::fixed(MIN, 2 * BURST));
        let dynamic = replay(dynamic(IDLE[0]));
        assert!(
            dynamic.p99 < small.p99,
            "dynamic {dynamic:?}, fixed {small:?}"
        );
    }
}
