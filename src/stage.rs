//! A stage runner for chains of coroutines joined by [`bounded`](crate::bounded)
//! channels: read -> parse -> enrich -> write, each stage run by one or more
//! worker coroutines.
//!
//! The multi-stage producer-consumer chapter builds this in its steps; its
//! finished program and the data pipeline's run their middle stages on it.
//!
//! - Workers of one stage share its input [`Receiver`] and output [`Sender`]
//!   by holding clones: each item goes to exactly one worker, and the next
//!   stage's input ends when the last worker has returned. [`Stage::spawn`]
//!   keeps no clone of either end, so an end still travels down the chain and
//!   a failure up it.
//! - Every worker times what it does with its time: working (*busy*), parked
//!   in `recv` because the stages before it are slower (*starved*), parked in
//!   `send` because the next queue is full (*blocked*). The stage whose
//!   workers are busy the largest share of the run is the bottleneck.
//! - Every worker keeps books that balance: what came in went out, was
//!   rejected (counted by reason), or was *abandoned* in its hand because the
//!   stages after it had stopped: `in = out + rejected + abandoned`.
//!
//! ```
//! use may_patterns::bounded;
//! use may_patterns::stage::{Outcome, Stage};
//!
//! let (numbers_tx, numbers_rx) = bounded::channel::<u32>(4);
//! let (halves_tx, halves_rx) = bounded::channel::<u32>(8); // room for every half
//! // Two workers halve even numbers and reject odd ones.
//! let halve = Stage::new("halve", 2).spawn(numbers_rx, halves_tx, || {
//!     |n: u32| match n % 2 {
//!         0 => Outcome::Out(n / 2),
//!         _ => Outcome::rejected("odd"),
//!     }
//! });
//! for n in 0..10 {
//!     numbers_tx.send(n).unwrap();
//! }
//! drop(numbers_tx); // the stage's input ends...
//! let stats = halve.join(); // ...so its workers return
//! let mut halves: Vec<u32> = halves_rx.iter().collect();
//! halves.sort_unstable(); // two workers finish in any order
//! assert_eq!(halves, [0, 1, 2, 3, 4]);
//! assert_eq!((stats.items_in, stats.items_out, stats.rejected["odd"]), (10, 5, 5));
//! assert!(stats.balances());
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::{Builder, JoinHandle};

use crate::bounded::{Receiver, Sender};

/// Where one stage's time and items went, summed over its workers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StageStats {
    pub name: &'static str,
    /// Coroutines (or threads) that ran the stage.
    pub workers: usize,
    /// Items this stage took on (an item it only passed on is not counted).
    pub items_in: u64,
    /// Items it finished and sent on.
    pub items_out: u64,
    /// Items it refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Items it held when the stages after it had stopped.
    pub abandoned: u64,
    /// Doing its own work, its own I/O waits included.
    pub busy: Duration,
    /// Parked in `recv`: the stages before it did not keep up.
    pub starved: Duration,
    /// Parked in `send`: the next stage's queue was full (backpressure).
    pub blocked: Duration,
    /// The deepest its input queue got (a source has no input queue).
    pub input_high_water: Option<usize>,
    /// The most workers of the stage inside their work at the same moment.
    pub peak_working: usize,
}

impl StageStats {
    /// Empty books for a stage of `workers` workers.
    pub fn new(name: &'static str, workers: usize) -> StageStats {
        StageStats {
            name,
            workers,
            ..StageStats::default()
        }
    }

    /// Count one item refused for `reason`.
    pub fn reject(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Every item that came in went out, was rejected, or was abandoned.
    pub fn balances(&self) -> bool {
        self.items_in == self.items_out + self.rejected_total() + self.abandoned
    }

    /// Add another worker's numbers to these (`workers` and `peak_working`
    /// describe the whole stage and are left alone).
    pub fn add(&mut self, other: &StageStats) {
        self.items_in += other.items_in;
        self.items_out += other.items_out;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        self.abandoned += other.abandoned;
        self.busy += other.busy;
        self.starved += other.starved;
        self.blocked += other.blocked;
        self.input_high_water = self.input_high_water.max(other.input_high_water);
    }
}

/// Run `f`, adding the time it took to `total`.
pub fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    *total += started.elapsed();
    result
}

/// What a stage's work made of one item.
pub enum Outcome<O> {
    /// Done: send it on (counted in `items_out`).
    Out(O),
    /// Refused here for `reason` (counted in `rejected`). `pass_on`, if
    /// given, still goes to the next stage: a sink that writes every reject
    /// to a file wants them.
    Rejected {
        reason: &'static str,
        pass_on: Option<O>,
    },
    /// Not this stage's item (an earlier stage's reject on its way to the
    /// sink): send it on, uncounted.
    PassOn(O),
}

impl<O> Outcome<O> {
    /// Refused for `reason`; nothing goes on.
    pub fn rejected(reason: &'static str) -> Outcome<O> {
        Outcome::Rejected {
            reason,
            pass_on: None,
        }
    }
}

/// A work function that returns `Result<O, reason>` fits a stage as it is:
/// `Ok` goes on, `Err` is counted as rejected for that reason.
impl<O> From<Result<O, &'static str>> for Outcome<O> {
    fn from(result: Result<O, &'static str>) -> Outcome<O> {
        match result {
            Ok(out) => Outcome::Out(out),
            Err(reason) => Outcome::rejected(reason),
        }
    }
}

/// One worker of a middle stage: receive, work, send, until the input ends
/// or the next stage is gone. Returning drops `input` and `output`: when the
/// last worker of a stage returns, the next stage's input ends, and sends
/// into this stage's queue fail, which stops the stage before it in turn.
pub fn relay<I, O>(
    name: &'static str,
    input: Receiver<I>,
    output: Sender<O>,
    mut work: impl FnMut(I) -> Outcome<O>,
) -> StageStats {
    let mut stats = StageStats::new(name, 1);
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        if output.is_closed() {
            // Nobody would take the result: skip the work, count the item.
            stats.items_in += 1;
            stats.abandoned += 1;
            break;
        }
        let (next, counted) = match timed(&mut stats.busy, || work(item)) {
            Outcome::Out(next) => {
                stats.items_in += 1;
                (next, true)
            }
            Outcome::Rejected { reason, pass_on } => {
                stats.items_in += 1;
                stats.reject(reason);
                match pass_on {
                    Some(next) => (next, false),
                    None => continue,
                }
            }
            Outcome::PassOn(next) => (next, false),
        };
        match timed(&mut stats.blocked, || output.send(next)) {
            Ok(()) if counted => stats.items_out += 1,
            Ok(()) => {}
            Err(_handed_back) => {
                if counted {
                    stats.abandoned += 1; // a rejected item is already counted
                }
                break;
            }
        }
    }
    stats.input_high_water = Some(input.high_water());
    stats
}

/// How to run one middle stage: its name, its number of workers, and
/// optionally their stack size.
pub struct Stage {
    name: &'static str,
    workers: usize,
    stack_words: Option<usize>,
}

/// A stage whose workers are running; [`join`](Running::join) it for its
/// numbers.
pub struct Running {
    name: &'static str,
    workers: Vec<JoinHandle<StageStats>>,
    peak_working: Arc<AtomicUsize>,
}

impl Stage {
    /// A stage of `workers` coroutines (at least one).
    pub fn new(name: &'static str, workers: usize) -> Stage {
        assert!(workers > 0, "stage {name} needs at least one worker");
        Stage {
            name,
            workers,
            stack_words: None,
        }
    }

    /// Give each worker a stack of `words` machine words instead of may's
    /// configured default (for work that needs more, such as a parser).
    pub fn stack_words(self, words: usize) -> Stage {
        Stage {
            stack_words: Some(words),
            ..self
        }
    }

    /// Start the workers. Each gets a clone of `input` and `output` and its
    /// own work from `make_work` (so a worker can keep state, such as a
    /// pacer, without sharing it). The originals drop when this returns.
    pub fn spawn<I, O, W>(
        self,
        input: Receiver<I>,
        output: Sender<O>,
        make_work: impl Fn() -> W,
    ) -> Running
    where
        I: Send + 'static,
        O: Send + 'static,
        W: FnMut(I) -> Outcome<O> + Send + 'static,
    {
        let name = self.name;
        let working = Arc::new(AtomicUsize::new(0));
        let peak_working = Arc::new(AtomicUsize::new(0));
        let workers = (0..self.workers)
            .map(|i| {
                let (input, output, mut work) = (input.clone(), output.clone(), make_work());
                let (working, peak) = (working.clone(), peak_working.clone());
                let mut builder = Builder::new().name(format!("{name}-{i}"));
                if let Some(words) = self.stack_words {
                    builder = builder.stack_size(words);
                }
                let worker = move || {
                    relay(name, input, output, move |item| {
                        let now = working.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let outcome = work(item);
                        working.fetch_sub(1, Ordering::SeqCst);
                        outcome
                    })
                };
                // may 0.3.51's `Builder::spawn` returns `io::Result` but has
                // no failing path: a failed stack allocation panics instead.
                may::go!(builder, worker).expect("may's Builder::spawn does not fail")
            })
            .collect();
        Running {
            name,
            workers,
            peak_working,
        }
    }
}

impl Running {
    /// Wait for every worker and add up their numbers.
    ///
    /// # Panics
    ///
    /// If a worker panicked: that is a bug in the stage's work, not an error
    /// to count.
    pub fn join(self) -> StageStats {
        let mut total = StageStats::new(self.name, self.workers.len());
        for worker in self.workers {
            let stats = worker
                .join()
                .unwrap_or_else(|_| panic!("a worker of stage {} panicked", self.name));
            total.add(&stats);
        }
        total.peak_working = self.peak_working.load(Ordering::SeqCst);
        total
    }
}

#[cfg(test)]
mod tests;
