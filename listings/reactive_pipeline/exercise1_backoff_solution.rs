//! Exercise 1 (solution): retry with exponential backoff.
//!
//! `retry` subscribes again at once, so against a service that is down its
//! tries all land within a millisecond. `retry_with_backoff` waits `base`
//! before the first new try, `2 * base` before the second, and so on,
//! without blocking anything: the wait is the funnel's timer (an alarm
//! tick on the operator's channel), and nothing is subscribed meanwhile.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may_patterns::reactive::funnel::{funnel, Funnel, Operator, Source};
use may_patterns::reactive::{Error, Flux, Publisher, Subscriber};
use may_patterns::runtime::{configure_once, Settings};

// ANCHOR: backoff
/// On an error, try again up to `times` more times, waiting `base`, then
/// `2 * base`, `4 * base`, ... before each new try.
fn retry_with_backoff<T: Send + 'static>(upstream: Flux<T>, times: u32, base: Duration) -> Flux<T> {
    funnel(move || Backoff {
        upstream: upstream.clone(),
        times,
        base,
        retries: 0,
        source: None,
        asked: 0,
    })
}

struct Backoff<T> {
    upstream: Flux<T>,
    times: u32,
    base: Duration,
    /// New tries made so far.
    retries: u32,
    /// The current try; `None` while waiting to make the next.
    source: Option<Source>,
    /// Demand asked of the current try and not yet received.
    asked: u64,
}

impl<T: Send + 'static> Operator<T, T> for Backoff<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        self.source = Some(cx.subscribe(&self.upstream));
    }

    fn on_next(&mut self, cx: &mut Funnel<T, T>, _: Source, item: T) {
        if self.asked != u64::MAX {
            self.asked -= 1;
        }
        cx.emit(item);
    }

    fn on_complete(&mut self, cx: &mut Funnel<T, T>, _: Source) {
        cx.complete();
    }

    fn on_error(&mut self, cx: &mut Funnel<T, T>, _: Source, error: Error) {
        if self.retries == self.times {
            return cx.fail(error);
        }
        // Wait base * 2^retries; the tick makes the next try.
        cx.arm(self.base * 2u32.saturating_pow(self.retries));
        self.retries += 1;
        self.source = None;
    }

    fn on_tick(&mut self, cx: &mut Funnel<T, T>) {
        self.source = Some(cx.subscribe(&self.upstream));
        self.asked = 0; // flush asks the new try for the whole demand
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        let Some(source) = self.source else {
            return; // waiting: no try to ask
        };
        let demand = cx.demand();
        if demand > self.asked {
            let more = if demand == u64::MAX {
                u64::MAX
            } else {
                demand - self.asked
            };
            cx.request(source, more);
            self.asked = demand;
        }
    }
}
// ANCHOR_END: backoff

/// A service refused on its first `refusals` tries; it notes when each try
/// came, measured from when the service was made.
struct Service {
    refusals: u32,
    tries: AtomicU32,
    started: Instant,
    log: Mutex<Vec<Duration>>,
}

struct Shared(Arc<Service>);

impl Publisher<&'static str> for Shared {
    fn subscribe(&self, subscriber: Box<dyn Subscriber<&'static str>>) {
        let service = &self.0;
        let at = service.started.elapsed();
        service.log.lock().unwrap().push(at); // held for one push
        if service.tries.fetch_add(1, Ordering::SeqCst) < service.refusals {
            Flux::error(Error::failed("refused")).subscribe(subscriber)
        } else {
            Flux::from_iter(|| ["ok"]).subscribe(subscriber)
        }
    }
}

/// Run `retry_with_backoff` against a service refused `refusals` times:
/// the result and when each try came.
fn run(
    refusals: u32,
    times: u32,
    base: Duration,
) -> (Result<Vec<&'static str>, Error>, Vec<Duration>) {
    let service = Arc::new(Service {
        refusals,
        tries: AtomicU32::new(0),
        started: Instant::now(),
        log: Mutex::new(Vec::new()),
    });
    let flux = retry_with_backoff(Flux::new(Shared(service.clone())), times, base);
    let result = flux.collect_vec();
    let log = service.log.lock().unwrap().clone();
    (result, log)
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (result, tries) = run(3, 4, Duration::from_millis(20));
    println!("refused 3 times, retry_with_backoff(4, 20ms): {result:?}");
    for (n, pair) in tries.windows(2).enumerate() {
        println!(
            "  try {} came {:.1?} after try {}",
            n + 2,
            pair[1] - pair[0],
            n + 1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wait_doubles_the_one_before() {
        may_patterns::runtime::configure_for_tests();
        let base = Duration::from_millis(20);
        let (result, tries) = run(3, 4, base);
        assert_eq!(result, Ok(vec!["ok"]));
        assert_eq!(tries.len(), 4);
        for (n, pair) in tries.windows(2).enumerate() {
            let waited = pair[1] - pair[0];
            assert!(waited >= base * (1 << n), "wait {n}: {waited:?}");
        }
    }

    #[test]
    fn it_gives_up_with_the_last_error() {
        may_patterns::runtime::configure_for_tests();
        let (result, tries) = run(5, 2, Duration::from_millis(1));
        assert_eq!(result, Err(Error::failed("refused")));
        assert_eq!(tries.len(), 3);
    }
}
