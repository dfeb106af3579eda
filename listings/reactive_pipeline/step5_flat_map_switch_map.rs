//! Step 5: streams of streams. `flat_map(limit, f)` turns each item into a
//! call and runs at most `limit` calls at once, merging their answers;
//! `switch_map(f)` keeps only the latest call, cancelling the one before
//! it, which is what a search box needs.
//!
//! A call here is a stand-in for a request to a backend: it waits on the
//! alarm (no may timer) in 1 ms steps, and a cancelled one stops at its next
//! step.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::reactive::{Backpressure, Cancelled, Error, Flux, Hot, Probe};
use may_patterns::runtime::{configure_once, Settings};

const WAIT: Duration = Duration::from_secs(10);

/// How many calls run now, and the most that ever ran at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    most: AtomicUsize,
    started: AtomicU64,
}

// ANCHOR: fetch
/// A call that takes 5 ms and answers `n`, counted in `running`.
fn fetch(n: u64, running: Arc<Running>) -> Flux<u64> {
    Flux::from_call(move |_: &Cancelled| {
        running.started.fetch_add(1, Ordering::SeqCst);
        let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
        running.most.fetch_max(now, Ordering::SeqCst);
        alarm::shared().sleep(Duration::from_millis(5));
        running.now.fetch_sub(1, Ordering::SeqCst);
        Ok(n)
    })
}

/// Ten calls through `flat_map(limit)`: the answers (sorted: they come in
/// the order the calls finish), the most calls at once, the time taken.
fn ten_calls(limit: usize) -> (Vec<u64>, usize, Duration) {
    let running = Arc::new(Running::default());
    let counted = running.clone();
    let calls = Flux::range(0, 10).flat_map(limit, move |n| fetch(n, counted.clone()));
    let started = Instant::now();
    let mut answers = calls.collect_vec().expect("no call fails");
    let took = started.elapsed();
    answers.sort_unstable();
    (answers, running.most.load(Ordering::SeqCst), took)
}
// ANCHOR_END: fetch

// ANCHOR: demand
/// `flat_map(3)` over ten calls, with demand for two answers only: how many
/// calls it started. A slot frees when a call has finished and its answer
/// has gone downstream: the first two answers free two slots, two more
/// calls start, and then three answers wait, one per slot, for demand.
fn calls_started_for_two() -> (u64, u64) {
    let running = Arc::new(Running::default());
    let counted = running.clone();
    let calls = Flux::range(0, 10).flat_map(3, move |n| fetch(n, counted.clone()));
    let (probe, subscriber) = Probe::new();
    calls.subscribe(subscriber);
    probe.request(2);
    probe.wait(2, WAIT);
    // Give any call that should not start the time to start (and finish).
    alarm::shared().sleep(Duration::from_millis(50));
    let started = running.started.load(Ordering::SeqCst);
    probe.cancel();
    (started, probe.next_count())
}
// ANCHOR_END: demand

/// What became of one search call.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Cancelled { steps: u64 },
    Finished,
}

const WORDS: [&str; 6] = ["rule", "run", "rust", "rustc", "rustup", "ruby"];
const STEPS: u64 = 100;

// ANCHOR: search
/// A search that takes 100 steps of 1 ms, checking its token at each; it
/// says on `said` when it has done 3 steps and records how it ended.
fn search(
    query: String,
    said: may::sync::mpsc::Sender<String>,
    outcomes: Arc<Mutex<Vec<(String, Outcome)>>>,
) -> Flux<String> {
    Flux::from_call(move |cancelled: &Cancelled| {
        let record = |outcome| outcomes.lock().unwrap().push((query.clone(), outcome));
        for step in 0..STEPS {
            if cancelled.is_cancelled() {
                record(Outcome::Cancelled { steps: step });
                return Err(Error::failed("cancelled")); // dropped: nobody listens
            }
            if step == 3 {
                let _ = said.send(query.clone());
            }
            alarm::shared().sleep(Duration::from_millis(1));
        }
        record(Outcome::Finished);
        let hits = WORDS
            .iter()
            .filter(|w| w.starts_with(query.as_str()))
            .count();
        Ok(format!("{query}: {hits} hits"))
    })
}

/// Type "rust" one key at a time, each key only once the search for the
/// query before it is under way: every search but the last is stale.
fn type_ahead() -> (Vec<String>, Vec<(String, Outcome)>) {
    let keys = Hot::new();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let (said_tx, said) = may::sync::mpsc::channel();
    let recorded = outcomes.clone();
    let results = keys
        .flux(Backpressure::Buffer(4))
        .switch_map(move |query| search(query, said_tx.clone(), recorded.clone()));
    let (probe, subscriber) = Probe::new();
    results.subscribe(subscriber);
    probe.request(u64::MAX);
    keys.wait_for_subscribers(1, WAIT); // switch_map subscribes from its coroutine
    for query in ["r", "ru", "rus", "rust"] {
        keys.emit(query.to_string());
        let _ = said.recv(); // this query's search is 3 steps in
    }
    keys.complete();
    probe.wait_terminal(WAIT);
    let outcomes = outcomes.lock().unwrap().clone();
    (probe.items(), outcomes)
}
// ANCHOR_END: search

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!("ten calls of 5 ms through flat_map:");
    for limit in [1, 3, 10] {
        let (answers, most, took) = ten_calls(limit);
        println!(
            "  limit {limit:>2}: answers {answers:?}, at most ~{most} at once, took {took:.1?}"
        );
    }
    let (started, delivered) = calls_started_for_two();
    println!("demand for 2 of 10, limit 3: {delivered} delivered, {started} calls started");

    println!("switch_map, typing \"rust\" while the searches run:");
    let (results, outcomes) = type_ahead();
    let mut outcomes = outcomes;
    outcomes.sort_by_key(|(query, _)| query.len());
    for (query, outcome) in outcomes {
        match outcome {
            Outcome::Cancelled { steps } => {
                println!("  {query:<5} cancelled after ~{steps} of {STEPS} steps")
            }
            Outcome::Finished => println!("  {query:<5} finished all {STEPS} steps"),
        }
    }
    println!("  results downstream: {results:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        may_patterns::runtime::configure_for_tests();
    }

    #[test]
    fn the_limit_bounds_the_calls_at_once_and_every_answer_comes() {
        init();
        for limit in [1, 3] {
            let (answers, most, _) = ten_calls(limit);
            assert_eq!(answers, (0..10).collect::<Vec<u64>>());
            assert!(most <= limit, "{most} at once with a limit of {limit}");
        }
    }

    #[test]
    fn without_demand_no_call_starts_beyond_one_per_slot() {
        init();
        assert_eq!(calls_started_for_two(), (5, 2));
    }

    #[test]
    fn only_the_latest_search_answers_and_the_stale_ones_stop() {
        init();
        let (results, outcomes) = type_ahead();
        assert_eq!(results, vec!["rust: 3 hits".to_string()]);
        for (query, outcome) in &outcomes {
            match (query.as_str(), outcome) {
                ("rust", Outcome::Finished) => {}
                (_, Outcome::Cancelled { steps }) => assert!(*steps < STEPS),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(outcomes.len(), 4);
    }
}
