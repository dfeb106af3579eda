//! Fan-out / fan-in against doing the tasks one after another.
//!
//! 1. Latency-bound tasks (each waits 1 ms, like a remote call): sequential
//!    vs the finished program's `run` with 2, 8 and 32 workers.
//! 2. CPU-bound tasks (each computes for 500 µs): sequential vs 2 worker
//!    coroutines on may's 2 threads vs 2 OS threads sharing a crossbeam
//!    queue, what a program without may would do.
//! 3. The three distribution strategies with 4 workers, on a skewed batch
//!    (every 4th task 20x dearer) and on a uniform one.
//!
//! `cargo bench --bench fan_out_fan_in` runs them and rewrites
//! `book/fan_out_fan_in/benchmarks.md`, `cpu.md` and `strategies.md`.

mod support;

// The program's `main`, CLI and tests (their imports) are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/fan_out_fan_in/fan_out_fan_in.rs"]
mod fan;

use criterion::{Criterion, SamplingMode};
use fan::{make_task, run, run_task, Config, Strategy, Work};
use may_patterns::pace::Pacer;
use support::{Ratio, Row, Table};

/// Tasks per batch and their costs. The table notes restate them: change
/// them together.
const TASKS: usize = 200;
const WAIT_US: u64 = 1000;
const CPU_US: u64 = 500;
const SKEW_US: u64 = 500;

/// The batch one task after another on this thread.
fn sequential(config: &Config) -> u64 {
    let mut pacer = Pacer::new();
    (0..config.tasks)
        .map(|i| run_task(&make_task(config, i), config.work, &mut pacer).unwrap())
        .fold(0, u64::wrapping_add)
}

/// The batch on `threads` OS threads taking tasks from one crossbeam queue.
fn on_threads(config: &Config, threads: usize) -> u64 {
    let (tx, rx) = crossbeam_channel::bounded(config.queue);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || {
                    let mut pacer = Pacer::new();
                    rx.iter()
                        .map(|task| run_task(&task, config.work, &mut pacer).unwrap())
                        .fold(0, u64::wrapping_add)
                })
            })
            .collect();
        for i in 0..config.tasks {
            tx.send(make_task(config, i)).unwrap();
        }
        drop(tx);
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold(0, u64::wrapping_add)
    })
}

fn fanned(config: &Config) {
    let report = run(config, |_| {});
    assert_eq!(report.ok, config.tasks);
}

fn latency_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_wait");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let config = Config::new(TASKS, 1, WAIT_US);
    group.bench_function("sequential", |b| b.iter(|| sequential(&config)));
    for workers in [2, 8, 32] {
        let config = Config::new(TASKS, workers, WAIT_US);
        group.bench_function(format!("workers_{workers}"), |b| b.iter(|| fanned(&config)));
    }
    group.finish();
}

fn cpu_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_cpu");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut config = Config::new(TASKS, 2, CPU_US);
    config.work = Work::Cpu;
    group.bench_function("sequential", |b| b.iter(|| sequential(&config)));
    group.bench_function("coroutines", |b| b.iter(|| fanned(&config)));
    group.bench_function("threads", |b| b.iter(|| on_threads(&config, 2)));
    group.finish();
}

fn strategies(c: &mut Criterion, group: &str, skew: f64) {
    let mut group = c.benchmark_group(group);
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (id, strategy) in [
        ("shared", Strategy::Shared),
        ("round_robin", Strategy::RoundRobin),
        ("least_loaded", Strategy::LeastLoaded),
    ] {
        let mut config = Config::new(TASKS, 4, SKEW_US);
        config.strategy = strategy;
        config.skew = skew;
        config.queue = 8;
        group.bench_function(id, |b| b.iter(|| fanned(&config)));
    }
    group.finish();
}

fn main() {
    support::configure_may();
    let mut c = support::criterion();
    latency_bound(&mut c);
    cpu_bound(&mut c);
    strategies(&mut c, "strategy_skewed", 0.25);
    strategies(&mut c, "strategy_uniform", 0.0);
    c.final_summary();

    support::write_table_columns(
        &Table {
            chapter: "fan_out_fan_in",
            note: "Each cell is one batch of 200 latency-bound tasks (each waits 1 ms, like a \
                   remote call): `sequential` runs them one after another on one thread; \
                   `N workers` is the chapter's program (`run`, shared queue of 64, 2 may \
                   threads). A ratio above 1 is the speed-up over sequential.",
            columns: &[
                ("sequential", "sequential"),
                ("2 workers", "workers_2"),
                ("8 workers", "workers_8"),
                ("32 workers", "workers_32"),
            ],
            ratio: Ratio::FirstOverColumn,
            items_per_iteration: 1,
        },
        &[Row {
            what: "200 tasks, 1 ms wait each",
            group: "fan_out_wait",
        }],
    );
    support::write_table_file(
        &Table {
            chapter: "fan_out_fan_in",
            note: "Each cell is one batch of 200 CPU-bound tasks (each computes for 500 µs): \
                   `sequential` on one thread; `coroutines` is the chapter's program with 2 \
                   workers on may's 2 threads; `threads` is 2 OS threads taking tasks from one \
                   crossbeam channel. A ratio above 1 is the speed-up over sequential.",
            columns: &[
                ("sequential", "sequential"),
                ("coroutines", "coroutines"),
                ("threads", "threads"),
            ],
            ratio: Ratio::FirstOverColumn,
            items_per_iteration: 1,
        },
        &[Row {
            what: "200 tasks, 500 µs of CPU each",
            group: "fan_out_cpu",
        }],
        "cpu.md",
    );
    support::write_table_file(
        &Table {
            chapter: "fan_out_fan_in",
            note: "Each cell is one batch of 200 latency-bound tasks of 500 µs on 4 workers \
                   (queues of 8), handed out by each strategy. Skewed: every 4th task waits \
                   20x as long (10 ms). A ratio above 1 is how many times longer than the \
                   shared queue the strategy took.",
            columns: &[
                ("shared", "shared"),
                ("round-robin", "round_robin"),
                ("least-loaded", "least_loaded"),
            ],
            ratio: Ratio::ColumnOverFirst,
            items_per_iteration: 1,
        },
        &[
            Row {
                what: "skewed: every 4th task 20x",
                group: "strategy_skewed",
            },
            Row {
                what: "uniform: every task the same",
                group: "strategy_uniform",
            },
        ],
        "strategies.md",
    );
}
