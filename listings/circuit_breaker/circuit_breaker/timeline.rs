//! The run cut into rows: per interval, how many calls ended, how many
//! succeeded, their p50 and p99 latency, the breaker's states, and how many
//! attempts reached for the backend; then the breaker's transitions.

use std::fmt;
use std::time::Duration;

use may_patterns::breaker::{State, Transition};
use serde::Serialize;

use crate::client::{CallRecord, Outcome};
use crate::phases::Slice;

/// One row of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub from_ms: f64,
    pub to_ms: f64,
    pub phase: &'static str,
    /// Calls that ended in the row.
    pub calls: usize,
    pub ok: usize,
    pub failed: usize,
    pub rejected: usize,
    /// ok / calls; `None` when no call ended in the row.
    pub success_rate: Option<f64>,
    /// Caller latency of the calls that ended in the row, retries and
    /// backoff included.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Attempts that started in the row: requests that reached for the
    /// backend (the breaker let them through).
    pub sent: usize,
    /// The breaker's state at the row's start, then each state it entered.
    #[serde(serialize_with = "names")]
    pub states: Vec<State>,
}

/// One change of the breaker's state, placed in the script.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub at_ms: f64,
    pub phase: &'static str,
    /// How long after its phase began.
    pub into_phase_ms: f64,
    #[serde(serialize_with = "name")]
    pub from: State,
    #[serde(serialize_with = "name")]
    pub to: State,
    pub reason: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub rows: Vec<Row>,
    pub transitions: Vec<Change>,
    pub calls: usize,
    pub ok: usize,
    pub failed: usize,
    pub rejected: usize,
    /// Attempts the callers sent (or tried to).
    pub sent: usize,
    /// Requests the built-in backend read; `None` for an outside backend.
    pub backend_requests: Option<u64>,
}

/// A state in JSON as the library prints it: `"half-open"`.
fn name<S: serde::Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(state)
}

fn names<S: serde::Serializer>(states: &[State], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(states.iter().map(State::to_string))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0 < p <= 1) of sorted `values`, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

// ANCHOR: build
/// Rows from the slices, the calls (by when they ended) and the attempts (by
/// when they started); transitions placed in their phase. A call that ended
/// after the last slice counts in the last one.
pub fn build(slices: &[Slice], records: &[CallRecord], transitions: &[Transition]) -> Timeline {
    let row_of = |t: Duration| {
        slices
            .iter()
            .position(|s| t < s.to)
            .unwrap_or(slices.len() - 1)
    };
    let mut latencies = vec![Vec::new(); slices.len()];
    let mut rows: Vec<Row> = slices
        .iter()
        .map(|s| Row {
            from_ms: ms(s.from),
            to_ms: ms(s.to),
            phase: s.phase.name(),
            calls: 0,
            ok: 0,
            failed: 0,
            rejected: 0,
            success_rate: None,
            p50_ms: None,
            p99_ms: None,
            sent: 0,
            states: Vec::new(),
        })
        .collect();
    for record in records {
        let i = row_of(record.ended);
        let row = &mut rows[i];
        row.calls += 1;
        match record.outcome {
            Outcome::Ok => row.ok += 1,
            Outcome::Failed => row.failed += 1,
            Outcome::Rejected => row.rejected += 1,
        }
        latencies[i].push(record.latency());
        for &at in &record.attempts {
            rows[row_of(at)].sent += 1;
        }
    }
    let mut state = State::Closed;
    for (i, row) in rows.iter_mut().enumerate() {
        let times = &mut latencies[i];
        times.sort_unstable();
        row.p50_ms = percentile(times, 0.50).map(ms);
        row.p99_ms = percentile(times, 0.99).map(ms);
        row.success_rate = (row.calls > 0).then(|| row.ok as f64 / row.calls as f64);
        row.states.push(state);
        for t in transitions.iter().filter(|t| row_of(t.at) == i) {
            row.states.push(t.to);
            state = t.to;
        }
    }
    let changes = transitions
        .iter()
        .map(|t| {
            let slice = &slices[row_of(t.at)];
            Change {
                at_ms: ms(t.at),
                phase: slice.phase.name(),
                into_phase_ms: ms(t.at.saturating_sub(slice.phase_from)),
                from: t.from,
                to: t.to,
                reason: t.reason.to_string(),
            }
        })
        .collect();
    let count = |outcome| records.iter().filter(|r| r.outcome == outcome).count();
    Timeline {
        calls: records.len(),
        ok: count(Outcome::Ok),
        failed: count(Outcome::Failed),
        rejected: count(Outcome::Rejected),
        sent: records.iter().map(|r| r.attempts.len()).sum(),
        rows,
        transitions: changes,
        backend_requests: None,
    }
}
// ANCHOR_END: build

/// A measured duration as the book prints them: `850ns`, `4µs`, `2.3ms`,
/// `1.25s`.
pub fn duration_text(ms: f64) -> String {
    match ms {
        m if m < 0.001 => format!("{:.0}ns", m * 1e6),
        m if m < 1.0 => format!("{:.0}µs", m * 1000.0),
        m if m < 1000.0 => format!("{m:.1}ms"),
        m => format!("{:.2}s", m / 1000.0),
    }
}

fn states_text(states: &[State]) -> String {
    let names: Vec<String> = states.iter().map(State::to_string).collect();
    names.join(" -> ")
}

// ANCHOR: text
/// The timeline for a person. What is measured (counts, shares, latencies)
/// comes after the fixed-width columns and is never padded, so a column
/// that grows by a digit does not shift the ones after it.
impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let optional = |value: Option<f64>, text: fn(f64) -> String| {
            value.map_or_else(|| "-".to_owned(), text)
        };
        for row in &self.rows {
            writeln!(
                f,
                "{:>6.1}s  {:<10}  {:<30}  calls ~{}  ok {}  rejected ~{}  p50 {}  p99 {}  sent ~{}",
                row.from_ms / 1000.0,
                row.phase,
                states_text(&row.states),
                row.calls,
                optional(row.success_rate, |r| format!("{:.1}%", r * 100.0)),
                row.rejected,
                optional(row.p50_ms, duration_text),
                optional(row.p99_ms, duration_text),
                row.sent
            )?;
        }
        writeln!(f, "breaker transitions:")?;
        for t in &self.transitions {
            writeln!(
                f,
                "{:>6.1}s  {:<10}  {} -> {} ({}) {} into the phase",
                t.at_ms / 1000.0,
                t.phase,
                t.from,
                t.to,
                t.reason,
                duration_text(t.into_phase_ms)
            )?;
        }
        write!(
            f,
            "calls ~{}: ok ~{}, failed ~{}, rejected ~{}; attempts sent ~{}",
            self.calls, self.ok, self.failed, self.rejected, self.sent
        )?;
        if let Some(requests) = self.backend_requests {
            write!(f, ", requests the backend read ~{requests}")?;
        }
        writeln!(f)
    }
}
// ANCHOR_END: text

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhaseKind;
    use may_patterns::breaker::Reason;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn record(started: u64, ended: u64, outcome: Outcome, attempts: &[u64]) -> CallRecord {
        CallRecord {
            started: at(started),
            ended: at(ended),
            outcome,
            attempts: attempts.iter().map(|&ms| at(ms)).collect(),
        }
    }

    #[test]
    fn calls_count_where_they_end_attempts_where_they_start() {
        let slice = |from, to, phase| Slice {
            from: at(from),
            to: at(to),
            phase,
            phase_from: at(if phase == PhaseKind::Healthy { 0 } else { 1000 }),
        };
        let slices = [
            slice(0, 500, PhaseKind::Healthy),
            slice(500, 1000, PhaseKind::Healthy),
            slice(1000, 1500, PhaseKind::Failing),
        ];
        let records = [
            record(10, 20, Outcome::Ok, &[10]),
            record(400, 600, Outcome::Ok, &[400, 450]),
            record(1100, 1110, Outcome::Failed, &[1100]),
            record(1200, 1200, Outcome::Rejected, &[]),
            record(1400, 1700, Outcome::Failed, &[1400]),
        ];
        let transitions = [Transition {
            from: State::Closed,
            to: State::Open,
            at: at(1150),
            reason: Reason::FailureRate(1.0),
        }];
        let timeline = build(&slices, &records, &transitions);
        let counts: Vec<(usize, usize, usize)> = timeline
            .rows
            .iter()
            .map(|r| (r.calls, r.ok, r.sent))
            .collect();
        assert_eq!(counts, [(1, 1, 3), (1, 1, 0), (3, 0, 2)]);
        assert_eq!(timeline.rows[1].p99_ms, Some(200.0));
        assert_eq!(timeline.rows[0].states, [State::Closed]);
        assert_eq!(timeline.rows[2].states, [State::Closed, State::Open]);
        assert_eq!(timeline.rows[2].success_rate, Some(0.0));
        assert_eq!(timeline.transitions[0].phase, "failing");
        assert_eq!(timeline.transitions[0].into_phase_ms, 150.0);
        assert_eq!(
            (timeline.calls, timeline.rejected, timeline.sent),
            (5, 1, 5)
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(at).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(at(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(at(99)));
        assert_eq!(percentile(&sorted[..1], 0.99), Some(at(1)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
