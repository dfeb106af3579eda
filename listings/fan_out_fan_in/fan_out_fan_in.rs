//! Fan-out / fan-in: spread independent tasks over a pool of worker
//! coroutines and gather every result in one place.
//!
//! **Purpose.** Run a batch of independent tasks (calls to a slow service,
//! thumbnails, checksums) concurrently, with a bounded amount of work in
//! flight, and get each task's result exactly once: as it completes, or in
//! input order. Failures are either collected (the batch goes on) or fatal
//! (`--fail-fast`: stop dispatching, skip what is queued).
//!
//! **Architecture.** A distributor coroutine makes the tasks and hands them
//! to the workers through bounded queues: one queue shared by every worker
//! (`--strategy shared`), or one queue per worker filled in turn
//! (`round-robin`) or to the worker with the fewest tasks outstanding
//! (`least-loaded`). Workers send every outcome into one bounded result
//! channel; the collector (the caller's thread) reads it, reorders it when
//! `--ordered` (a window of `--window` tasks bounds the reorder buffer), and
//! counts. With `--min-workers/--max-workers` a supervisor coroutine grows the
//! pool while the shared queue is longer than `--scale-up-at` and workers
//! retire after `--idle` without work.
//!
//! **Usage.**
//! `cargo run --example fan_out_fan_in -- --tasks 1000 --workers 16 --task-us 2000`
//! `cargo run --example fan_out_fan_in -- --min-workers 2 --max-workers 32 --tasks 2000`
//! `cargo run --example fan_out_fan_in -- --strategy round-robin --workers 4 --skew 0.25`
//! `cargo run --example fan_out_fan_in -- --ordered --fail-at 40 --fail-fast --json`
//!
//! **Performance.** Latency-bound tasks (`--work wait`) finish about
//! `workers` times faster than one after another, until the machine runs out
//! of something else; CPU-bound tasks (`--work cpu`) at most as many times
//! faster as may has worker threads. See the chapter's tables:
//! `cargo bench --bench fan_out_fan_in`.
//!
//! **Customization.** Replace [`run_task`] with the real work (keep it
//! co-operative: may sockets, may sleeps; blocking calls belong on a thread),
//! and the `Task` fields with its input. Everything else is the pattern.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use may::coroutine::JoinHandle;
use may::go;
use may::sync::Semphore;
use may_patterns::bounded::{self, Receiver, RecvTimeoutError, Sender};
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};
use serde::Serialize;

// ANCHOR: cli
/// Run a batch of tasks on a pool of worker coroutines and gather the results.
#[derive(Parser, Debug)]
#[command(name = "fan_out_fan_in")]
struct Args {
    /// A fixed number of workers (8 unless --max-workers asks for a dynamic pool).
    #[arg(long, conflicts_with_all = ["min_workers", "max_workers"])]
    workers: Option<usize>,
    /// Dynamic pool: never fewer workers than this (needs --max-workers).
    #[arg(long, requires = "max_workers")]
    min_workers: Option<usize>,
    /// Dynamic pool: never more workers than this.
    #[arg(long)]
    max_workers: Option<usize>,
    /// How many tasks the batch has.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// How the distributor hands tasks to workers.
    #[arg(long, value_enum, default_value_t = Strategy::Shared)]
    strategy: Strategy,
    /// Emit results in input order (through a reorder window) instead of as
    /// they complete.
    #[arg(long)]
    ordered: bool,
    /// Tasks that may be dispatched ahead of the oldest unfinished one when
    /// --ordered: the most results the reorder buffer holds.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Stop at the first failed task: dispatch nothing more, skip what is queued.
    #[arg(long)]
    fail_fast: bool,
    /// Make these tasks fail (comma-separated indices), to try the error modes.
    #[arg(long, value_delimiter = ',')]
    fail_at: Vec<usize>,
    /// Cost of an ordinary task, in microseconds.
    #[arg(long, default_value_t = 1000)]
    task_us: u64,
    /// Fraction of tasks that cost 20x as much (every round(1/F)-th task,
    /// starting with task 0). 0 = every task costs the same.
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// What a task's cost is spent on: waiting (like a remote call) or the CPU.
    #[arg(long, value_enum, default_value_t = Work::Wait)]
    work: Work,
    /// Capacity of each task queue.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Dynamic pool: add a worker while more tasks than this are queued.
    #[arg(long, default_value_t = 8)]
    scale_up_at: usize,
    /// Tasks arrive in bursts of this many, --gap apart (default: all at once).
    #[arg(long, requires = "gap")]
    burst: Option<usize>,
    /// The pause between bursts.
    #[arg(long, requires = "burst", value_parser = humantime::parse_duration)]
    gap: Option<Duration>,
    /// Dynamic pool: a worker without work for this long retires.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Print one line per result (index, worker, outcome) as it is emitted.
    #[arg(long)]
    print: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}
// ANCHOR_END: cli

/// How the distributor hands tasks to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One queue every worker takes from: a free worker takes the next task.
    Shared,
    /// One queue per worker, filled in turn.
    RoundRobin,
    /// One queue per worker; each task goes to the worker with the fewest
    /// tasks queued or running.
    LeastLoaded,
}

/// What a task spends its cost on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Work {
    /// Waiting, like a call to a remote service (a may sleep via `Pacer`).
    Wait,
    /// Busy computation on the worker thread.
    Cpu,
}

/// How many workers, and whether the pool may change size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Fixed(usize),
    Dynamic { min: usize, max: usize },
}

/// Everything a run needs; the CLI fills it, tests and benches build it.
#[derive(Debug, Clone)]
pub struct Config {
    pub tasks: usize,
    pub pool: Pool,
    pub strategy: Strategy,
    pub ordered: bool,
    pub window: usize,
    pub fail_fast: bool,
    pub fail_at: Vec<usize>,
    pub task_us: u64,
    pub skew: f64,
    pub work: Work,
    pub queue: usize,
    pub scale_up_at: usize,
    pub idle: Duration,
    /// Tasks arrive `burst.0` at a time, `burst.1` apart.
    pub burst: Option<(usize, Duration)>,
}

impl Config {
    /// A plain batch: `tasks` latency-bound tasks of `task_us` on `workers`.
    pub fn new(tasks: usize, workers: usize, task_us: u64) -> Config {
        Config {
            tasks,
            pool: Pool::Fixed(workers),
            strategy: Strategy::Shared,
            ordered: false,
            window: 64,
            fail_fast: false,
            fail_at: Vec::new(),
            task_us,
            skew: 0.0,
            work: Work::Wait,
            queue: 64,
            scale_up_at: 8,
            idle: Duration::from_millis(50),
            burst: None,
        }
    }

    /// Reject combinations that cannot work, with a message for a person.
    pub fn validate(&self) -> Result<(), String> {
        match self.pool {
            Pool::Fixed(0) => return Err("--workers must be at least 1".into()),
            Pool::Dynamic { min, max } if min == 0 || min > max => {
                return Err(format!(
                    "need 1 <= --min-workers <= --max-workers, got {min} and {max}"
                ))
            }
            Pool::Dynamic { .. } if self.strategy != Strategy::Shared => {
                return Err("a dynamic pool needs --strategy shared: per-worker queues \
                            would strand the tasks of a worker that retires"
                    .into())
            }
            _ => {}
        }
        if self.queue == 0 || self.window == 0 {
            return Err("--queue and --window must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.skew) {
            return Err(format!("--skew must be between 0 and 1, got {}", self.skew));
        }
        if let Some((size, gap)) = self.burst {
            if size == 0 || gap < Duration::from_millis(1) {
                return Err("--burst must be at least 1 and --gap at least 1ms".into());
            }
        }
        if let Some(i) = self.fail_at.iter().find(|&&i| i >= self.tasks) {
            return Err(format!(
                "--fail-at {i} is not a task (there are {})",
                self.tasks
            ));
        }
        Ok(())
    }
}

// ANCHOR: task
/// One unit of work. `cost` is what it takes; `fails` scripts a failure.
#[derive(Debug, Clone, Copy)]
pub struct Task {
    pub index: usize,
    pub cost: Duration,
    pub fails: bool,
}

/// The batch: every `round(1 / skew)`-th task costs 20x the others.
pub fn make_task(config: &Config, index: usize) -> Task {
    let period = (1.0 / config.skew).round().max(1.0) as usize;
    let heavy = config.skew > 0.0 && index.is_multiple_of(period);
    let us = if heavy {
        config.task_us * 20
    } else {
        config.task_us
    };
    Task {
        index,
        cost: Duration::from_micros(us),
        fails: config.fail_at.contains(&index),
    }
}

/// Do the task: wait or compute for its cost, then answer. The answer is a
/// function of the index, so a test can check every result.
pub fn run_task(task: &Task, work: Work, pacer: &mut Pacer) -> Result<u64, String> {
    match work {
        Work::Wait => pacer.wait(task.cost),
        Work::Cpu => busy_for(task.cost),
    }
    if task.fails {
        return Err(format!("task {} failed", task.index));
    }
    Ok(answer(task.index))
}

/// The correct answer for task `index` (a SplitMix64 step).
pub fn answer(index: usize) -> u64 {
    let mut z = (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keep this worker's CPU busy for `cost`.
fn busy_for(cost: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < cost {
        for i in 0..64 {
            x = std::hint::black_box(x.wrapping_add(answer(i)));
        }
    }
}
// ANCHOR_END: task

// ANCHOR: outcome
/// What a worker reports for one task. Every dispatched task produces exactly
/// one, through one channel: the collector never has to merge channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub index: usize,
    pub worker: usize,
    pub result: TaskResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult {
    Ok(u64),
    Failed(String),
    /// Not run: the batch was cancelled (fail-fast) while it was queued.
    Skipped,
}
// ANCHOR_END: outcome

/// What the run did, for people (`Display`) and machines (`--json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub tasks: usize,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_dispatched: usize,
    pub first_error: Option<String>,
    pub strategy: Strategy,
    pub ordered: bool,
    /// Tasks each worker ran (skips not counted), by worker id.
    pub per_worker: Vec<usize>,
    pub workers_started: usize,
    pub peak_workers: usize,
    /// The fewest workers alive at once after the pool first filled.
    pub low_workers: usize,
    /// Workers that retired after being idle (dynamic pool only).
    pub retired: usize,
    /// Most results the reorder buffer held at once (0 unless ordered).
    pub reorder_high_water: usize,
    /// Coroutines of this run still running when `run` returned: always 0.
    pub coroutines_left: usize,
    pub elapsed_ms: f64,
    pub tasks_per_sec: f64,
}

// ANCHOR: live
/// Counts the coroutines of one run. The count goes up when one is spawned
/// (not when it starts, so one that never ran still counts) and down when
/// its closure returns: after `run` has joined them all it must be zero.
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct LiveGuard(Arc<AtomicUsize>);

impl Live {
    fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(self.0.clone());
        go!(move || {
            let _guard = guard;
            f()
        })
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
// ANCHOR_END: live

/// What every worker shares.
#[derive(Clone)]
struct Shared {
    work: Work,
    /// Set by the collector at the first failure in fail-fast mode.
    cancelled: Arc<AtomicBool>,
    live: Live,
}

// ANCHOR: worker
/// Take tasks until the queue ends (or, in a dynamic pool, until idle for
/// `retire.idle` while more than `retire.min` workers are alive); send one
/// outcome per task.
fn worker(
    id: usize,
    queue: Receiver<Task>,
    results: Sender<Outcome>,
    shared: Shared,
    outstanding: Option<Arc<AtomicUsize>>,
    retire: Option<Retire>,
) {
    let mut pacer = Pacer::new();
    loop {
        let task = match &retire {
            None => match queue.recv() {
                Ok(task) => task,
                Err(_) => return, // the distributor is done and the queue is empty
            },
            Some(retire) => match queue.recv_timeout(retire.idle) {
                Ok(task) => task,
                Err(RecvTimeoutError::Timeout) if retire.try_retire() => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    retire.alive.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            },
        };
        let result = if shared.cancelled.load(Ordering::SeqCst) {
            TaskResult::Skipped
        } else {
            match run_task(&task, shared.work, &mut pacer) {
                Ok(value) => TaskResult::Ok(value),
                Err(e) => TaskResult::Failed(e),
            }
        };
        if let Some(outstanding) = &outstanding {
            outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        let outcome = Outcome {
            index: task.index,
            worker: id,
            result,
        };
        if results.send(outcome).is_err() {
            return; // the collector is gone: nobody wants the rest
        }
    }
}
// ANCHOR_END: worker

// ANCHOR: retire
/// A dynamic pool's bookkeeping: how many workers are alive, and the floor.
#[derive(Clone)]
struct Retire {
    idle: Duration,
    min: usize,
    alive: Arc<AtomicUsize>,
    low: Arc<AtomicUsize>,
    retired: Arc<AtomicUsize>,
}

impl Retire {
    /// Leave the pool if that keeps it at `min` or above. Only workers
    /// decrement and only the supervisor increments, so a compare-and-swap
    /// keeps the count within its bounds without a lock.
    fn try_retire(&self) -> bool {
        let mut alive = self.alive.load(Ordering::SeqCst);
        while alive > self.min {
            match self
                .alive
                .compare_exchange(alive, alive - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.low.fetch_min(alive - 1, Ordering::SeqCst);
                    self.retired.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                Err(now) => alive = now,
            }
        }
        false
    }
}
// ANCHOR_END: retire

// ANCHOR: distributor
/// Where the distributor sends tasks.
enum Targets {
    Shared(Sender<Task>),
    PerWorker {
        queues: Vec<Sender<Task>>,
        /// Tasks queued or running per worker (least-loaded only).
        outstanding: Option<Vec<Arc<AtomicUsize>>>,
    },
}

/// Make and dispatch the tasks; returns how many were dispatched. With a
/// reorder window, take one permit per task: the collector gives it back
/// when it emits a result, so at most `window` results wait to be reordered.
fn distribute(
    config: &Config,
    targets: Targets,
    window: Option<Arc<Semphore>>,
    shared: &Shared,
) -> usize {
    for index in 0..config.tasks {
        if let Some((size, gap)) = config.burst {
            if index > 0 && index.is_multiple_of(size) {
                may::coroutine::sleep(gap); // the next burst has not arrived yet
            }
        }
        if let Some(window) = &window {
            window.wait();
        }
        if shared.cancelled.load(Ordering::SeqCst) {
            return index;
        }
        let task = make_task(config, index);
        let sent = match &targets {
            Targets::Shared(queue) => queue.send(task).is_ok(),
            Targets::PerWorker {
                queues,
                outstanding,
            } => {
                let w = match outstanding {
                    None => index % queues.len(),
                    Some(counts) => least_loaded(counts),
                };
                if let Some(counts) = outstanding {
                    counts[w].fetch_add(1, Ordering::SeqCst);
                }
                queues[w].send(task).is_ok()
            }
        };
        if !sent {
            return index; // every worker is gone
        }
    }
    config.tasks
}

/// The worker with the fewest tasks queued or running (the first on a tie).
fn least_loaded(counts: &[Arc<AtomicUsize>]) -> usize {
    (0..counts.len())
        .min_by_key(|&w| counts[w].load(Ordering::SeqCst))
        .expect("at least one worker")
}
// ANCHOR_END: distributor

// ANCHOR: supervisor
/// Grow a dynamic pool while the shared queue is longer than `scale_up_at`;
/// stop when the distributor is done. Returns every worker it started, to
/// be joined.
fn supervise(
    queue: Receiver<Task>,
    results: Sender<Outcome>,
    shared: Shared,
    retire: Retire,
    limits: Scaling,
    distributed: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    let start = |workers: &mut Vec<JoinHandle<()>>| {
        let alive = retire.alive.fetch_add(1, Ordering::SeqCst) + 1;
        limits.peak.fetch_max(alive, Ordering::SeqCst);
        let id = workers.len();
        let (q, r, s, re) = (
            queue.clone(),
            results.clone(),
            shared.clone(),
            retire.clone(),
        );
        workers.push(
            shared
                .live
                .spawn(move || worker(id, q, r, s, None, Some(re))),
        );
    };
    for _ in 0..retire.min {
        start(&mut workers);
    }
    // Only this loop adds workers, so `alive < max` cannot be raced past max.
    while !distributed.load(Ordering::SeqCst) {
        let alive = retire.alive.load(Ordering::SeqCst);
        if queue.len() > limits.scale_up_at && alive < limits.max {
            start(&mut workers);
        } else {
            may::coroutine::sleep(Duration::from_millis(1));
        }
    }
    workers
}

/// When a dynamic pool grows, how far, and the biggest it got.
struct Scaling {
    max: usize,
    scale_up_at: usize,
    peak: Arc<AtomicUsize>,
}
// ANCHOR_END: supervisor

// ANCHOR: run
/// Run the batch. `on_result` sees every outcome once, in the order the
/// collector emits them (input order when `config.ordered`).
pub fn run(config: &Config, mut on_result: impl FnMut(&Outcome)) -> Report {
    let started = Instant::now();
    let live = Live::default();
    let shared = Shared {
        work: config.work,
        cancelled: Arc::new(AtomicBool::new(false)),
        live: live.clone(),
    };
    let (results_tx, results) = bounded::channel::<Outcome>(config.queue);
    let window = config
        .ordered
        .then(|| Arc::new(Semphore::new(config.window)));
    let pool = start_pool(config, &shared, results_tx, window.clone());

    let mut collector = Collector::new(config);
    for outcome in results.iter() {
        if config.fail_fast && matches!(outcome.result, TaskResult::Failed(_)) {
            shared.cancelled.store(true, Ordering::SeqCst);
        }
        collector.take(outcome, window.as_deref(), &mut on_result);
    }
    // Every worker has dropped its result sender: join them all.
    let dispatched = pool
        .distributor
        .join()
        .expect("the distributor does not panic");
    let mut workers_started = 0;
    for w in pool.workers {
        w.join().expect("a worker does not panic");
        workers_started += 1;
    }
    if let Some(s) = pool.supervisor {
        for w in s.join().expect("the supervisor does not panic") {
            w.join().expect("a worker does not panic");
            workers_started += 1;
        }
    }
    let elapsed = started.elapsed();
    collector.report(
        config,
        dispatched,
        workers_started,
        &pool.sizes,
        live.count(),
        elapsed,
    )
}
// ANCHOR_END: run

/// The coroutines of a run, to be joined.
struct Running {
    distributor: JoinHandle<usize>,
    workers: Vec<JoinHandle<()>>,
    supervisor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
    sizes: PoolSizes,
}

/// Peak and low worker counts (a fixed pool: both its size); `low` stays
/// `usize::MAX` until a worker retires.
struct PoolSizes {
    peak: Arc<AtomicUsize>,
    low: Arc<AtomicUsize>,
    retired: Arc<AtomicUsize>,
}

// ANCHOR: start_pool
fn start_pool(
    config: &Config,
    shared: &Shared,
    results: Sender<Outcome>,
    window: Option<Arc<Semphore>>,
) -> Running {
    let spawn_distributor = |targets: Targets| {
        let (config, s, window) = (config.clone(), shared.clone(), window.clone());
        shared
            .live
            .spawn(move || distribute(&config, targets, window, &s))
    };
    match config.pool {
        Pool::Fixed(n) => {
            let sizes = PoolSizes {
                peak: Arc::new(AtomicUsize::new(n)),
                low: Arc::new(AtomicUsize::new(usize::MAX)),
                retired: Arc::new(AtomicUsize::new(0)),
            };
            let mut workers = Vec::new();
            let targets = if config.strategy == Strategy::Shared {
                let (tx, rx) = bounded::channel(config.queue);
                for id in 0..n {
                    let (q, r, s) = (rx.clone(), results.clone(), shared.clone());
                    workers.push(shared.live.spawn(move || worker(id, q, r, s, None, None)));
                }
                Targets::Shared(tx)
            } else {
                let counts: Vec<_> = (0..n).map(|_| Arc::new(AtomicUsize::new(0))).collect();
                let mut queues = Vec::new();
                let least_loaded = config.strategy == Strategy::LeastLoaded;
                for (id, count) in counts.iter().enumerate() {
                    let (tx, rx) = bounded::channel(config.queue);
                    queues.push(tx);
                    let load = least_loaded.then(|| count.clone());
                    let (r, s) = (results.clone(), shared.clone());
                    workers.push(shared.live.spawn(move || worker(id, rx, r, s, load, None)));
                }
                let outstanding = least_loaded.then_some(counts);
                Targets::PerWorker {
                    queues,
                    outstanding,
                }
            };
            Running {
                distributor: spawn_distributor(targets),
                workers,
                supervisor: None,
                sizes,
            }
        }
        Pool::Dynamic { min, max } => {
            let (tx, rx) = bounded::channel(config.queue);
            let retire = Retire {
                idle: config.idle,
                min,
                alive: Arc::new(AtomicUsize::new(0)),
                low: Arc::new(AtomicUsize::new(usize::MAX)),
                retired: Arc::new(AtomicUsize::new(0)),
            };
            let peak = Arc::new(AtomicUsize::new(0));
            let distributed = Arc::new(AtomicBool::new(false));
            let limits = Scaling {
                max,
                scale_up_at: config.scale_up_at,
                peak: peak.clone(),
            };
            let supervisor = {
                let (s, retire, done) = (shared.clone(), retire.clone(), distributed.clone());
                shared
                    .live
                    .spawn(move || supervise(rx, results, s, retire, limits, done))
            };
            let distributor = {
                let (config, s, window) = (config.clone(), shared.clone(), window.clone());
                shared.live.spawn(move || {
                    let n = distribute(&config, Targets::Shared(tx), window, &s);
                    distributed.store(true, Ordering::SeqCst);
                    n
                })
            };
            Running {
                distributor,
                workers: Vec::new(),
                supervisor: Some(supervisor),
                sizes: PoolSizes {
                    peak,
                    low: retire.low,
                    retired: retire.retired,
                },
            }
        }
    }
}
// ANCHOR_END: start_pool

// ANCHOR: collector
/// Counts outcomes and, when ordered, holds early ones until their turn.
struct Collector {
    ordered: bool,
    next: usize,
    waiting: BTreeMap<usize, Outcome>,
    high_water: usize,
    ok: usize,
    failed: usize,
    skipped: usize,
    first_error: Option<String>,
    per_worker: Vec<usize>,
}

impl Collector {
    fn new(config: &Config) -> Collector {
        Collector {
            ordered: config.ordered,
            next: 0,
            waiting: BTreeMap::new(),
            high_water: 0,
            ok: 0,
            failed: 0,
            skipped: 0,
            first_error: None,
            per_worker: Vec::new(),
        }
    }

    fn take(
        &mut self,
        outcome: Outcome,
        window: Option<&Semphore>,
        emit: &mut impl FnMut(&Outcome),
    ) {
        if !self.ordered {
            return self.emit(outcome, emit);
        }
        self.waiting.insert(outcome.index, outcome);
        self.high_water = self.high_water.max(self.waiting.len());
        while let Some(ready) = self.waiting.remove(&self.next) {
            self.next += 1;
            self.emit(ready, emit);
            if let Some(window) = window {
                window.post(); // one more task may be dispatched
            }
        }
    }

    fn emit(&mut self, outcome: Outcome, emit: &mut impl FnMut(&Outcome)) {
        match &outcome.result {
            TaskResult::Ok(_) => self.ok += 1,
            TaskResult::Failed(e) => {
                self.failed += 1;
                self.first_error.get_or_insert_with(|| e.clone());
            }
            TaskResult::Skipped => self.skipped += 1,
        }
        if !matches!(outcome.result, TaskResult::Skipped) {
            if self.per_worker.len() <= outcome.worker {
                self.per_worker.resize(outcome.worker + 1, 0);
            }
            self.per_worker[outcome.worker] += 1;
        }
        emit(&outcome);
    }
    // ANCHOR_END: collector

    fn report(
        self,
        config: &Config,
        dispatched: usize,
        workers_started: usize,
        sizes: &PoolSizes,
        coroutines_left: usize,
        elapsed: Duration,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut per_worker = self.per_worker;
        per_worker.resize(workers_started.max(per_worker.len()), 0);
        Report {
            tasks: config.tasks,
            ok: self.ok,
            failed: self.failed,
            skipped: self.skipped,
            not_dispatched: config.tasks - dispatched,
            first_error: self.first_error,
            strategy: config.strategy,
            ordered: config.ordered,
            per_worker,
            workers_started,
            peak_workers: sizes.peak.load(Ordering::SeqCst),
            low_workers: match sizes.low.load(Ordering::SeqCst) {
                usize::MAX => sizes.peak.load(Ordering::SeqCst),
                low => low,
            },
            retired: sizes.retired.load(Ordering::SeqCst),
            reorder_high_water: self.high_water,
            coroutines_left,
            elapsed_ms: secs * 1000.0,
            tasks_per_sec: (self.ok + self.failed) as f64 / secs,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} tasks: {} ok, {} failed, {} skipped, {} not dispatched",
            self.tasks, self.ok, self.failed, self.skipped, self.not_dispatched
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first error: {e}")?;
        }
        writeln!(
            f,
            "strategy {}, {}; workers: ~{} started, peak ~{}, low ~{}, ~{} retired idle",
            self.strategy
                .to_possible_value()
                .expect("no variant is skipped")
                .get_name(),
            if self.ordered {
                "input order"
            } else {
                "as completed"
            },
            self.workers_started,
            self.peak_workers,
            self.low_workers,
            self.retired
        )?;
        let least = self.per_worker.iter().min().unwrap_or(&0);
        let most = self.per_worker.iter().max().unwrap_or(&0);
        writeln!(f, "tasks per worker: ~{least} to ~{most}")?;
        if self.ordered {
            writeln!(f, "reorder buffer high water: ~{}", self.reorder_high_water)?;
        }
        write!(
            f,
            "took {:.1}ms, ~{:.0} tasks/s",
            self.elapsed_ms, self.tasks_per_sec
        )
    }
}

// ANCHOR: main
impl Args {
    fn config(&self) -> Config {
        let pool = match (self.workers, self.min_workers, self.max_workers) {
            (_, Some(min), Some(max)) => Pool::Dynamic { min, max },
            (_, None, Some(max)) => Pool::Dynamic { min: 1, max },
            (workers, _, _) => Pool::Fixed(workers.unwrap_or(8)),
        };
        Config {
            tasks: self.tasks,
            pool,
            strategy: self.strategy,
            ordered: self.ordered,
            window: self.window,
            fail_fast: self.fail_fast,
            fail_at: self.fail_at.clone(),
            task_us: self.task_us,
            skew: self.skew,
            work: self.work,
            queue: self.queue,
            scale_up_at: self.scale_up_at,
            idle: self.idle,
            burst: self.burst.zip(self.gap),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = args.config();
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let report = run(&config, |o| {
        if args.print {
            println!("{} {} {:?}", o.index, o.worker, o.result);
        }
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
    } else {
        println!("{report}");
    }
    if report.failed > 0 {
        eprintln!("error: {} task(s) failed", report.failed);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn collect(config: &Config) -> (Report, Vec<Outcome>) {
        configure_for_tests();
        config.validate().unwrap();
        let mut seen = Vec::new();
        let report = run(config, |o| seen.push(o.clone()));
        assert_eq!(report.coroutines_left, 0, "a coroutine outlived the run");
        (report, seen)
    }

    /// Every index 0..tasks exactly once, each with its correct answer.
    fn assert_exactly_once(seen: &[Outcome], tasks: usize) {
        let mut indices: Vec<usize> = seen.iter().map(|o| o.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..tasks).collect::<Vec<_>>());
        for o in seen {
            if let TaskResult::Ok(v) = o.result {
                assert_eq!(v, answer(o.index));
            }
        }
    }

    #[test]
    fn every_strategy_delivers_every_result_exactly_once() {
        for strategy in [
            Strategy::Shared,
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
        ] {
            let mut config = Config::new(300, 4, 100);
            config.strategy = strategy;
            config.queue = 4;
            let (report, seen) = collect(&config);
            assert_exactly_once(&seen, 300);
            assert_eq!(report.ok, 300, "{strategy:?}");
            assert_eq!(report.per_worker.iter().sum::<usize>(), 300);
            assert_eq!(report.per_worker.len(), 4);
        }
    }

    #[test]
    fn round_robin_gives_each_worker_every_nth_task() {
        let mut config = Config::new(40, 4, 10);
        config.strategy = Strategy::RoundRobin;
        let (_, seen) = collect(&config);
        assert!(seen.iter().all(|o| o.worker == o.index % 4));
    }

    #[test]
    fn ordered_mode_emits_in_input_order_within_the_window() {
        let mut config = Config::new(200, 8, 200);
        config.ordered = true;
        config.window = 16;
        config.skew = 0.1; // every 10th task is slow: later ones finish first
        let (report, seen) = collect(&config);
        let indices: Vec<usize> = seen.iter().map(|o| o.index).collect();
        assert_eq!(indices, (0..200).collect::<Vec<_>>());
        assert!(report.reorder_high_water <= 16, "{report:?}");
        assert!(report.reorder_high_water > 1, "slow tasks make others wait");
    }

    #[test]
    fn collect_mode_runs_everything_and_reports_each_failure() {
        let mut config = Config::new(100, 4, 10);
        config.fail_at = vec![3, 50, 99];
        let (report, seen) = collect(&config);
        assert_exactly_once(&seen, 100);
        assert_eq!((report.ok, report.failed, report.skipped), (97, 3, 0));
        let failed: Vec<usize> = seen
            .iter()
            .filter(|o| matches!(o.result, TaskResult::Failed(_)))
            .map(|o| o.index)
            .collect();
        assert_eq!(failed.len(), 3);
        assert!([3, 50, 99].iter().all(|i| failed.contains(i)));
    }

    #[test]
    fn fail_fast_stops_dispatching_and_skips_what_was_queued() {
        for strategy in [Strategy::Shared, Strategy::RoundRobin] {
            let mut config = Config::new(2000, 4, 200);
            config.strategy = strategy;
            config.fail_at = vec![10];
            config.fail_fast = true;
            config.queue = 8;
            let (report, seen) = collect(&config);
            assert_eq!(report.failed, 1);
            let ran = report.ok + report.failed;
            assert!(
                ran < 200,
                "{strategy:?}: {ran} tasks ran after an early failure"
            );
            assert_eq!(
                seen.len(),
                ran + report.skipped,
                "one outcome per dispatched task"
            );
            assert_eq!(ran + report.skipped + report.not_dispatched, 2000);
            assert!(report.not_dispatched > 1000, "{report:?}");
        }
    }

    #[test]
    fn fail_fast_in_order_still_ends_and_emits_a_prefix() {
        let mut config = Config::new(1000, 4, 100);
        config.ordered = true;
        config.window = 8;
        config.fail_at = vec![20];
        config.fail_fast = true;
        let (report, seen) = collect(&config);
        let indices: Vec<usize> = seen.iter().map(|o| o.index).collect();
        assert_eq!(indices, (0..seen.len()).collect::<Vec<_>>());
        assert!(report.not_dispatched > 900, "{report:?}");
    }

    #[test]
    fn a_dynamic_pool_grows_to_its_max_under_a_long_queue() {
        let mut config = Config::new(400, 1, 2000);
        config.pool = Pool::Dynamic { min: 2, max: 6 };
        config.scale_up_at = 4;
        let (report, seen) = collect(&config);
        assert_exactly_once(&seen, 400);
        assert_eq!(report.peak_workers, 6, "{report:?}");
        assert_eq!(report.per_worker.len(), report.workers_started);
    }

    #[test]
    fn a_dynamic_pool_shrinks_between_bursts_but_never_below_min() {
        let mut config = Config::new(300, 1, 1000);
        config.pool = Pool::Dynamic { min: 2, max: 8 };
        config.scale_up_at = 4;
        config.idle = Duration::from_millis(5);
        config.burst = Some((100, Duration::from_millis(60)));
        let (report, seen) = collect(&config);
        assert_exactly_once(&seen, 300);
        assert_eq!(report.peak_workers, 8, "{report:?}");
        assert!(
            report.retired > 0,
            "idle workers retire in the gaps: {report:?}"
        );
        assert!(
            report.low_workers >= 2 && report.low_workers < 8,
            "{report:?}"
        );
        assert!(
            report.workers_started > 8,
            "the pool grew again: {report:?}"
        );
    }

    #[test]
    fn a_dynamic_pool_with_a_short_queue_stays_small() {
        let mut config = Config::new(50, 1, 500);
        config.pool = Pool::Dynamic { min: 1, max: 8 };
        config.scale_up_at = 1000; // never reached: the queue holds 64
        let (report, _) = collect(&config);
        assert_eq!((report.peak_workers, report.workers_started), (1, 1));
    }

    #[test]
    fn workers_retire_after_idle_down_to_the_floor() {
        let retire = Retire {
            idle: Duration::from_millis(1),
            min: 2,
            alive: Arc::new(AtomicUsize::new(4)),
            low: Arc::new(AtomicUsize::new(usize::MAX)),
            retired: Arc::new(AtomicUsize::new(0)),
        };
        assert!(retire.try_retire());
        assert!(retire.try_retire());
        assert!(!retire.try_retire(), "never below min");
        assert_eq!(retire.alive.load(Ordering::SeqCst), 2);
        assert_eq!(retire.low.load(Ordering::SeqCst), 2);
        assert_eq!(retire.retired.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_skew_makes_every_nth_task_heavy() {
        let mut config = Config::new(20, 4, 100);
        config.skew = 0.25;
        let heavy: Vec<usize> = (0..20)
            .filter(|&i| make_task(&config, i).cost == Duration::from_micros(2000))
            .collect();
        assert_eq!(heavy, vec![0, 4, 8, 12, 16]);
    }

    #[test]
    fn bad_combinations_are_refused_with_a_reason() {
        let mut config = Config::new(10, 0, 10);
        assert!(config.validate().unwrap_err().contains("--workers"));
        config.pool = Pool::Dynamic { min: 5, max: 2 };
        assert!(config.validate().unwrap_err().contains("--min-workers"));
        config.pool = Pool::Dynamic { min: 1, max: 2 };
        config.strategy = Strategy::RoundRobin;
        assert!(config.validate().unwrap_err().contains("--strategy shared"));
        config = Config::new(10, 2, 10);
        config.fail_at = vec![10];
        assert!(config.validate().unwrap_err().contains("--fail-at 10"));
    }
}
