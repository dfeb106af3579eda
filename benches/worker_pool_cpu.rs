//! The worker-pool chapter's CPU numbers: the recursive job, a quicksort of
//! 1,000,000 numbers from a fixed seed, sequentially, on rayon's pool
//! (`rayon::join`) and on our `ForkJoinPool` under each scheduling, two
//! threads each, at two cutoffs. All four run the library's one
//! `fork_join::quicksort` on the same input; only the `Fork` differs.
//!
//! The four are timed in rounds, each round one sort by each in turn (the
//! order rotating from round to round), and each cell is a median over the
//! rounds. Criterion would time one of them after the other, and on a
//! machine shared with other work a busy minute would then land on one
//! column only; in rounds, it lands on all four alike. The medians, each
//! pool's steals in one sort and the target (Stealing within 1.2x
//! of rayon on 2 cores), met or missed per row, go to
//! `book/worker_pool/rayon.md`. `cargo bench --bench worker_pool_cpu`
//! rewrites it (about 20 seconds after the release build).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use may_patterns::pool::fork_join::{quicksort, Fork, Sequential};
use may_patterns::pool::{ForkJoinPool, ForkJoinStats, Scheduling};
use support::Cell;

const CHAPTER: &str = "worker_pool";
const BENCH: &str = "worker_pool_cpu";
const ITEMS: usize = 1_000_000;
const THREADS: usize = 2;
const CUTOFFS: [usize; 2] = [4096, 256];
/// Timed rounds per cutoff, after one untimed round that warms caches and
/// wakes every pool's threads.
const ROUNDS: usize = 31;
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

/// The four ways to run the sort, in the table's column order.
enum Way<'a> {
    Sequential,
    Rayon(&'a rayon::ThreadPool),
    Ours(&'a ForkJoinPool),
}

impl Way<'_> {
    /// Sort a copy of `input` (copied outside the timed part): the time.
    fn time(&self, input: &[u64], cutoff: usize) -> Duration {
        let mut v = input.to_vec();
        let started = Instant::now();
        match self {
            Way::Sequential => quicksort(&Sequential, &mut v, cutoff),
            Way::Rayon(pool) => pool.install(|| quicksort(&Rayon, &mut v, cutoff)),
            Way::Ours(pool) => pool.install(|worker| quicksort(worker, &mut v, cutoff)),
        }
        let took = started.elapsed();
        assert!(v.is_sorted(), "a sort went wrong");
        took
    }
}

/// Median time per way at `cutoff`, from interleaved rounds.
fn medians(ways: &[Way], input: &[u64], cutoff: usize) -> Vec<f64> {
    for way in ways {
        way.time(input, cutoff);
    }
    let mut samples: Vec<Vec<Duration>> = ways.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for offset in 0..ways.len() {
            let i = (round + offset) % ways.len();
            samples[i].push(ways[i].time(input, cutoff));
        }
    }
    samples
        .into_iter()
        .map(|mut times| {
            times.sort();
            times[times.len() / 2].as_nanos() as f64
        })
        .collect()
}

/// What one sort on a new pool did (a pool's counters cover its whole
/// life, so the timed pools' would sum every round).
fn one_sort(scheduling: Scheduling, input: &[u64], cutoff: usize) -> ForkJoinStats {
    let pool = ForkJoinPool::new(THREADS, scheduling).expect("a valid size");
    let mut v = input.to_vec();
    pool.install(|worker| quicksort(worker, &mut v, cutoff));
    pool.stats()
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
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("rayon starts its threads");
    let stealing = ForkJoinPool::new(THREADS, Scheduling::Stealing).expect("a valid size");
    let shared = ForkJoinPool::new(THREADS, Scheduling::SharedQueue).expect("a valid size");
    let ways = [
        Way::Sequential,
        Way::Rayon(&rayon),
        Way::Ours(&stealing),
        Way::Ours(&shared),
    ];
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    for cutoff in CUTOFFS {
        let ns = medians(&ways, &input, cutoff);
        let (sequential, rayon, stealing, shared) = (ns[0], ns[1], ns[2], ns[3]);
        let stolen = one_sort(Scheduling::Stealing, &input, cutoff);
        let moved = one_sort(Scheduling::SharedQueue, &input, cutoff);
        let ratio = stealing / rayon;
        println!("cutoff {cutoff}: Stealing takes {ratio:.2}x rayon's time");
        let verdict = if ratio <= TARGET { "met" } else { "**missed**" };
        verdicts.push(format!("{verdict} at cutoff {cutoff} ({ratio:.2}x)"));
        let cells = vec![
            Cell::Nanos(sequential),
            Cell::Nanos(rayon),
            Cell::Nanos(stealing),
            Cell::Nanos(shared),
            Cell::Count(ratio),
            Cell::Count(shared / rayon),
            Cell::Whole(stolen.steals),
            Cell::Whole(moved.steals),
            Cell::Nanos(moved.waited_at_bound.as_nanos() as f64),
            Cell::Flag(ratio <= TARGET),
        ];
        rows.push((format!("cutoff {cutoff} ({} joins)", stolen.joins), cells));
    }
    // What other processes took while the sorts ran: the noise in the figures.
    let after = cpu_ticks();
    let others = (after.0 - before.0).saturating_sub(after.2 - before.2);
    let others = 100.0 * others as f64 / (after.1 - before.1).max(1) as f64;
    let note = format!(
        "Quicksort of {ITEMS} random u64 (fixed seed), slices of `cutoff` or fewer sorted \
         with `sort_unstable`; {THREADS} threads in every pool. Each time is the median of \
         {ROUNDS} rounds, each round one sort by each of the four in turn. Ratios are time \
         ÷ rayon's; steals are forked halves run by the other worker in one sort, and the wait at the bound is the time SharedQueue's workers spent at step 4's nesting bound in that sort, summed over both, waiting instead of helping; the last \
         column is the issue's target, Stealing within {TARGET}x of rayon. Other processes \
         used {others:.0}% of the machine's CPU time while the bench ran."
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
            "SharedQueue: waited at the bound",
            &target,
        ],
        &rows,
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("book/worker_pool/rayon.md");
    let mut text = std::fs::read_to_string(&path).expect("just written");
    text.push_str(&format!(
        "\nThe issue's target, our pool with `Scheduling::Stealing` within {TARGET}x of \
         rayon on {THREADS} cores: {}.\n",
        verdicts.join("; ")
    ));
    std::fs::write(&path, text).expect("the book's folder is writable");
}
