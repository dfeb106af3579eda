//! What a run showed, as a summary: queue wait and run time percentiles,
//! the scale events, the worker count over time. Printed as text (measured
//! values as `12.5ms` and `~N`, so the shown output compares across runs)
//! or as JSON.

use std::fmt;
use std::time::Duration;

use may_patterns::pool::{ScaleKind, Timing};
use serde::Serialize;

use crate::cli::Cli;
use crate::mix::Kind;
use crate::session::Session;

/// Scale events of each kind the text shows; the JSON has them all.
const FIRST_EVENTS: usize = 3;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One change of the pool's size.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: f64,
    pub kind: &'static str,
    /// Workers after the change.
    pub workers: usize,
    pub reason: &'static str,
}

/// One sample of the pool's size and load, as the scaler took it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    pub at_ms: f64,
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
}

/// The worker count over the samples.
#[derive(Debug, Clone, Serialize)]
pub struct Workers {
    pub min: usize,
    pub avg: f64,
    pub max: usize,
}

// ANCHOR: summary
/// Everything the program reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub jobs: usize,
    pub io_jobs: usize,
    pub cpu_jobs: usize,
    pub mix: String,
    pub burst: usize,
    pub gap_ms: f64,
    pub bursts: Vec<f64>,
    pub min: usize,
    pub max: usize,
    pub queue: usize,
    /// Where the CPU jobs ran, and on how many OS threads.
    pub cpu: &'static str,
    pub cpu_threads: usize,
    pub completed: u64,
    pub panicked: u64,
    /// XOR of every finished job's result: the same whichever worker (or
    /// fork-join pool) computed what.
    pub checksum: String,
    /// Submit to start: the time a job sat in the queue.
    pub queue_wait: Option<Percentiles>,
    /// Start to end, per kind.
    pub ran_io: Option<Percentiles>,
    pub ran_cpu: Option<Percentiles>,
    /// The worker count over the scaler's samples (a fixed pool has no
    /// scaler, so no samples: then its size).
    pub workers: Workers,
    pub queue_high_water: usize,
    /// Workers added and retired (a shrink may retire several at once).
    pub grew: u64,
    pub shrank: u64,
    /// Every change of size, in order (the pool keeps the latest 1,000).
    pub events: Vec<Event>,
    /// The longest a burst took to submit: more than a few µs means the
    /// queue was full and the submitter waited for room.
    pub longest_submit_ms: f64,
    pub elapsed_ms: f64,
    pub timeline: Vec<Point>,
}
// ANCHOR_END: summary

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentiles; `None` for no samples.
pub fn percentiles(mut values: Vec<Duration>) -> Option<Percentiles> {
    values.sort_unstable();
    let at = |p: f64| {
        let rank = (p * values.len() as f64).ceil() as usize;
        ms(values[rank.clamp(1, values.len()) - 1])
    };
    (!values.is_empty()).then(|| Percentiles {
        samples: values.len(),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

/// The summary of `session`, a run of `cli`.
pub fn build(cli: &Cli, session: &Session) -> Summary {
    let timings = |kind: Option<Kind>, part: fn(&Timing) -> Duration| {
        let finished = session.outcomes.iter().filter_map(|o| match &o.result {
            Ok((_, timing)) if kind.is_none_or(|k| k == o.kind) => Some(part(timing)),
            _ => None,
        });
        percentiles(finished.collect())
    };
    let checksum = session
        .outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .fold(0, |sum, (hash, _)| sum ^ hash);
    let timeline: Vec<Point> = session
        .timeline
        .iter()
        .map(|s| Point {
            at_ms: ms(s.at),
            workers: s.workers,
            busy: s.busy,
            queued: s.queued,
        })
        .collect();
    let stats = &session.report.stats;
    let counts = timeline.iter().map(|p| p.workers);
    let workers = match timeline.is_empty() {
        true => Workers {
            min: cli.max,
            avg: cli.max as f64,
            max: cli.max,
        },
        false => Workers {
            min: counts.clone().min().unwrap_or(0),
            avg: counts.clone().sum::<usize>() as f64 / timeline.len() as f64,
            max: counts.max().unwrap_or(0),
        },
    };
    let io_jobs = session
        .outcomes
        .iter()
        .filter(|o| o.kind == Kind::Io)
        .count();
    Summary {
        jobs: cli.jobs,
        io_jobs,
        cpu_jobs: cli.jobs - io_jobs,
        mix: cli.mix.to_string(),
        burst: cli.burst,
        gap_ms: ms(cli.gap),
        bursts: session.bursts.iter().map(|b| ms(b.at)).collect(),
        min: cli.min,
        max: cli.max,
        queue: cli.queue,
        cpu: match (cli.steal, cli.shared_queue) {
            (false, _) => "blocking pool",
            (true, false) => "fork-join, stealing",
            (true, true) => "fork-join, shared queue",
        },
        cpu_threads: cli.cpu_threads,
        completed: stats.completed,
        panicked: stats.panicked,
        checksum: format!("{checksum:016x}"),
        queue_wait: timings(None, |t| t.queued),
        ran_io: timings(Some(Kind::Io), |t| t.ran),
        ran_cpu: timings(Some(Kind::Cpu), |t| t.ran),
        workers,
        queue_high_water: stats.queue_high_water,
        grew: stats.grown,
        shrank: stats.shrunk,
        events: session
            .events
            .iter()
            .map(|e| Event {
                at_ms: ms(e.at),
                kind: match e.kind {
                    ScaleKind::Grew => "grew",
                    ScaleKind::Shrank => "shrank",
                },
                workers: e.workers,
                reason: e.reason,
            })
            .collect(),
        longest_submit_ms: session.submitting.iter().copied().max().map_or(0.0, ms),
        elapsed_ms: ms(session.elapsed),
        timeline,
    }
}

/// A duration in milliseconds as the shown output prints it: `850ns`,
/// `12.5µs`, `12.5ms`, `1.25s`.
pub struct Ms(pub f64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ms if ms < 0.001 => write!(f, "{:.0}ns", ms * 1e6),
            ms if ms < 1.0 => write!(f, "{:.1}µs", ms * 1e3),
            ms if ms < 1000.0 => write!(f, "{ms:.1}ms"),
            ms => write!(f, "{:.2}s", ms / 1e3),
        }
    }
}

fn line(f: &mut fmt::Formatter<'_>, what: &str, p: &Option<Percentiles>) -> fmt::Result {
    match p {
        None => writeln!(f, "{what:<12}no jobs"),
        Some(p) => writeln!(
            f,
            "{what:<12}p50 {}  p90 {}  p99 {}  max {}",
            Ms(p.p50_ms),
            Ms(p.p90_ms),
            Ms(p.p99_ms),
            Ms(p.max_ms)
        ),
    }
}

// ANCHOR: display
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} jobs ({} io, {} cpu; mix {}) in {} burst{} of up to {}, one every {}",
            self.jobs,
            self.io_jobs,
            self.cpu_jobs,
            self.mix,
            self.bursts.len(),
            if self.bursts.len() == 1 { "" } else { "s" },
            self.burst,
            Ms(self.gap_ms)
        )?;
        writeln!(
            f,
            "pool: {}..{} workers, queue {}; cpu jobs on {} OS threads ({})",
            self.min, self.max, self.queue, self.cpu_threads, self.cpu
        )?;
        writeln!(
            f,
            "completed {}, panicked {}, checksum {}",
            self.completed, self.panicked, self.checksum
        )?;
        line(f, "queue wait", &self.queue_wait)?;
        line(f, "ran (io)", &self.ran_io)?;
        line(f, "ran (cpu)", &self.ran_cpu)?;
        writeln!(
            f,
            "{:<12}min ~{}  avg ~{:.1}  max ~{}  (~{} samples)",
            "workers",
            self.workers.min,
            self.workers.avg,
            self.workers.max,
            self.timeline.len()
        )?;
        writeln!(f, "{:<12}high water ~{}", "queue", self.queue_high_water)?;
        let steps = |kind: &str| self.events.iter().filter(|e| e.kind == kind).count();
        writeln!(
            f,
            "{:<12}grew by ~{} workers in ~{} steps, shrank by ~{} in ~{}",
            "scaling",
            self.grew,
            steps("grew"),
            self.shrank,
            steps("shrank")
        )?;
        for kind in ["grew", "shrank"] {
            let first = self.events.iter().filter(|e| e.kind == kind);
            for e in first.take(FIRST_EVENTS) {
                // No padding of measured values: the shown output
                // compares them normalised, padding would differ.
                writeln!(
                    f,
                    "  {kind:<6} at {} to ~{} ({})",
                    Ms(e.at_ms),
                    e.workers,
                    e.reason
                )?;
            }
        }
        writeln!(
            f,
            "{:<12}longest burst {} (longer: the queue was full)",
            "submitting",
            Ms(self.longest_submit_ms)
        )?;
        writeln!(f, "{:<12}{}", "elapsed", Ms(self.elapsed_ms))
    }
}
// ANCHOR_END: display

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(values).unwrap();
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert!(percentiles(Vec::new()).is_none());
    }

    #[test]
    fn durations_print_in_the_forms_the_book_normalises() {
        assert_eq!(Ms(0.0004).to_string(), "400ns");
        assert_eq!(Ms(0.25).to_string(), "250.0µs");
        assert_eq!(Ms(12.54).to_string(), "12.5ms");
        assert_eq!(Ms(1650.0).to_string(), "1.65s");
    }
}
