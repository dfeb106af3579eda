//! The chapter's adversarial trace, and a replay that reports what an
//! algorithm admitted against the limit.
//!
//! One trace for every algorithm, built from the quota so it scales:
//!
//! 1. **A burst across a window edge**: `2 × rate` arrivals spread evenly
//!    over the twentieth of a period either side of the edge at one period.
//! 2. **A steady stream above the rate**: twice the rate, for four periods.
//! 3. **An idle gap, then a burst**: nothing for almost four periods, then
//!    `2 × rate` at one instant a tenth of a period before an edge, and the
//!    stream at twice the rate for one more period.
//!
//! Every arrival costs one unit. The replay counts, per phase, what was
//! offered, admitted and queued, the longest queue wait, and the most units
//! that *went* (admitted, after any queue wait) in any window of one period:
//! the number to hold against the limit.

use super::{Algorithm, Decision, Quota};
use std::fmt;
use std::time::Duration;

/// Which part of the trace an arrival belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    EdgeBurst,
    Steady,
    IdleThenBurst,
}

impl Phase {
    /// The three, in trace order.
    pub const ALL: [Phase; 3] = [Phase::EdgeBurst, Phase::Steady, Phase::IdleThenBurst];

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::EdgeBurst => "burst across a window edge",
            Phase::Steady => "steady stream at twice the rate",
            Phase::IdleThenBurst => "idle gap, then a burst",
        }
    }
}

/// One request of the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrives, since the clock's origin.
    pub at: Duration,
    /// Units it asks for.
    pub cost: u64,
    /// The part of the trace it belongs to.
    pub phase: Phase,
}

// ANCHOR: adversarial
/// The adversarial trace for `quota`, in time order.
pub fn adversarial(quota: Quota) -> Vec<Arrival> {
    let (p, rate) = (quota.period_ns(), quota.rate());
    let at = |ns: u64, phase| Arrival {
        at: Duration::from_nanos(ns),
        cost: 1,
        phase,
    };
    let every = p / (2 * rate); // twice the rate
    let mut trace = Vec::new();
    // 1. 2 × rate within p/20 either side of the edge at one period.
    let spacing = p / 10 / (2 * rate);
    trace.extend((0..2 * rate).map(|i| at(p - p / 20 + i * spacing, Phase::EdgeBurst)));
    // 2. Twice the rate from 3 periods to 7.
    trace.extend((0..8 * rate).map(|i| at(3 * p + i * every, Phase::Steady)));
    // 3. Idle until a tenth of a period before the edge at 11 periods, then
    //    2 × rate at once, then the stream again for one period.
    let burst_at = 11 * p - p / 10;
    trace.extend((0..2 * rate).map(|_| at(burst_at, Phase::IdleThenBurst)));
    trace.extend((1..=2 * rate).map(|i| at(burst_at + i * every, Phase::IdleThenBurst)));
    trace
}
// ANCHOR_END: adversarial

/// What one phase of a replay admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseReport {
    pub phase: Phase,
    /// Units offered.
    pub offered: u64,
    /// Units admitted (allowed or queued).
    pub admitted: u64,
    /// Of those, units that had to wait in a queue.
    pub queued: u64,
    /// The longest queue wait.
    pub longest_wait: Duration,
    /// The most admitted units that went within any one period.
    pub most_in_a_period: u64,
}

/// What a replay admitted, per phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The algorithm's name.
    pub algorithm: String,
    pub quota: Quota,
    pub phases: Vec<PhaseReport>,
}

impl Report {
    /// The report for one phase.
    pub fn phase(&self, phase: Phase) -> &PhaseReport {
        self.phases
            .iter()
            .find(|r| r.phase == phase)
            .expect("a report has every phase")
    }

    /// Units admitted over the whole trace.
    pub fn admitted(&self) -> u64 {
        self.phases.iter().map(|r| r.admitted).sum()
    }
}

// ANCHOR: replay
/// Replay `trace` through `algorithm`, one key, starting from a full quota.
pub fn replay<A: Algorithm>(algorithm: &A, trace: &[Arrival]) -> Report {
    let start = trace.first().map_or(Duration::ZERO, |a| a.at);
    let mut state = algorithm.new_state(start);
    replay_decisions(algorithm.name(), algorithm.quota(), trace, |a| {
        algorithm.decide(&mut state, a.at, a.cost)
    })
}
// ANCHOR_END: replay

/// Replay `trace` through any decision function (another crate's limiter,
/// say), and report it as [`replay`] does.
pub fn replay_decisions(
    name: &str,
    quota: Quota,
    trace: &[Arrival],
    mut decide: impl FnMut(&Arrival) -> Decision,
) -> Report {
    let mut phases = Vec::new();
    for phase in Phase::ALL {
        let mut report = PhaseReport {
            phase,
            offered: 0,
            admitted: 0,
            queued: 0,
            longest_wait: Duration::ZERO,
            most_in_a_period: 0,
        };
        // (time the units went, units)
        let mut went: Vec<(Duration, u64)> = Vec::new();
        for arrival in trace.iter().filter(|a| a.phase == phase) {
            report.offered += arrival.cost;
            if let Some(wait) = decide(arrival).wait() {
                report.admitted += arrival.cost;
                if !wait.is_zero() {
                    report.queued += arrival.cost;
                }
                report.longest_wait = report.longest_wait.max(wait);
                went.push((arrival.at.saturating_add(wait), arrival.cost));
            }
        }
        report.most_in_a_period = most_in_any_window(&mut went, quota.period());
        phases.push(report);
    }
    Report {
        algorithm: name.to_string(),
        quota,
        phases,
    }
}

/// The most units in any half-open window `[t, t + period)`.
fn most_in_any_window(went: &mut [(Duration, u64)], period: Duration) -> u64 {
    went.sort_unstable();
    let (mut first, mut inside, mut most) = (0, 0, 0);
    for &(at, units) in went.iter() {
        inside += units;
        while went[first].0.saturating_add(period) <= at {
            inside -= went[first].1;
            first += 1;
        }
        most = most.max(inside);
    }
    most
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} on the adversarial trace ({})",
            self.algorithm, self.quota
        )?;
        let period = format!("{:?}", self.quota.period());
        writeln!(
            f,
            "{:<32} {:>7} {:>8} {:>6} {:>12} {:>11}",
            "phase",
            "offered",
            "admitted",
            "queued",
            "longest wait",
            format!("most in {period}")
        )?;
        for r in &self.phases {
            writeln!(
                f,
                "{:<32} {:>7} {:>8} {:>6} {:>12} {:>11}",
                r.phase.describe(),
                r.offered,
                r.admitted,
                r.queued,
                match r.longest_wait {
                    Duration::ZERO => "-".to_string(),
                    wait => format!("{wait:?}"),
                },
                format!("{} / {}", r.most_in_a_period, self.quota.rate())
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{AlgorithmKind, AnyAlgorithm};

    fn quota() -> Quota {
        Quota::per_second(10, 10).unwrap()
    }

    #[test]
    fn the_trace_has_its_three_phases_in_time_order() {
        let trace = adversarial(quota());
        assert!(trace.windows(2).all(|w| w[0].at <= w[1].at));
        let count = |p| trace.iter().filter(|a| a.phase == p).count();
        assert_eq!(
            [Phase::EdgeBurst, Phase::Steady, Phase::IdleThenBurst].map(count),
            [20, 80, 40]
        );
        assert_eq!(trace[0].at, Duration::from_millis(950));
        assert_eq!(trace[19].at, Duration::from_millis(1045));
    }

    #[test]
    fn the_worst_window_is_half_open() {
        let s = Duration::from_secs;
        let mut went = vec![(s(0), 3), (s(1), 4), (Duration::from_millis(1999), 1)];
        assert_eq!(most_in_any_window(&mut went, s(1)), 5);
        assert_eq!(most_in_any_window(&mut [], s(1)), 0);
    }

    #[test]
    fn every_algorithm_admits_on_the_trace_what_the_chapter_says() {
        let trace = adversarial(quota());
        let got: Vec<(&str, [u64; 3], [u64; 3])> = AlgorithmKind::ALL
            .iter()
            .map(|&kind| {
                let report = replay(&AnyAlgorithm::new(kind, quota()), &trace);
                let admitted = Phase::ALL.map(|p| report.phase(p).admitted);
                let most = Phase::ALL.map(|p| report.phase(p).most_in_a_period);
                (kind.name(), admitted, most)
            })
            .collect();
        // (admitted per phase, most that went in any one period per phase)
        let expected: Vec<(&str, [u64; 3], [u64; 3])> = vec![
            ("fixed-window", [20, 40, 20], [20, 10, 20]),
            ("sliding-log", [10, 40, 11], [10, 10, 10]),
            ("sliding-counter", [10, 37, 19], [10, 10, 18]),
            ("token-bucket", [10, 49, 20], [10, 19, 19]),
            ("gcra", [10, 49, 20], [10, 19, 19]),
            ("leaky-bucket", [10, 49, 20], [10, 10, 10]),
        ];
        assert_eq!(got, expected);
    }
}

#[cfg(test)]
mod governor_tests {
    use super::*;
    use crate::ratelimit::Gcra;
    use governor::clock::{Clock as _, FakeRelativeClock};
    use std::num::NonZeroU32;

    /// governor (a dev-dependency) replayed on its fake clock admits on the
    /// trace exactly what our GCRA admits, arrival by arrival.
    #[test]
    fn governor_admits_what_our_gcra_admits() {
        let quota = Quota::per_second(10, 10).unwrap();
        let ten = NonZeroU32::new(10).unwrap();
        let clock = FakeRelativeClock::default();
        let theirs = governor::RateLimiter::direct_with_clock(
            governor::Quota::per_second(ten).allow_burst(ten),
            clock.clone(),
        );
        let (gcra, mut state) = (Gcra::new(quota), Gcra::new(quota).new_state(Duration::ZERO));
        let mut at = Duration::ZERO;
        for arrival in adversarial(quota) {
            clock.advance(arrival.at - at);
            at = arrival.at;
            let ours = gcra.decide(&mut state, at, 1);
            match theirs.check() {
                Ok(()) => assert!(ours.is_admitted(), "at {at:?}"),
                Err(not_until) => assert_eq!(
                    ours,
                    Decision::Denied {
                        retry_after: not_until.wait_time_from(clock.now()),
                        reset: match ours {
                            Decision::Denied { reset, .. } => reset,
                            _ => panic!("governor denied at {at:?}, we admitted"),
                        },
                    }
                ),
            }
        }
    }
}
