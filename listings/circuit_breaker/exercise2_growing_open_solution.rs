//! Exercise 2 (solution): an open interval that grows while the outage lasts.
//!
//! Step 4's breaker probes every `open_for` however long the outage lasts:
//! three probes every 200 ms against a backend that is down for an hour.
//! `GrowingOpen` follows the breaker's transitions (from `subscribe()`) and
//! keeps calls away from it for longer after each failed round of probes:
//! `base` after the breaker trips, twice as long after each failed round,
//! at most `cap`, and `base` again once it closes.

use std::time::Duration;

use may_patterns::breaker::{Breaker, BreakerConfig, State, Transition, Window};
use may_patterns::clock::{Clock, ManualClock};

// ANCHOR: growing
/// How long to keep calls away from an open breaker.
struct GrowingOpen {
    base: Duration,
    cap: Duration,
    /// The wait after the next opening.
    wait: Duration,
    /// No call before this time (by the breaker's clock).
    until: Duration,
}

impl GrowingOpen {
    fn new(base: Duration, cap: Duration) -> Self {
        GrowingOpen {
            base,
            cap,
            wait: base,
            until: Duration::ZERO,
        }
    }

    /// Follow one of the breaker's transitions.
    fn on_transition(&mut self, transition: &Transition) {
        match (transition.from, transition.to) {
            // A failed round of probes: the outage goes on, wait longer.
            (State::HalfOpen, State::Open) => self.wait = (self.wait * 2).min(self.cap),
            (_, State::Closed) => self.wait = self.base,
            _ => {}
        }
        if transition.to == State::Open {
            self.until = transition.at + self.wait;
        }
    }

    /// Whether a call may go to the breaker at `now`.
    fn allows(&self, now: Duration) -> bool {
        now >= self.until
    }
}
// ANCHOR_END: growing

/// A breaker like step 4's (open for 200 ms, 3 probes) in front of a
/// dependency that fails every call for `down_for`, one call every 10 ms;
/// returns each opening (when, and when the next call was let through) and
/// when the breaker closed again.
fn simulate(down_for: Duration) -> (Vec<(Duration, Duration)>, Option<Duration>) {
    let clock = ManualClock::new();
    let config = BreakerConfig {
        window: Window::Count(10),
        min_calls: 10,
        open_for: Duration::from_millis(200),
        ..BreakerConfig::default()
    };
    let breaker = Breaker::with_clock(config, clock.clone()).expect("a valid config");
    let events = breaker.subscribe();
    let mut growing = GrowingOpen::new(config.open_for, Duration::from_secs(2));
    let (mut openings, mut closed) = (Vec::new(), None);
    while clock.now() < down_for + Duration::from_secs(3) {
        clock.advance(Duration::from_millis(10));
        if !growing.allows(clock.now()) {
            continue; // kept away: not even asked
        }
        if let Ok(permit) = breaker.try_call() {
            if clock.now() < down_for {
                permit.failure();
            } else {
                permit.success();
            }
        }
        for transition in events.try_iter() {
            growing.on_transition(&transition);
            match transition.to {
                State::Open => openings.push((transition.at, growing.until)),
                State::Closed => closed = closed.or(Some(transition.at)),
                State::HalfOpen => {}
            }
        }
    }
    (openings, closed)
}

fn main() {
    let down_for = Duration::from_millis(2_500);
    let (openings, closed) = simulate(down_for);
    for (at, until) in openings {
        println!(
            "opened at {:>4} ms, next call at {:>4} ms: {} ms shut",
            at.as_millis(),
            until.as_millis(),
            (until - at).as_millis()
        );
    }
    if let Some(at) = closed {
        println!(
            "the backend recovered at {} ms; the breaker closed at {} ms",
            down_for.as_millis(),
            at.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_each_failed_round_up_to_the_cap() {
        let ms = Duration::from_millis;
        let (openings, closed) = simulate(Duration::from_secs(8));
        assert!(closed.is_some_and(|at| at >= Duration::from_secs(8)));
        let waits: Vec<Duration> = openings.iter().map(|(at, until)| *until - *at).collect();
        assert_eq!(
            waits,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1_600),
                ms(2_000),
                ms(2_000),
                ms(2_000)
            ]
        );
    }

    #[test]
    fn closing_brings_the_wait_back_to_base() {
        let mut growing = GrowingOpen::new(Duration::from_millis(200), Duration::from_secs(2));
        let at = |ms| Duration::from_millis(ms);
        let moves = [
            (State::Closed, State::Open, 0),
            (State::HalfOpen, State::Open, 300),
            (State::HalfOpen, State::Closed, 900),
            (State::Closed, State::Open, 1_000),
        ];
        for (from, to, ms) in moves {
            let reason = may_patterns::breaker::Reason::OpenElapsed; // not read
            growing.on_transition(&Transition {
                from,
                to,
                at: at(ms),
                reason,
            });
        }
        assert_eq!(growing.until, at(1_200), "base again after closing");
    }
}
