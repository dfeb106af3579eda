//! Exercise 1 (starter): a fallback that knows when its answer is too old.
//!
//! Step 7 serves the last good answer to a query however old it is. During
//! a long outage that means prices from an hour ago, shown as if they were
//! current. Keep the time each answer was stored (by an injectable clock,
//! so the test is exact) and serve it only while it is younger than
//! `max_age`; after that, `recall` returns `None` and the caller falls back
//! to its default.
//! TODO: complete `recall`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use may_patterns::clock::{Clock, ManualClock};

// ANCHOR: last_good
/// The last good answer per query, with the time it was stored. The std
/// `Mutex` is held to copy one entry in or out, never across a park.
struct LastGood<C: Clock> {
    clock: C,
    max_age: Duration,
    answers: Mutex<HashMap<String, (Duration, String)>>,
}

impl<C: Clock> LastGood<C> {
    fn new(clock: C, max_age: Duration) -> Self {
        LastGood {
            clock,
            max_age,
            answers: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, query: &str, body: &str) {
        let now = self.clock.now();
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.insert(query.to_owned(), (now, body.to_owned()));
    }

    /// The answer stored for `query`, if it is younger than `max_age`.
    fn recall(&self, query: &str) -> Option<String> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        // TODO: return None once the answer is `max_age` old or older.
        let _ = self.max_age;
        answers.get(query).map(|(_stored, body)| body.clone())
    }
}
// ANCHOR_END: last_good

fn main() {
    let clock = ManualClock::new();
    let last_good = LastGood::new(clock.clone(), Duration::from_secs(30));
    last_good.remember("lamp", "lamp: 12.50");
    for seconds in [0, 10, 29, 30, 45] {
        clock.set(Duration::from_secs(seconds));
        match last_good.recall("lamp") {
            Some(body) => println!("after {seconds:>2} s: cached \"{body}\""),
            None => println!("after {seconds:>2} s: too old, the default answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_serves_an_answer_of_any_age() {
        let clock = ManualClock::new();
        let last_good = LastGood::new(clock.clone(), Duration::from_secs(30));
        last_good.remember("lamp", "old");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(last_good.recall("lamp").as_deref(), Some("old"));
        assert_eq!(last_good.recall("sofa"), None);
    }
}
