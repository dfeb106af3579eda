//! Step 3: time. One typed query, "rust may" (keys 5 ms apart, the second
//! word 500 ms after the first), through `buffer`, `debounce`, `throttle`
//! and `sample`; then the same keys to a subscriber that asks for nothing
//! for a while, to show what each keeps when there is no demand.
//!
//! The gaps are chosen far from the operators' times (100 and 200 ms), so
//! which items come out does not depend on the machine; when they come out
//! does, a little.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::reactive::{Flux, Probe};
use may_patterns::runtime::{configure_once, Settings};

const WAIT: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ANCHOR: keys
/// The keys of "rust may" as a user types them: 5 ms apart, a pause of
/// half a second before the second word; the stream ends at 700 ms.
fn keystrokes() -> Flux<char> {
    let at = [0, 5, 10, 15, 500, 505, 510, 515];
    let keys = at.iter().zip("rust may".chars());
    Flux::scripted(
        keys.map(|(&at, key)| (ms(at), key)).collect(),
        Some(ms(700)),
    )
}

/// The query as it grows, one string per key.
fn queries() -> Flux<String> {
    keystrokes().scan(String::new(), |query, key| format!("{query}{key}"))
}
// ANCHOR_END: keys

/// Every item with the time it came out, measured from the subscription.
fn timed<T: Send + 'static>(flux: Flux<T>) -> Vec<(Duration, T)> {
    let started = Instant::now();
    let timed = flux.map(move |item| (started.elapsed(), item));
    timed.collect_vec().expect("the keys never fail")
}

/// `"rust" at 115.2ms, "rust may" at 615.0ms`
fn show<T: std::fmt::Debug>(items: &[(Duration, T)]) -> String {
    let shown: Vec<String> = items
        .iter()
        .map(|(at, item)| format!("{item:?} at {at:.1?}"))
        .collect();
    shown.join(", ")
}

// ANCHOR: operators
fn debounced() -> Flux<String> {
    queries().debounce(ms(100)) // the query once typing paused 100 ms
}

fn throttled() -> Flux<String> {
    queries().throttle(ms(100)) // the first query, then none for 100 ms
}

fn sampled() -> Flux<String> {
    queries().sample(ms(200)) // every 200 ms, the latest query, if new
}

fn batched() -> Flux<Vec<char>> {
    keystrokes().buffer(3, ms(100)) // 3 keys, or what came in 100 ms
}
// ANCHOR_END: operators

// ANCHOR: no_demand
/// Subscribe with no demand, wait until the keys are typed, then ask for
/// everything: what the operator kept, and how many keys it took from the
/// source meanwhile.
fn kept<T: Clone + Send + 'static>(operator: impl Fn(Flux<char>) -> Flux<T>) -> (Vec<T>, u64) {
    let taken = Arc::new(AtomicU64::new(0));
    let counter = taken.clone();
    let keys = keystrokes().map(move |key| {
        counter.fetch_add(1, Ordering::SeqCst);
        key
    });
    let (probe, subscriber) = Probe::new();
    operator(keys).subscribe(subscriber);
    may_patterns::alarm::shared().sleep(ms(600)); // all typed by 515 ms
    let taken_meanwhile = taken.load(Ordering::SeqCst);
    probe.request(u64::MAX);
    probe.wait_terminal(WAIT);
    (probe.items(), taken_meanwhile)
}
// ANCHOR_END: no_demand

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!("typed: \"rust may\", keys 5 ms apart, the second word 500 ms after the first");
    // Each subscription runs the script anew: four at once take as long as one.
    let runs = (
        may::go!(|| timed(debounced())),
        may::go!(|| timed(throttled())),
        may::go!(|| timed(sampled())),
        may::go!(|| timed(batched())),
    );
    println!("debounce(100ms): {}", show(&runs.0.join().unwrap()));
    println!("throttle(100ms): {}", show(&runs.1.join().unwrap()));
    println!("sample(200ms):   {}", show(&runs.2.join().unwrap()));
    println!("buffer(3, 100ms): {}", show(&runs.3.join().unwrap()));

    println!("with no demand until 600 ms, then request(MAX):");
    let (batches, taken) = kept(|keys| keys.buffer(3, ms(100)));
    println!("  buffer(3, 100ms): {batches:?} ({taken} keys taken meanwhile)");
    let (latest, taken) = kept(|keys| keys.debounce(ms(100)));
    println!("  debounce(100ms): {latest:?} ({taken} keys taken meanwhile)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items<T>(timed: Vec<(Duration, T)>) -> Vec<T> {
        timed.into_iter().map(|(_, item)| item).collect()
    }

    #[test]
    fn each_operator_picks_its_items_from_the_two_bursts() {
        may_patterns::runtime::configure_for_tests();
        assert_eq!(items(timed(debounced())), ["rust", "rust may"]);
        assert_eq!(items(timed(throttled())), ["r", "rust "]);
        assert_eq!(items(timed(sampled())), ["rust", "rust may"]);
        let batches = items(timed(batched()));
        let expected = [
            vec!['r', 'u', 's'],
            vec!['t'],
            vec![' ', 'm', 'a'],
            vec!['y'],
        ];
        assert_eq!(batches, expected);
    }

    #[test]
    fn debounce_waits_for_the_quiet_after_the_last_key() {
        may_patterns::runtime::configure_for_tests();
        let timed = timed(debounced());
        assert!(timed[0].0 >= ms(115), "{:?}", timed[0].0);
        assert!(timed[1].0 >= ms(615), "{:?}", timed[1].0);
    }

    #[test]
    fn without_demand_buffer_holds_two_batches_and_debounce_one_item() {
        may_patterns::runtime::configure_for_tests();
        let (batches, taken) = kept(|keys| keys.buffer(3, ms(100)));
        assert_eq!(taken, 6, "one batch ready, one filled, then backpressure");
        assert_eq!(batches.concat().iter().collect::<String>(), "rust may");
        let (latest, taken) = kept(|keys| keys.debounce(ms(100)));
        assert_eq!((latest, taken), (vec!["y".chars().next().unwrap()], 8));
    }
}
