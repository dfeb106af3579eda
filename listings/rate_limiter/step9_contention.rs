//! Step 9: one limiter shared by 1,000 coroutines on two workers.
//!
//! Every coroutine of a server calls the limiter, from whichever worker it
//! runs on, so the state is shared across OS threads. The keyed `Limiter`
//! splits its keys over 32 shards, each a std `Mutex` held for one decision
//! and never across a yield. Here it runs against one std `Mutex` around
//! one map, and one `may::sync::Mutex` (which parks the coroutine instead of
//! the thread), on one hot key and on a thousand keys, and counts what each
//! admitted: exactly the quota, or an update was lost.

use may::go;
use may::sync::SyncFlag;
use may_patterns::clock::{Clock, ManualClock};
use may_patterns::ratelimit::{Algorithm, Gcra, GcraState, Limiter, Quota};
use may_patterns::runtime::{configure_once, Settings};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const COROUTINES: u32 = 1_000;

// ANCHOR: shared
/// A limiter many coroutines share: one unit for `key`, admitted or not.
trait Shared: Send + Sync {
    fn admit(&self, key: u32) -> bool;
}

impl Shared for Limiter<u32, Gcra, ManualClock> {
    fn admit(&self, key: u32) -> bool {
        self.check(&key, 1).is_admitted()
    }
}

/// The first thing one would write: one lock around one map.
struct OneStdMutex {
    gcra: Gcra,
    clock: ManualClock,
    keys: std::sync::Mutex<HashMap<u32, GcraState>>,
}

impl Shared for OneStdMutex {
    fn admit(&self, key: u32) -> bool {
        let now = self.clock.now();
        let mut keys = self.keys.lock().unwrap();
        let state = keys.entry(key).or_insert_with(|| self.gcra.new_state(now));
        self.gcra.decide(state, now, 1).is_admitted()
    }
}

/// The same with may's Mutex: a coroutine that finds it locked parks, and
/// its worker runs another coroutine meanwhile.
struct OneMayMutex {
    gcra: Gcra,
    clock: ManualClock,
    keys: may::sync::Mutex<HashMap<u32, GcraState>>,
}

impl Shared for OneMayMutex {
    fn admit(&self, key: u32) -> bool {
        let now = self.clock.now();
        let mut keys = self.keys.lock().unwrap();
        let state = keys.entry(key).or_insert_with(|| self.gcra.new_state(now));
        self.gcra.decide(state, now, 1).is_admitted()
    }
}
// ANCHOR_END: shared

// ANCHOR: race
/// 1,000 coroutines, started together, each asking `each` times, and
/// yielding after each decision if `yields` (as a server's request loop
/// parks on its socket between requests; without it the two workers hit
/// the lock back to back). Coroutine `i` asks for key `(i + j) % keys` at
/// its `j`-th try, so every key is asked the same number of times. Returns
/// what was admitted and how long the race took.
fn race(limiter: Arc<dyn Shared>, keys: u32, each: u32, yields: bool) -> (u64, Duration) {
    let start = Arc::new(SyncFlag::new());
    let racers: Vec<_> = (0..COROUTINES)
        .map(|i| {
            let (limiter, start) = (limiter.clone(), start.clone());
            go!(move || {
                start.wait();
                let mut admitted = 0;
                for j in 0..each {
                    admitted += u64::from(limiter.admit((i + j) % keys));
                    if yields {
                        may::coroutine::yield_now();
                    }
                }
                admitted
            })
        })
        .collect();
    let began = Instant::now();
    start.fire();
    let admitted = racers.into_iter().map(|r| r.join().unwrap()).sum();
    (admitted, began.elapsed())
}
// ANCHOR_END: race

/// The three limiters, each with a fresh state and a clock that never
/// moves: nothing comes back while they race, so the quota is exact.
fn limiters(quota: Quota) -> [(&'static str, Arc<dyn Shared>); 3] {
    let (gcra, clock) = (Gcra::new(quota), ManualClock::new());
    [
        (
            "sharded Limiter (32 std Mutex)",
            Arc::new(Limiter::with_clock(gcra, 10_000, clock.clone())),
        ),
        (
            "one std Mutex<HashMap>",
            Arc::new(OneStdMutex {
                gcra,
                clock: clock.clone(),
                keys: Default::default(),
            }),
        ),
        (
            "one may::sync::Mutex<HashMap>",
            Arc::new(OneMayMutex {
                gcra,
                clock,
                keys: may::sync::Mutex::new(HashMap::new()),
            }),
        ),
    ]
}

/// One row: the limiter, what it admitted, what the quota allows, and the
/// decisions per second.
struct Row {
    name: &'static str,
    admitted: u64,
    allowed: u64,
    per_second: f64,
}

/// One hot key with a burst of half the tries, then a thousand keys with
/// a burst of half of each key's tries; with a yield after each decision
/// and without. Each limiter races `rounds` times,
/// on a fresh state each time; its row has the fastest round (the others
/// lost time to whatever else the machine ran) and every round's count must
/// be the quota.
fn rows(each: u32, rounds: usize) -> Vec<(String, Vec<Row>)> {
    let tries = u64::from(COROUTINES * each);
    let cases = [
        ("one hot key", 1, tries / 2, true),
        ("1000 keys", 1_000, tries / 2_000, true),
        ("one hot key", 1, tries / 2, false),
        ("1000 keys", 1_000, tries / 2_000, false),
    ];
    cases
        .into_iter()
        .map(|(case, keys, burst, yields)| {
            let quota = Quota::per_second(1, burst).expect("a valid quota");
            let allowed = burst * u64::from(keys);
            let mut rows: Vec<Row> = limiters(quota)
                .map(|(name, _)| Row {
                    name,
                    admitted: allowed,
                    allowed,
                    per_second: 0.0,
                })
                .into();
            // Round by round, the three in turn: none is always the first
            // to run on a cold cache or a freshly started may.
            for _ in 0..rounds {
                for (row, (_, limiter)) in rows.iter_mut().zip(limiters(quota)) {
                    let (admitted, took) = race(limiter, keys, each, yields);
                    if admitted != allowed {
                        row.admitted = admitted;
                    }
                    row.per_second = row.per_second.max(tries as f64 / took.as_secs_f64());
                }
            }
            let how = if yields {
                "a yield after each decision"
            } else {
                "back to back"
            };
            (format!("{case}, burst {burst} per key, {how}"), rows)
        })
        .collect()
}

/// 100,000 decisions a race: a tenth of a second in a debug build, so the
/// whole listing runs in seconds; `--release` runs it 5-10 times faster.
const EACH: u32 = 100;
const ROUNDS: usize = 3;

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!(
        "{COROUTINES} coroutines on 2 workers, {EACH} decisions each; \
         GCRA on a clock that does not move; the fastest of {ROUNDS} rounds"
    );
    // A first race allocates the 1,000 coroutines' stacks; may keeps them
    // for the races that count.
    let [(_, warm_up), ..] = limiters(Quota::per_second(1, 1).expect("a valid quota"));
    race(warm_up, 1, 1, true);
    for (case, rows) in rows(EACH, ROUNDS) {
        println!("{case}:");
        for r in rows {
            let exact = if r.admitted == r.allowed {
                "exact"
            } else {
                "LOST UPDATES"
            };
            println!(
                "  {:<30} admitted {} of {} allowed ({exact}), ~{:.2}M decisions/s",
                r.name,
                r.admitted,
                r.allowed,
                r.per_second / 1e6
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn every_limiter_admits_exactly_the_quota_under_contention() {
        configure_for_tests();
        // Fewer tries than main (a debug build is slow), the same checks.
        for (case, rows) in rows(50, 1) {
            for r in rows {
                assert_eq!(r.admitted, r.allowed, "{case}: {}", r.name);
                assert!(r.per_second > 0.0);
            }
        }
    }
}
