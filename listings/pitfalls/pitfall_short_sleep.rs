//! Known may 0.3.51 bug: `may::coroutine::sleep` can corrupt the heap.
//!
//! `Sleep::subscribe` puts the coroutine on the timer list before it records
//! it in the coroutine's cancel data (may-0.3.51 src/sleep.rs:17-29). If the
//! timer fires in between, the timer thread resumes the coroutine before
//! that record is written, and both threads use its cancel data at once. It
//! is a race window, not a duration threshold: the shorter the sleep, the
//! more often the timer wins, but a worker preempted between the two
//! statements can lose it at any length.
//!
//! The listing runs a stress (producers and a consumer on a small bounded
//! buffer, pausing at random with a yield or a sleep) in child processes, so
//! a crash ends only the child, and counts how the children ended.
//!
//! Run it: `cargo run --example pitfall_short_sleep`, or choose the sizes:
//! `cargo run --example pitfall_short_sleep -- --runs 10 --sleep-us 0,5,50,1000 --rounds 100`.
//! The appendix's release table comes from
//! `cargo run --release --example pitfall_short_sleep -- --rounds 100 --write-table book/pitfalls/short_sleep_release.md`.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use may::go;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::{bounded, machine};

/// Count how often short coroutine sleeps crash may 0.3.51.
#[derive(Parser)]
struct Args {
    /// Child processes per sleep length.
    #[arg(long, default_value_t = 10)]
    runs: u32,
    /// Sleep lengths to try, in microseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,5,50,1000")]
    sleep_us: Vec<u64>,
    /// Stress rounds in each child.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Also write the counts as a markdown table to this file, headed by the
    /// machine, the command and the date.
    #[arg(long)]
    write_table: Option<PathBuf>,
}

/// Set in a child process: "<sleep µs>,<rounds>" to run the stress once.
const CHILD: &str = "PITFALL_SHORT_SLEEP_CHILD";

/// A child that has not ended by then counts as hung (a corrupted heap can
/// also deadlock), and is killed.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

fn main() {
    if let Some(job) = std::env::var_os(CHILD) {
        return run_child(&job.to_string_lossy());
    }
    let args = Args::parse();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{} runs per sleep length, {} rounds each, {build} build",
        args.runs, args.rounds
    );
    println!("{:>8}  {:>8}  {:>5}", "sleep", "crashed", "hung");
    let mut table = String::from("| sleep | crashed | hung |\n|---|---|---|\n");
    for &sleep_us in &args.sleep_us {
        let tally = tally(sleep_us, args.rounds, args.runs);
        let sleep = format!("{sleep_us} µs");
        let crashed = format!("~{}", tally.crashed);
        let hung = format!("~{}", tally.hung);
        println!("{sleep:>8}  {crashed:>8}  {hung:>5}");
        let runs = args.runs;
        table += &format!(
            "| {sleep} | {} of {runs} | {} of {runs} |\n",
            tally.crashed, tally.hung
        );
    }
    if let Some(path) = args.write_table {
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        let release = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        let head = format!(
            "Measured on {} with `cargo run{release} --example pitfall_short_sleep -- {command}` \
             ({build} build, {} rounds per run), {}.\n\n",
            machine::describe(),
            args.rounds,
            machine::today()
        );
        std::fs::write(&path, head + &table)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

// ANCHOR: children
/// How a set of child processes ended.
#[derive(Debug, Default)]
struct Tally {
    ok: u32,
    crashed: u32,
    hung: u32,
}

/// Run the stress in `runs` child processes, one after another.
fn tally(sleep_us: u64, rounds: u64, runs: u32) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..runs {
        match run_bounded(child(sleep_us, rounds)) {
            Some(status) if status.success() => tally.ok += 1,
            Some(_) => tally.crashed += 1, // an abort, a segfault, or lost items
            None => tally.hung += 1,
        }
    }
    tally
}

/// Run `command` to its end, or kill it after `CHILD_LIMIT` (`None`).
fn run_bounded(mut command: Command) -> Option<ExitStatus> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the listing can start itself");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        // This is the parent, an OS thread that runs no coroutine.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// This program (or, under `cargo test`, its test binary) as a child that
/// runs the stress once.
fn child(sleep_us: u64, rounds: u64) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD, format!("{sleep_us},{rounds}"));
    if cfg!(test) {
        command.args(["tests::child", "--exact", "--ignored"]);
    }
    command
}

/// In the child: the stress, then a clean exit only if no item was lost.
fn run_child(job: &str) {
    let (sleep_us, rounds) = job.split_once(',').expect("<sleep µs>,<rounds>");
    let nap = Duration::from_micros(sleep_us.parse().unwrap());
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (sent, received) = stress(rounds.parse().unwrap(), nap);
    assert_eq!(sent, received, "items were lost");
}
// ANCHOR_END: children

// ANCHOR: stress
/// `rounds` times: a random number of producers push a random number of
/// items into a small buffer; producers and the consumer pause at random
/// (a yield, or a sleep of `nap`), so they keep parking on the channel
/// and waking from timers. Returns (items sent, items received).
fn stress(rounds: u64, nap: Duration) -> (usize, usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut sent, mut received) = (0, 0);
    for _ in 0..rounds {
        let (tx, rx) = bounded::channel::<usize>(rng.usize(1..=8));
        let producers: Vec<_> = (0..rng.usize(1..=8))
            .map(|_| {
                let tx = tx.clone();
                let mut rng = fastrand::Rng::with_seed(rng.u64(..));
                go!(move || {
                    let items = rng.usize(0..=60);
                    for n in 0..items {
                        tx.send(n).unwrap(); // parks while the buffer is full
                        pause(&mut rng, nap);
                    }
                    items
                })
            })
            .collect();
        drop(tx);
        let mut consumer_rng = fastrand::Rng::with_seed(rng.u64(..));
        let consumer = go!(move || {
            let mut count = 0;
            for _ in rx.iter() {
                count += 1;
                pause(&mut consumer_rng, nap);
            }
            count
        });
        sent += producers
            .into_iter()
            .map(|p| p.join().unwrap())
            .sum::<usize>();
        received += consumer.join().unwrap();
    }
    (sent, received)
}

/// Nothing, a yield, or a sleep of `nap`.
fn pause(rng: &mut fastrand::Rng, nap: Duration) {
    match rng.u8(0..4) {
        0 => may::coroutine::yield_now(),
        1 => may::coroutine::sleep(nap),
        _ => {}
    }
}
// ANCHOR_END: stress

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a test: the body of the child processes the tests start.
    #[test]
    #[ignore = "run by the other tests as a child process"]
    fn child() {
        run_child(&std::env::var(CHILD).expect("started by a test"));
    }

    #[test]
    fn a_child_that_runs_cleanly_counts_as_ok() {
        let tally = tally(0, 0, 1); // no rounds: nothing sleeps
        assert_eq!((tally.ok, tally.crashed, tally.hung), (1, 0, 0));
    }

    #[test]
    fn zero_microsecond_sleeps_crash_a_child() {
        // Each child stops at its crash; stop at the first crashed child.
        // 100 rounds: in our runs even release builds crashed most children.
        let crashed = (0..20).any(|_| tally(0, 100, 1).crashed == 1);
        assert!(crashed, "20 children of 100 rounds ran without a crash");
    }
}
