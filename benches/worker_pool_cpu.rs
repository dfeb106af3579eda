//! The worker-pool chapter's CPU numbers: the recursive job, a quicksort of
//! 1,000,000 numbers from a fixed seed, sequentially, on rayon's pool
//! (`rayon::join`) and on our `ForkJoinPool` under each scheduling, two
//! threads each, at two cutoffs. All four run the library's one
//! `fork_join::quicksort` on the same input; only the `Fork` differs.
//!
//! Criterion's medians, plus each pool's steals in one sort, go to
//! `book/worker_pool/rayon.md` with the target (Stealing within
//! 1.2x of rayon on 2 cores) marked per row. `cargo bench --bench
//! worker_pool_cpu` rewrites it (under a minute).

mod support;

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode};
use may_patterns::pool::fork_join::{quicksort, Fork, Sequential};
use may_patterns::pool::{ForkJoinPool, Scheduling};
use support::Cell;

const CHAPTER: &str = "worker_pool";
const BENCH: &str = "worker_pool_cpu";
const ITEMS: usize = 1_000_000;
const THREADS: usize = 2;
/// The target: our stealing pool within this factor of rayon.
const TARGET: f64 = 1.2;

/// `rayon::join` as a [`Fork`], so rayon runs the very same quicksort.
struct Rayon;

impl Fork for Rayon {
    fn fork<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce(&Self) -> RA + Send,
        B: FnOnce(&Self) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        rayon::join(|| a(&Rayon), || b(&Rayon))
    }
}

fn numbers() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(13);
    (0..ITEMS).map(|_| rng.u64(..)).collect()
}

struct Pools {
    rayon: rayon::ThreadPool,
    stealing: ForkJoinPool,
    shared: ForkJoinPool,
}

/// One group per cutoff; the input is copied outside the timed part.
fn bench_cutoff(c: &mut Criterion, pools: &Pools, input: &[u64], cutoff: usize) {
    let mut group = c.benchmark_group(group_name(cutoff));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let copy = || input.to_vec();
    group.bench_function("rayon", |b| {
        b.iter_batched(
            copy,
            |mut v| pools.rayon.install(|| quicksort(&Rayon, &mut v, cutoff)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("sequential", |b| {
        b.iter_batched(
            copy,
            |mut v| quicksort(&Sequential, &mut v, cutoff),
            BatchSize::LargeInput,
        )
    });
    for (id, pool) in [
        ("stealing", &pools.stealing),
        ("shared_queue", &pools.shared),
    ] {
        group.bench_function(id, |b| {
            b.iter_batched(
                copy,
                |mut v| pool.install(|worker| quicksort(worker, &mut v, cutoff)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn group_name(cutoff: usize) -> String {
    format!("{BENCH}_cutoff_{cutoff}")
}

/// Joins and steals of one sort on a new pool (the counters are the pool's
/// whole life, so the bench's pools would sum every iteration).
fn one_sort(scheduling: Scheduling, input: &[u64], cutoff: usize) -> (u64, u64) {
    let pool = ForkJoinPool::new(THREADS, scheduling).expect("a valid size");
    let mut v = input.to_vec();
    pool.install(|worker| quicksort(worker, &mut v, cutoff));
    assert!(v.is_sorted(), "{scheduling:?} sorted wrongly");
    let stats = pool.stats();
    (stats.joins, stats.steals)
}

fn row(input: &[u64], cutoff: usize) -> Option<(String, Vec<Cell>)> {
    let group = group_name(cutoff);
    let ns = |id| support::median_ns(&group, id);
    let (rayon, sequential) = (ns("rayon")?, ns("sequential")?);
    let (stealing, shared) = (ns("stealing")?, ns("shared_queue")?);
    let (joins, stolen) = one_sort(Scheduling::Stealing, input, cutoff);
    let (_, moved) = one_sort(Scheduling::SharedQueue, input, cutoff);
    let what = format!("cutoff {cutoff} ({joins} joins)");
    let cells = vec![
        Cell::Nanos(sequential),
        Cell::Nanos(rayon),
        Cell::Nanos(stealing),
        Cell::Nanos(shared),
        Cell::Count(stealing / rayon),
        Cell::Count(shared / rayon),
        Cell::Whole(stolen),
        Cell::Whole(moved),
        Cell::Flag(stealing / rayon <= TARGET),
    ];
    Some((what, cells))
}

fn main() {
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average = load_average.split_whitespace().next().unwrap_or("unknown");
    let input = numbers();
    let pools = Pools {
        rayon: rayon::ThreadPoolBuilder::new()
            .num_threads(THREADS)
            .build()
            .expect("rayon starts 2 threads"),
        stealing: ForkJoinPool::new(THREADS, Scheduling::Stealing).expect("a valid size"),
        shared: ForkJoinPool::new(THREADS, Scheduling::SharedQueue).expect("a valid size"),
    };
    let cutoffs = [4096, 256];
    let mut c = support::criterion()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for cutoff in cutoffs {
        bench_cutoff(&mut c, &pools, &input, cutoff);
    }
    let Some(rows) = cutoffs
        .iter()
        .map(|&cutoff| row(&input, cutoff))
        .collect::<Option<Vec<_>>>()
    else {
        eprintln!("a group has no criterion result (a filtered run?); rayon.md left unchanged");
        return;
    };
    let note = format!(
        "Quicksort of {ITEMS} random u64 (fixed seed), slices of `cutoff` or fewer sorted \
         with `sort_unstable`; {THREADS} threads in every pool; criterion medians per sort \
         (10 samples). Ratios are time ÷ rayon's; steals are forked halves run by the other \
         worker in one sort; the last column is the issue's target, Stealing within \
         {TARGET}x of rayon. Load average before the runs: {load_average}."
    );
    let target = format!("within {TARGET}x");
    support::write_cells_table_of(
        BENCH,
        CHAPTER,
        "rayon.md",
        &note,
        &[
            "sequential",
            "rayon::join",
            "ours, Stealing",
            "ours, SharedQueue",
            "Stealing ÷ rayon",
            "SharedQueue ÷ rayon",
            "steals, Stealing",
            "steals, SharedQueue",
            &target,
        ],
        &rows,
    );
}
