//! Step 7: errors. `retry` subscribes to the recipe again after an error,
//! so a source refused twice succeeds on its third try; `timeout` turns a
//! source that stalls into an error, and cancels it; together they retry a
//! call that hangs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::reactive::{Error, Flux, Probe, Publisher, Signal, Subscriber};
use may_patterns::runtime::{configure_once, Settings};

const WAIT: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ANCHOR: flaky
/// A connection that is refused on its first `refusals` tries and then
/// answers with three lines. Each subscription is a try: a flux is a
/// recipe, and subscribing runs it again.
struct Flaky {
    refusals: u32,
    tries: Arc<AtomicU32>,
}

impl Publisher<&'static str> for Flaky {
    fn subscribe(&self, subscriber: Box<dyn Subscriber<&'static str>>) {
        let attempt = self.tries.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt <= self.refusals {
            println!("  try {attempt}: refused");
            Flux::error(Error::failed("connection refused")).subscribe(subscriber)
        } else {
            println!("  try {attempt}: answered");
            Flux::from_iter(|| ["line 1", "line 2", "line 3"]).subscribe(subscriber)
        }
    }
}

fn flaky(refusals: u32) -> Flux<&'static str> {
    let tries = Arc::new(AtomicU32::new(0));
    Flux::new(Flaky { refusals, tries })
}
// ANCHOR_END: flaky

// ANCHOR: stalls
/// Two items, then nothing, ever: a peer that stopped answering.
fn stalls() -> Flux<&'static str> {
    Flux::scripted(vec![(ms(0), "a"), (ms(10), "b")], None)
}

/// A call that hangs on its first try and answers on the next.
fn hangs_once() -> Flux<u32> {
    let tries = Arc::new(AtomicU32::new(0));
    Flux::new(HangsOnce { tries })
}

struct HangsOnce {
    tries: Arc<AtomicU32>,
}

impl Publisher<u32> for HangsOnce {
    fn subscribe(&self, subscriber: Box<dyn Subscriber<u32>>) {
        match self.tries.fetch_add(1, Ordering::SeqCst) {
            0 => Flux::scripted(vec![], None).subscribe(subscriber),
            _ => Flux::from_iter(|| [42]).subscribe(subscriber),
        }
    }
}
// ANCHOR_END: stalls

/// Every signal of `flux` and the time the stream took to end.
fn run<T: Clone + Send + 'static>(flux: Flux<T>) -> (Vec<Signal<T>>, Duration) {
    let (probe, subscriber) = Probe::new();
    let started = Instant::now();
    probe.request(u64::MAX);
    flux.subscribe(subscriber);
    let signals = probe.wait_terminal(WAIT);
    (signals, started.elapsed())
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    // ANCHOR: main
    println!("retry(2), refused twice:");
    println!("  -> {:?}", flaky(2).retry(2).collect_vec());
    println!("retry(1), refused twice:");
    println!("  -> {:?}", flaky(2).retry(1).collect_vec());

    let (signals, took) = run(stalls().timeout(ms(100)));
    println!("timeout(100ms) on a source that stalls: {signals:?} after {took:.1?}");
    let (signals, took) = run(hangs_once().timeout(ms(100)).retry(1));
    println!("timeout(100ms).retry(1) on a call that hangs once: {signals:?} after {took:.1?}");
    // ANCHOR_END: main
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_succeeds_within_its_tries_and_fails_beyond_them() {
        may_patterns::runtime::configure_for_tests();
        assert_eq!(
            flaky(2).retry(2).collect_vec(),
            Ok(vec!["line 1", "line 2", "line 3"])
        );
        assert_eq!(
            flaky(2).retry(1).collect_vec(),
            Err(Error::failed("connection refused"))
        );
    }

    #[test]
    fn timeout_ends_a_stalled_stream_after_the_gap() {
        may_patterns::runtime::configure_for_tests();
        let (signals, took) = run(stalls().timeout(ms(100)));
        let expected = vec![
            Signal::Next("a"),
            Signal::Next("b"),
            Signal::Error(Error::Timeout(ms(100))),
        ];
        assert_eq!(signals, expected);
        assert!(took >= ms(110), "{took:?}"); // "b" at 10 ms, then the gap
    }

    #[test]
    fn a_timed_out_try_is_retried() {
        may_patterns::runtime::configure_for_tests();
        let (signals, took) = run(hangs_once().timeout(ms(100)).retry(1));
        assert_eq!(signals, vec![Signal::Next(42), Signal::Complete]);
        assert!(took >= ms(100), "{took:?}");
    }
}
