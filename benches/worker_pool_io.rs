//! I/O-bound jobs: the chapter's pool with 1,000 coroutine workers against
//! a thread pool of the same size (1,000 OS threads) and a typical small
//! one (2 threads per core), every job waiting 1 ms. Each system runs in a
//! child process of its own (this bench, started again), so its peak
//! resident memory is its own: the table's memory row is the child's peak
//! (`VmHWM`) minus its resident size before the pool started (`VmRSS`).
//!
//! One more child measures the alarm thread the pool's jobs wait on (one
//! OS thread keeps every wait): 1,000 bare coroutines waiting 1 ms on it in
//! a loop, no pool. What they reach caps any program that waits this way.
//!
//! `cargo bench --bench worker_pool_io` (about a minute after the build)
//! rewrites `book/worker_pool/threads.md` (the table, and the issue's
//! target marked met or missed) and `book/worker_pool/timeline.svg` (a
//! bursty run of the chapter's program, drawn as the program draws it).

mod support;

// The program's modules, as its main.rs declares them; their tests and the
// parts only main uses are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/worker_pool/worker_pool/arrivals.rs"]
mod arrivals;
#[allow(dead_code, unused_imports)]
#[path = "../listings/worker_pool/worker_pool/cli.rs"]
mod cli;
#[allow(dead_code, unused_imports)]
#[path = "../listings/worker_pool/worker_pool/mix.rs"]
mod mix;
#[allow(dead_code, unused_imports)]
#[path = "../listings/worker_pool/worker_pool/report.rs"]
mod report;
#[allow(dead_code, unused_imports)]
#[path = "../listings/worker_pool/worker_pool/session.rs"]
mod session;
#[allow(dead_code, unused_imports)]
#[path = "../listings/worker_pool/worker_pool/svg.rs"]
mod svg;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use may_patterns::alarm;
use may_patterns::pool::{Config, Pool, Shutdown};
use support::Cell;

/// Jobs in flight at once, and the wait of each.
const CONCURRENCY: usize = 1_000;
const WAIT: Duration = Duration::from_millis(1);
/// Runs per system; the table shows the median run (by throughput).
const RUNS: usize = 5;

/// The systems, in the table's order: (child mode, column title, jobs).
/// The small pool gets fewer jobs: at 4 waits in flight it runs ~4,000 a
/// second, and a rate needs no more than a second to show.
const SYSTEMS: [(&str, &str, usize); 4] = [
    ("pool", "our pool, 1,000 coroutine workers", 100_000),
    ("threads", "thread pool, 1,000 threads", 100_000),
    ("small", "thread pool, 4 threads (2 per core)", 4_000),
    (
        "alarm",
        "no pool: 1,000 coroutines waiting on the alarm",
        100_000,
    ),
];

// ----------------------------------------------------------------- child --

/// A `VmRSS:` or `VmHWM:` line of /proc/self/status, in bytes.
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// User + system CPU time of the whole process so far (every thread), from
/// /proc/self/stat, in clock ticks of 1/100 s (Linux's USER_HZ).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces; the rest follow ") ".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The chapter's pool: `CONCURRENCY` workers, each job parks on the alarm.
fn our_pool(jobs: usize) {
    let pool = Pool::new(Config::fixed(CONCURRENCY, CONCURRENCY)).unwrap();
    for _ in 0..jobs {
        // The handle is dropped: shutdown's report counts the jobs.
        pool.submit(|| alarm::shared().sleep(WAIT)).unwrap();
    }
    let report = pool.shutdown(Shutdown::Drain);
    assert_eq!(report.completed, jobs as u64);
}

/// A thread pool as one writes it without a library: `threads` OS threads
/// taking jobs from one bounded crossbeam channel; each job sleeps.
fn thread_pool(threads: usize, jobs: usize) {
    let (tx, rx) = crossbeam_channel::bounded::<Box<dyn FnOnce() + Send>>(CONCURRENCY);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut done = 0u64;
                for job in rx {
                    job();
                    done += 1;
                }
                done
            })
        })
        .collect();
    for _ in 0..jobs {
        tx.send(Box::new(|| std::thread::sleep(WAIT))).unwrap();
    }
    drop(tx);
    let done: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(done, jobs as u64);
}

/// `CONCURRENCY` coroutines waiting on the alarm in a loop, `jobs` waits
/// in all: the alarm's rate with no pool in front of it.
fn bare_alarm(jobs: usize, wait: Duration) {
    let each = jobs / CONCURRENCY;
    let waiters: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            may::go!(move || {
                for _ in 0..each {
                    alarm::shared().sleep(wait);
                }
            })
        })
        .collect();
    for waiter in waiters {
        waiter.join().unwrap();
    }
}

/// `n` may channels, alive at once: what one costs in resident memory, the
/// reason the pool and the alarm do not make one per job.
fn channels(n: usize) {
    let channels: Vec<_> = (0..n).map(|_| may::sync::mpsc::channel::<u64>()).collect();
    assert_eq!(channels.len(), n);
}

fn child(mode: &str, jobs: usize) {
    support::configure_may();
    alarm::shared(); // its thread is part of every may system's setup
    let (rss, ticks) = (status_bytes("VmRSS"), cpu_ticks());
    let started = Instant::now();
    match mode {
        "pool" => our_pool(jobs),
        "threads" => thread_pool(CONCURRENCY, jobs),
        "small" => thread_pool(4, jobs),
        "alarm" => bare_alarm(jobs, WAIT),
        "channels" => channels(jobs),
        other => panic!("unknown mode {other}"),
    }
    let elapsed = started.elapsed();
    println!("jobs {jobs}");
    println!("elapsed_ns {}", elapsed.as_nanos());
    println!("memory {}", status_bytes("VmHWM").saturating_sub(rss));
    println!("cpu_ticks {}", cpu_ticks() - ticks);
}

// ---------------------------------------------------------------- parent --

/// One child run: its `<key> <value>` lines.
fn run_child(mode: &str, jobs: usize) -> HashMap<String, f64> {
    let output = Command::new(std::env::current_exe().unwrap())
        .env("WORKER_POOL_IO", format!("{mode}:{jobs}"))
        .output()
        .expect("the bench starts itself");
    assert!(
        output.status.success(),
        "{mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// What one system measured in its median run.
struct Measured {
    jobs: f64,
    per_second: f64,
    elapsed: f64,
    memory: f64,
    cpu_per_job: f64,
}

fn measure(mode: &str, jobs: usize) -> Measured {
    let r = run_child(mode, jobs);
    Measured {
        jobs: r["jobs"],
        per_second: r["jobs"] / (r["elapsed_ns"] / 1e9),
        elapsed: r["elapsed_ns"],
        memory: r["memory"],
        cpu_per_job: r["cpu_ticks"] * 1e7 / r["jobs"],
    }
}

/// Every system `RUNS` times, taking turns (a busy spell of the machine
/// then hits every system, not one), and each system's median run.
fn measure_all() -> Vec<Measured> {
    let mut runs: Vec<Vec<Measured>> = SYSTEMS.iter().map(|_| Vec::new()).collect();
    for _ in 0..RUNS {
        for (i, &(mode, _, jobs)) in SYSTEMS.iter().enumerate() {
            runs[i].push(measure(mode, jobs));
        }
    }
    runs.into_iter()
        .zip(SYSTEMS)
        .map(|(mut runs, (mode, _, _))| {
            runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            let median = runs.swap_remove(RUNS / 2);
            println!(
                "{mode}: {:.0} jobs/s, {:.1} MiB",
                median.per_second,
                median.memory / 1_048_576.0
            );
            median
        })
        .collect()
}

fn main() {
    if let Ok(spec) = std::env::var("WORKER_POOL_IO") {
        let (mode, jobs) = spec.split_once(':').expect("mode:jobs");
        return child(mode, jobs.parse().expect("a job count"));
    }
    // Another process busy on the two cores slows the thread pools and the
    // pool alike, but not equally: the table says how busy the machine was.
    // (Read before the runs only: 1,000 threads waking every millisecond
    // count in the load average themselves.)
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    let measured = measure_all();
    let column = |cell: &dyn Fn(&Measured) -> Cell| measured.iter().map(cell).collect();
    let rows: Vec<(String, Vec<Cell>)> = vec![
        ("jobs run".into(), column(&|m| Cell::Whole(m.jobs as u64))),
        ("wall time".into(), column(&|m| Cell::Nanos(m.elapsed))),
        (
            "throughput".into(),
            column(&|m| Cell::PerSecond(m.per_second)),
        ),
        (
            "peak resident memory above the start".into(),
            column(&|m| Cell::Bytes(m.memory)),
        ),
        (
            "CPU time per job (user + system, all threads)".into(),
            column(&|m| Cell::Nanos(m.cpu_per_job)),
        ),
    ];
    let titles: Vec<&str> = SYSTEMS.iter().map(|&(_, title, _)| title).collect();
    support::write_cells_table_of(
        "worker_pool_io",
        "worker_pool",
        "threads.md",
        &format!(
            "Every job waits {} ms: on the pool, parked on the shared alarm; on the thread \
             pools, in `std::thread::sleep`. 1,000 jobs in flight at once (4 on the small \
             pool), a queue of 1,000 in front of them, one submitting thread; each column is \
             the median of {RUNS} runs by throughput, each run a process of its own, the \
             systems taking turns. CPU time is counted in 10 ms ticks. Load average before the \
             runs: {load}.",
            WAIT.as_millis()
        ),
        &titles,
        &rows,
    );
    let channel = run_child("channels", 10_000);
    append_targets(&measured, channel["memory"] / channel["jobs"]);
    bursty_picture();
}

/// The issue's target, "10x the throughput of a thread pool of the same
/// size, with far less memory", with the factor each comparison gives.
fn append_targets(m: &[Measured], channel_bytes: f64) {
    let (pool, threads, small, alarm) = (&m[0], &m[1], &m[2], &m[3]);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let same_size = pool.per_second / threads.per_second;
    let mut text = String::from("\n");
    writeln!(
        text,
        "- Throughput against a thread pool of the same size (1,000 threads): {same_size:.2}x \
         (target: 10x): {}. CPU time per job: {:.2}x less than the threads'.",
        verdict(same_size >= 10.0),
        threads.cpu_per_job / pool.cpu_per_job
    )
    .unwrap();
    writeln!(
        text,
        "- Throughput against the small thread pool (4 threads): {:.0}x.",
        pool.per_second / small.per_second
    )
    .unwrap();
    let memory = pool.memory / threads.memory;
    writeln!(
        text,
        "- Peak memory against the 1,000 threads: {memory:.2}x as much ({:.1} MiB against \
         {:.1} MiB; target: far less, taken here as under half): {}.",
        pool.memory / 1_048_576.0,
        threads.memory / 1_048_576.0,
        verdict(memory < 0.5)
    )
    .unwrap();
    let share = pool.per_second / alarm.per_second;
    writeln!(
        text,
        "- With no pool, 1,000 coroutines waiting 1 ms on the alarm thread kept {:.1}k waits/s \
         (1,000,000/s if every wait took exactly 1 ms); the pool reached {:.0}% of that, so {}.",
        alarm.per_second / 1e3,
        share * 100.0,
        if share >= 0.8 {
            "the alarm thread was the ceiling"
        } else {
            "the pool's own path (submit, queue, handle), not the alarm thread, was the limit"
        }
    )
    .unwrap();
    writeln!(
        text,
        "- One may channel, alive, holds {:.1} KiB of resident memory (10,000 made at once): \
         why a job's handle and its wait on the alarm are each a one-shot of the crate's own \
         (a small record and a may `Blocker`), not a may channel.",
        channel_bytes / 1024.0
    )
    .unwrap();
    print!("{text}");
    let path = book("threads.md");
    let mut table = std::fs::read_to_string(&path).unwrap();
    table.push_str(&text);
    std::fs::write(&path, table).unwrap();
}

/// The chapter's picture: the program's default bursty run, drawn by its
/// own `svg` module.
fn bursty_picture() {
    support::configure_may();
    let cli = cli::Cli::try_parse_from(["worker_pool"]).expect("the defaults parse");
    let session = session::run(&cli).unwrap_or_else(|e| panic!("the bursty run: {e:?}"));
    let summary = report::build(&cli, &session);
    print!("{summary}");
    let path = book("timeline.svg");
    std::fs::write(&path, svg::render(&summary)).unwrap();
    println!("wrote {}", path.display());
}

fn book(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("book/worker_pool")
        .join(file)
}
