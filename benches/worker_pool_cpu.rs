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

/// The machine's busy and total CPU time so far, and this process's own,
/// in clock ticks (Linux's /proc/stat and /proc/self/stat).
fn cpu_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("Linux /proc");
    let all: Vec<u64> = stat.lines().next().expect("a cpu line")[3..]
        .split_whitespace()
        .map(|n| n.parse().expect("a tick count"))
        .collect();
    let total: u64 = all.iter().sum();
    let busy = total - all[3] - all[4]; // less idle and iowait
    let own = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let (_, fields) = own.rsplit_once(')').expect("a stat line");
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let tick = |i: usize| fields[i].parse::<u64>().expect("a tick count");
    (busy, total, tick(11) + tick(12)) // utime + stime
}

fn main() {
    let before = cpu_ticks();
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
    // What other processes took while the sorts ran: the noise in the figures.
    let after = cpu_ticks();
    let others = (after.0 - before.0).saturating_sub(after.2 - before.2);
    let others = 100.0 * others as f64 / (after.1 - before.1).max(1) as f64;
    let note = format!(
        "Quicksort of {ITEMS} random u64 (fixed seed), slices of `cutoff` or fewer sorted \
         with `sort_unstable`; {THREADS} threads in every pool; criterion medians per sort \
         (10 samples). Ratios are time ÷ rayon's; steals are forked halves run by the other \
         worker in one sort; the last column is the issue's target, Stealing within \
         {TARGET}x of rayon. Other processes used {others:.0}% of the machine's CPU time \
         while the bench ran."
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
