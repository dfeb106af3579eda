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
//!
//! Every block reads time from a [`Clock`](crate::clock::Clock), so tests
//! drive it with a [`ManualClock`](crate::clock::ManualClock) and assert
//! exact counts. None of them blocks or yields: a call that is refused is
//! refused at once, and the caller decides what to do instead (a fallback).
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

mod circuit;
mod config;
mod state;
mod window;

pub use circuit::{Breaker, CallError, Permit, Rejected};
pub use config::{BreakerConfig, ConfigError, Window};
pub use state::{Reason, Snapshot, State, Transition};

#[cfg(test)]
mod tests;
