//! The finished pipeline against its own sequential baseline
//! (`run_sequential`: the same stages in one loop), on the same generated
//! input, for two stage mixes: a CPU-heavy transform (hash rounds per
//! record) and an I/O-bound one (a simulated 1 ms lookup per record, which
//! parks the coroutine). The code measured is the chapter's listing itself,
//! included as a module.
//!
//! `cargo bench --bench pipeline_data_processing` runs it and rewrites the
//! chapter's table, `book/pipeline_data_processing/benchmarks.md`.

mod support;

#[allow(dead_code)] // the listing's `main` and CLI are not used here
#[path = "../listings/pipeline_data_processing/pipeline_data_processing.rs"]
mod pipeline;

#[allow(dead_code)]
#[path = "../listings/pipeline_data_processing/generate_orders.rs"]
mod generate;

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use may_patterns::shutdown::Shutdown;
use pipeline::{Config, Costs, Format, Input, Output};
use support::{Ratio, Row, Table};

/// Records per run and simulated costs, per mix. The row labels below
/// restate them: change them together.
const CPU_ROWS: u64 = 4_000;
const CPU_HASH_ROUNDS: u32 = 50_000;
const CPU_WORKERS: usize = 2;
const IO_ROWS: u64 = 500;
const IO_LOOKUP: Duration = Duration::from_millis(1);
const IO_WORKERS: usize = 32;

fn config(input: &Path, dir: &Path, workers: usize, costs: Costs) -> Config {
    Config {
        input: Input::File(input.to_path_buf()),
        format: Format::Csv,
        output: Output::Csv(dir.join("clean.csv")),
        rejects: dir.join("rejects.csv"),
        buffer: 64,
        workers_per_stage: workers,
        max_line_bytes: 64 * 1024,
        idle_timeout: Duration::from_secs(10),
        costs,
    }
}

/// One table row: sequential, the chain with one worker per stage, and the
/// chain with `workers` per stage.
fn compare(c: &mut Criterion, group: &str, rows: u64, workers: usize, costs: Costs) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    generate::write_orders(&mut file, rows, 50, generate::Kind::Csv, 42).unwrap();
    drop(file);
    let (input, out) = (input.as_path(), dir.path());
    let check = |summary: pipeline::Summary| assert!(summary.conserved && summary.read == rows);

    let mut group = c.benchmark_group(group);
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("sequential", |b| {
        b.iter(|| {
            check(pipeline::run_sequential(config(input, out, 1, costs), &Shutdown::new()).unwrap())
        })
    });
    group.bench_function("chain_1", |b| {
        b.iter(|| check(pipeline::run(config(input, out, 1, costs), &Shutdown::new()).unwrap()))
    });
    group.bench_function("chain_many", |b| {
        b.iter(|| {
            check(pipeline::run(config(input, out, workers, costs), &Shutdown::new()).unwrap())
        })
    });
    group.finish();
}

fn main() {
    support::configure_may();
    let mut c = support::criterion();
    let cpu = Costs {
        hash_rounds: CPU_HASH_ROUNDS,
        lookup: Duration::ZERO,
    };
    compare(&mut c, "pipeline_cpu", CPU_ROWS, CPU_WORKERS, cpu);
    let io = Costs {
        hash_rounds: 0,
        lookup: IO_LOOKUP,
    };
    compare(&mut c, "pipeline_io", IO_ROWS, IO_WORKERS, io);
    c.final_summary();
    support::write_table_columns(
        &Table {
            chapter: "pipeline_data_processing",
            note: "Each cell is one whole run of the chapter's program on a generated CSV file \
                   (every 50th record bad): read, parse, transform, validate, write a CSV file \
                   and a reject file, rename both into place. `sequential` is `run_sequential`, \
                   every stage in one loop on one thread; `chain` is `run`, one coroutine per \
                   middle stage (file reader and writer on their own threads), queues of 64, \
                   2 may workers; `chain, N per stage` gives parse, transform and validate N \
                   coroutines each. A ratio above 1 is the chain's speed-up.",
            columns: &[
                ("sequential", "sequential"),
                ("chain", "chain_1"),
                ("chain, N per stage", "chain_many"),
            ],
            ratio: Ratio::FirstOverColumn,
            items_per_iteration: 1,
        },
        &[
            Row {
                what: "CPU-heavy: 4,000 records, 50,000 hash rounds each in transform; N = 2",
                group: "pipeline_cpu",
            },
            Row {
                what: "I/O-bound: 500 records, a 1 ms lookup each in transform; N = 32",
                group: "pipeline_io",
            },
        ],
    );
}
