//! A quota: how much work a key may do per period, and how much at once.

use std::fmt;
use std::time::Duration;

/// `rate` units of work per `period`, at most `burst` at once.
///
/// Every algorithm reads the same quota: the window algorithms admit `rate`
/// per window and ignore `burst` (a whole window's worth may arrive at
/// once), the bucket algorithms (token bucket, GCRA, leaky queue) hold at
/// most `burst` and refill one unit per [`interval`](Quota::interval).
///
/// Time is whole nanoseconds in a `u64` (584 years), so every decision is
/// integer arithmetic; [`Quota::new`] refuses a quota that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    rate: u64,
    period: u64,
    burst: u64,
    interval: u64,
}

impl Quota {
    /// `rate` units per `period`, at most `burst` at once.
    ///
    /// The emission interval `period / rate` is rounded down to a whole
    /// nanosecond (1 s / 3 is 333,333,333 ns), so a rate that does not
    /// divide the period runs a few parts per billion fast.
    pub fn new(rate: u64, period: Duration, burst: u64) -> Result<Quota, QuotaError> {
        if rate == 0 {
            return Err(QuotaError::ZeroRate);
        }
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let period = u64::try_from(period.as_nanos()).map_err(|_| QuotaError::TooLong)?;
        let interval = period / rate;
        if interval == 0 {
            return Err(QuotaError::TooFast);
        }
        // The buckets measure their depth as burst × interval nanoseconds.
        if burst.checked_mul(interval).is_none() {
            return Err(QuotaError::TooLong);
        }
        Ok(Quota {
            rate,
            period,
            burst,
            interval,
        })
    }

    /// `rate` units per second, at most `burst` at once.
    pub fn per_second(rate: u64, burst: u64) -> Result<Quota, QuotaError> {
        Quota::new(rate, Duration::from_secs(1), burst)
    }

    /// Units admitted per period.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The period the rate is counted over.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    /// Units admitted at once (the bucket algorithms' capacity).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// `period / rate`, the time one unit takes to come back: GCRA's
    /// emission interval T, the token bucket's refill step, the leaky
    /// queue's departure spacing.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    pub(crate) fn period_ns(&self) -> u64 {
        self.period
    }

    pub(crate) fn interval_ns(&self) -> u64 {
        self.interval
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per {:?}, burst {}",
            self.rate,
            self.period(),
            self.burst
        )
    }
}

/// Why a [`Quota`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaError {
    /// A rate of zero admits nothing: say so instead of denying forever.
    ZeroRate,
    /// A zero period has no rate.
    ZeroPeriod,
    /// A burst of zero admits nothing.
    ZeroBurst,
    /// More than one unit per nanosecond: the interval would be zero.
    TooFast,
    /// The period, or burst × interval, does not fit in 584 years of
    /// nanoseconds.
    TooLong,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaError::ZeroRate => "the rate must be at least 1 per period",
            QuotaError::ZeroPeriod => "the period must be longer than zero",
            QuotaError::ZeroBurst => "the burst must be at least 1",
            QuotaError::TooFast => "the rate is above one per nanosecond of the period",
            QuotaError::TooLong => "the period, or burst times period/rate, is over 584 years",
        })
    }
}

impl std::error::Error for QuotaError {}

/// Nanoseconds in a `u64`, saturating: a `now` past 584 years is absurd but
/// must not wrap.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_keeps_its_numbers_and_derives_the_interval() {
        let q = Quota::new(10, Duration::from_secs(2), 5).unwrap();
        assert_eq!(
            (q.rate(), q.period(), q.burst()),
            (10, Duration::from_secs(2), 5)
        );
        assert_eq!(q.interval(), Duration::from_millis(200));
        assert_eq!(
            Quota::per_second(3, 1).unwrap().interval().as_nanos(),
            333_333_333
        );
        assert_eq!(q.to_string(), "10 per 2s, burst 5");
    }

    #[test]
    fn a_quota_that_admits_nothing_or_does_not_fit_is_refused() {
        let s = Duration::from_secs(1);
        assert_eq!(Quota::new(0, s, 1), Err(QuotaError::ZeroRate));
        assert_eq!(
            Quota::new(1, Duration::ZERO, 1),
            Err(QuotaError::ZeroPeriod)
        );
        assert_eq!(Quota::new(1, s, 0), Err(QuotaError::ZeroBurst));
        assert_eq!(Quota::new(2_000_000_000, s, 1), Err(QuotaError::TooFast));
        assert_eq!(Quota::new(1, Duration::MAX, 1), Err(QuotaError::TooLong));
        assert_eq!(Quota::new(1, s, u64::MAX), Err(QuotaError::TooLong));
        assert_eq!(
            QuotaError::ZeroRate.to_string(),
            "the rate must be at least 1 per period"
        );
    }
}
