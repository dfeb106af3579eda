//! Fault tolerance for calls to a dependency: a circuit breaker, a retry
//! policy with backoff and jitter, a retry budget and a bulkhead (the
//! circuit-breaker chapter; the crawler, load balancer and reverse proxy
//! reuse it).
//!
//! - [`Breaker`] (`circuit.rs`): closed, open and half-open, tripping on a
//!   failure rate or a slow-call rate over a count- or time-based sliding
//!   window once it holds a minimum number of calls, as resilience4j's
//!   `CircuitBreaker` does (<https://resilience4j.readme.io/docs/circuitbreaker>).
//!   Its settings are a [`BreakerConfig`] (`config.rs`); its window is
//!   `window.rs`; what it reports ([`State`], [`Transition`], [`Snapshot`])
//!   is `state.rs`.
//! - [`RetryPolicy`] (`retry.rs`): fixed, exponential, or exponential with
//!   AWS's full jitter, from a seedable `fastrand::Rng`; never under may's
//!   1 ms floor.
//! - [`RetryBudget`] (`budget.rs`): retries at most a share of the calls
//!   over a window, plus a floor per second, as Finagle's `RetryBudget`.
//! - [`Bulkhead`] (`bulkhead.rs`): at most N calls in flight, refused at
//!   once beyond that.
//!
//! The breaker and the budget read time from a [`Clock`](crate::clock::Clock),
//! so tests drive them with a [`ManualClock`](crate::clock::ManualClock) and
//! assert exact counts. None of these blocks or yields: a call that is
//! refused is refused at once, and the caller decides what to do instead (a
//! fallback). The retry policy only computes delays; the caller sleeps them.
//!
//! ```
//! use std::time::Duration;
//! use may_patterns::breaker::{Breaker, BreakerConfig, State, Window};
//! use may_patterns::clock::ManualClock;
//!
//! let clock = ManualClock::new();
//! let config = BreakerConfig {
//!     window: Window::Count(4),
//!     min_calls: 4,
//!     ..BreakerConfig::default()
//! };
//! let breaker = Breaker::with_clock(config, clock.clone()).unwrap();
//! for _ in 0..4 {
//!     breaker.try_call().unwrap().failure();
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert!(breaker.try_call().is_err()); // rejected at once
//! clock.advance(config.open_for);
//! let probe = breaker.try_call().unwrap(); // the first of 3 probes
//! assert_eq!(breaker.state(), State::HalfOpen);
//! probe.success();
//! ```

mod budget;
mod bulkhead;
mod circuit;
mod config;
mod retry;
mod state;
mod window;

pub use budget::RetryBudget;
pub use bulkhead::{Bulkhead, BulkheadPermit};
pub use circuit::{Breaker, CallError, Permit, Rejected};
pub use config::{BreakerConfig, ConfigError, Window};
pub use retry::{Jitter, RetryPolicy, MIN_DELAY};
pub use state::{Reason, Snapshot, State, Transition};

#[cfg(test)]
mod tests;
