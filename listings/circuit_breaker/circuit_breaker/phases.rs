//! The phase script in time: what the built-in backend does in each phase,
//! when each phase starts, the timeline's rows, and the driver that switches
//! the backend from one phase to the next while it runs.

use std::time::Duration;

use may_patterns::backend::{Backend, Behaviour};
use may_patterns::clock::Clock;

use crate::config::{Phase, PhaseKind};

// ANCHOR: behaviour
/// The built-in backend's behaviour in a phase. The numbers are fixed so a
/// run shows the same story every time: `slow` raises the latency and has
/// a 5% tail that shows in the p99 (under the default slow-call threshold,
/// 1 s; `--slow-call 30ms` makes every one of its calls slow), `failing`
/// answers 500 fast, `hanging` never answers (only a timeout ends the
/// call), `recovering` answers again, slower than `healthy`.
pub fn behaviour(kind: PhaseKind) -> Behaviour {
    let ms = Duration::from_millis;
    let healthy = Behaviour {
        latency: ms(2),
        slow_fraction: 0.0,
        slow_latency: ms(2),
        fail_fraction: 0.0,
        hang: false,
    };
    match kind {
        PhaseKind::Healthy => healthy,
        PhaseKind::Slow => Behaviour {
            latency: ms(40),
            slow_fraction: 0.05,
            slow_latency: ms(150),
            ..healthy
        },
        PhaseKind::Failing => Behaviour {
            fail_fraction: 1.0,
            ..healthy
        },
        PhaseKind::Hanging => Behaviour {
            hang: true,
            ..healthy
        },
        PhaseKind::Recovering => Behaviour {
            latency: ms(10),
            ..healthy
        },
    }
}
// ANCHOR_END: behaviour

/// One row of the timeline: `[from, to)` within one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub from: Duration,
    pub to: Duration,
    pub phase: PhaseKind,
    /// When the slice's phase began.
    pub phase_from: Duration,
}

/// The phases cut into rows of `interval`, each phase starting a new row.
pub fn slices(phases: &[Phase], interval: Duration) -> Vec<Slice> {
    let mut rows = Vec::new();
    let mut start = Duration::ZERO;
    for phase in phases {
        let end = start + phase.duration;
        let mut from = start;
        while from < end {
            let to = (from + interval).min(end);
            rows.push(Slice {
                from,
                to,
                phase: phase.kind,
                phase_from: start,
            });
            from = to;
        }
        start = end;
    }
    rows
}

/// When each phase starts, and when the script ends.
pub fn starts(phases: &[Phase]) -> (Vec<Duration>, Duration) {
    let mut at = Duration::ZERO;
    let starts = phases
        .iter()
        .map(|phase| {
            let start = at;
            at += phase.duration;
            start
        })
        .collect();
    (starts, at)
}

// ANCHOR: drive
/// Switch `backend` to each phase's behaviour at its start, by `clock`,
/// and return when the script ends. Runs on an OS thread of its own, not
/// on a may worker, so its std sleeps hold up no coroutine.
pub fn drive(backend: &Backend, phases: &[Phase], clock: &impl Clock) {
    let (starts, end) = starts(phases);
    for (phase, start) in phases.iter().zip(starts) {
        sleep_until(clock, start);
        backend.set_behaviour(behaviour(phase.kind));
    }
    sleep_until(clock, end);
}
// ANCHOR_END: drive

fn sleep_until(clock: &impl Clock, at: Duration) {
    std::thread::sleep(at.saturating_sub(clock.now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_starts_a_row_and_rows_are_at_most_an_interval() {
        let phases = [
            Phase {
                kind: PhaseKind::Healthy,
                duration: Duration::from_millis(1200),
            },
            Phase {
                kind: PhaseKind::Failing,
                duration: Duration::from_millis(500),
            },
        ];
        let rows = slices(&phases, Duration::from_millis(500));
        let bounds: Vec<(u128, u128, &str)> = rows
            .iter()
            .map(|r| (r.from.as_millis(), r.to.as_millis(), r.phase.name()))
            .collect();
        assert_eq!(
            bounds,
            [
                (0, 500, "healthy"),
                (500, 1000, "healthy"),
                (1000, 1200, "healthy"),
                (1200, 1700, "failing")
            ]
        );
        let (starts, end) = starts(&phases);
        assert_eq!(starts, [Duration::ZERO, Duration::from_millis(1200)]);
        assert_eq!(end, Duration::from_millis(1700));
    }

    #[test]
    fn a_failing_phase_fails_every_request_and_a_healthy_one_none() {
        assert_eq!(behaviour(PhaseKind::Failing).fail_fraction, 1.0);
        assert_eq!(behaviour(PhaseKind::Healthy).fail_fraction, 0.0);
        assert!(behaviour(PhaseKind::Hanging).hang);
    }
}
