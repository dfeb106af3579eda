//! What a [`Breaker`](super::Breaker) decides by, and the errors a bad
//! setting gets.
//!
//! The settings and their meaning follow resilience4j's `CircuitBreakerConfig`
//! (<https://resilience4j.readme.io/docs/circuitbreaker>): a sliding window of
//! outcomes, a minimum number of calls before any rate counts, a failure-rate
//! and a slow-call-rate threshold, a wait in the open state, and a number of
//! probe calls in the half-open state.

use std::fmt;
use std::time::Duration;

// ANCHOR: window
/// Which outcomes the closed breaker's rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N calls (a ring buffer of N outcomes).
    Count(u32),
    /// The calls of the last T, kept in ten buckets of T/10 each: a call
    /// leaves the window when its whole bucket does, so the window covers
    /// between 0.9 T and T of history.
    Time(Duration),
}
// ANCHOR_END: window

// ANCHOR: config
/// A breaker's settings. The fields are public; [`BreakerConfig::validate`]
/// (called by every constructor) refuses the ones that cannot work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The outcomes the closed breaker looks at.
    pub window: Window,
    /// No rate counts until the window holds at least this many calls, so
    /// one failure out of one call does not trip the breaker.
    pub min_calls: u32,
    /// Trip when failures / calls >= this (0.0..=1.0).
    pub failure_rate: f64,
    /// A call that takes longer than this is slow (whether it succeeds or
    /// fails), timed by the breaker's clock from `try_call` to its outcome.
    pub slow_call: Duration,
    /// Trip when slow calls / calls >= this (0.0..=1.0); 1.0 trips only
    /// when every call in the window is slow.
    pub slow_call_rate: f64,
    /// How long an open breaker rejects calls before it lets probes through.
    pub open_for: Duration,
    /// How many probe calls the half-open breaker lets through; it decides
    /// when all of them have finished.
    pub half_open_calls: u32,
}
// ANCHOR_END: config

impl Default for BreakerConfig {
    /// The book's defaults: a window of the last 20 calls, rates counted from
    /// 10 calls on, trip at 50% failures or when every call is slower than
    /// 1 s, stay open 5 s, then let 3 probes through. (resilience4j's own
    /// defaults are larger: 100 calls, 60 s open, 10 probes.)
    fn default() -> Self {
        BreakerConfig {
            window: Window::Count(20),
            min_calls: 10,
            failure_rate: 0.5,
            slow_call: Duration::from_secs(1),
            slow_call_rate: 1.0,
            open_for: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}

impl BreakerConfig {
    /// `Ok` when a breaker can work with these settings, else the first
    /// setting that cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            Window::Count(0) => return Err(ConfigError::ZeroWindow),
            Window::Count(n) if self.min_calls > n => {
                return Err(ConfigError::MinCallsAboveWindow {
                    min_calls: self.min_calls,
                    window: n,
                })
            }
            // Ten buckets of at least 1 ns each.
            Window::Time(t) if t < Duration::from_nanos(10) => return Err(ConfigError::ZeroWindow),
            _ => {}
        }
        if self.min_calls == 0 {
            return Err(ConfigError::ZeroMinCalls);
        }
        check_rate("failure_rate", self.failure_rate)?;
        check_rate("slow_call_rate", self.slow_call_rate)?;
        if self.slow_call.is_zero() {
            return Err(ConfigError::ZeroDuration("slow_call"));
        }
        if self.open_for.is_zero() {
            return Err(ConfigError::ZeroDuration("open_for"));
        }
        if self.half_open_calls == 0 {
            return Err(ConfigError::ZeroHalfOpenCalls);
        }
        Ok(())
    }
}

/// A rate must be a share: NaN and anything outside 0..=1 are refused.
fn check_rate(name: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Rate { name, value })
    }
}

/// A setting of a breaker, retry budget or bulkhead that cannot work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConfigError {
    /// A rate (`failure_rate`, `slow_call_rate`) outside 0.0..=1.0, or NaN.
    Rate {
        /// The field's name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A window of zero calls or (next to) zero time.
    ZeroWindow,
    /// `min_calls` of 0: a single call would decide the rate.
    ZeroMinCalls,
    /// A count window smaller than `min_calls`: no rate would ever count.
    MinCallsAboveWindow {
        /// `min_calls` as given.
        min_calls: u32,
        /// The count window's size.
        window: u32,
    },
    /// `half_open_calls` of 0: the breaker could never close again.
    ZeroHalfOpenCalls,
    /// A duration that must not be zero (`slow_call`, `open_for`, a retry
    /// budget's `window`).
    ZeroDuration(&'static str),
    /// A retry budget's ratio or per-second minimum that is negative, NaN or
    /// infinite.
    Budget {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A bulkhead that admits no call at all.
    ZeroBulkhead,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Rate { name, value } => {
                write!(f, "{name} must be between 0.0 and 1.0, not {value}")
            }
            ConfigError::ZeroWindow => {
                f.write_str("the window must hold at least one call (or 10 ns of time)")
            }
            ConfigError::ZeroMinCalls => f.write_str("min_calls must be at least 1"),
            ConfigError::MinCallsAboveWindow { min_calls, window } => write!(
                f,
                "min_calls ({min_calls}) is larger than the window ({window} calls): \
                 the breaker could never trip"
            ),
            ConfigError::ZeroHalfOpenCalls => f.write_str(
                "half_open_calls must be at least 1, or the breaker could never close again",
            ),
            ConfigError::ZeroDuration(name) => write!(f, "{name} must be longer than zero"),
            ConfigError::Budget { name, value } => {
                write!(f, "{name} must be a finite number >= 0, not {value}")
            }
            ConfigError::ZeroBulkhead => {
                f.write_str("a bulkhead must admit at least one call in flight")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut BreakerConfig)) -> Result<(), ConfigError> {
        let mut config = BreakerConfig::default();
        change(&mut config);
        config.validate()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn every_unworkable_setting_gets_its_own_sentence() {
        let cases: Vec<(Result<(), ConfigError>, &str)> = vec![
            (
                with(|c| c.failure_rate = 1.5),
                "failure_rate must be between 0.0 and 1.0, not 1.5",
            ),
            (
                with(|c| c.slow_call_rate = -0.1),
                "slow_call_rate must be between 0.0 and 1.0, not -0.1",
            ),
            (
                with(|c| c.failure_rate = f64::NAN),
                "failure_rate must be between 0.0 and 1.0, not NaN",
            ),
            (
                with(|c| c.window = Window::Count(0)),
                "the window must hold at least one call (or 10 ns of time)",
            ),
            (
                with(|c| c.window = Window::Time(Duration::ZERO)),
                "the window must hold at least one call (or 10 ns of time)",
            ),
            (with(|c| c.min_calls = 0), "min_calls must be at least 1"),
            (
                with(|c| c.window = Window::Count(5)),
                "min_calls (10) is larger than the window (5 calls): the breaker could never trip",
            ),
            (
                with(|c| c.half_open_calls = 0),
                "half_open_calls must be at least 1, or the breaker could never close again",
            ),
            (
                with(|c| c.open_for = Duration::ZERO),
                "open_for must be longer than zero",
            ),
            (
                with(|c| c.slow_call = Duration::ZERO),
                "slow_call must be longer than zero",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn a_time_window_needs_no_call_count() {
        assert_eq!(
            with(|c| c.window = Window::Time(Duration::from_secs(10))),
            Ok(())
        );
    }
}
