//! The primer's costs, side by side: may coroutines with 1 and 2 workers, Go
//! 1.19 goroutines with GOMAXPROCS 1 and 2, and OS threads. Spawning and
//! joining a task (from an OS thread and from inside a task), a message round
//! trip over each channel kind, and the memory a parked task holds.
//!
//! `cargo bench --bench may_primer` runs it and rewrites the primer's table,
//! `book/may_primer/benchmarks.md`. may reads its worker count once per
//! process, so the bench runs itself twice as a child (`MAY_PRIMER_WORKERS=1`
//! and `=2`); the Go side is `benches/may_primer_go/main.go`, run with
//! `go run` (Debian: `apt-get install golang-go`). Every timing, on either
//! side, is the median of 25 samples of at least 10 ms each (criterion
//! cannot time the Go program, so neither side uses it).

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use may::go;
use support::Cell;

/// Tasks parked at once for the memory rows (threads: fewer, see below).
const PARKED: usize = 10_000;
/// OS threads parked at once: each reserves a 2 MiB stack, so 10,000 would
/// need 20 GiB of address space and the thread limit of a small machine.
const PARKED_THREADS: usize = 1_000;
/// Spawn + joins counted for the context-switch rows.
const SWITCH_ITERS: u64 = 20_000;

// ---------------------------------------------------------------- timing --

const SAMPLES: usize = 25;
const MIN_SAMPLE: Duration = Duration::from_millis(10);

/// Median time per iteration, in ns, of `run(iters)`, which does `iters`
/// iterations and returns how long they took. The same procedure as
/// `measure` in the Go program.
fn measure(mut run: impl FnMut(u64) -> Duration) -> f64 {
    let mut iters = 1;
    while run(iters) < MIN_SAMPLE {
        iters *= 2;
    }
    let mut per_iter: Vec<f64> = (0..SAMPLES)
        .map(|_| run(iters).as_nanos() as f64 / iters as f64)
        .collect();
    per_iter.sort_by(f64::total_cmp);
    per_iter[SAMPLES / 2]
}

/// How long `iters` calls of `one` take; `one`'s results go through
/// `black_box` so the work cannot be optimised away.
fn timed<T>(iters: u64, mut one: impl FnMut(u64) -> T) -> Duration {
    let start = Instant::now();
    (0..iters).for_each(|i| drop(black_box(one(i))));
    start.elapsed()
}

// ------------------------------------------------------- may (in a child) --

/// Runs in a child process whose may has `workers` workers; prints
/// `<key> <value>` lines for the parent.
fn may_child(workers: usize) {
    support::configure_may();
    may::config().set_workers(workers); // before anything starts may
    let from_thread = measure(|n| timed(n, |_| go!(|| black_box(1)).join().unwrap()));
    println!("spawn_join_from_thread {from_thread}");
    let in_task = in_coroutine(|| measure(|n| timed(n, |_| go!(|| black_box(1)).join().unwrap())));
    println!("spawn_join_in_task {in_task}");
    // The key of the first round-trip row: mpsc here, std mpsc between
    // threads, an unbuffered chan in Go.
    println!("round_trip {}", in_coroutine(|| measure(round_trip_mpsc)));
    println!(
        "round_trip_spsc {}",
        in_coroutine(|| measure(round_trip_spsc))
    );
    println!(
        "round_trip_mpmc {}",
        in_coroutine(|| measure(round_trip_mpmc))
    );
    let (rss, virt) = may_memory_per_parked(PARKED);
    println!("parked_rss {rss}\nparked_virtual {virt}");
    let from_thread = switches_per(SWITCH_ITERS, || {
        (0..SWITCH_ITERS).for_each(|_| drop(go!(|| black_box(1)).join()))
    });
    println!("switches_from_thread {from_thread}");
    let in_task = switches_per(SWITCH_ITERS, || {
        go!(|| (0..SWITCH_ITERS).for_each(|_| drop(go!(|| black_box(1)).join())))
            .join()
            .unwrap()
    });
    println!("switches_in_task {in_task}");
}

/// OS context switches (voluntary and not, summed over every thread of the
/// process) per iteration while `run` does `iters` iterations: how often a
/// thread had to go to sleep and be woken. Read from this OS thread.
fn switches_per(iters: u64, run: impl FnOnce()) -> f64 {
    let before = context_switches();
    run();
    (context_switches() - before) as f64 / iters as f64
}

fn context_switches() -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("Linux /proc");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Run `f` on a coroutine: the pinger of every round trip is a coroutine,
/// as in the book's patterns.
fn in_coroutine(f: impl FnOnce() -> f64 + Send + 'static) -> f64 {
    go!(f).join().unwrap()
}

/// `iters` ping/pong exchanges with an echoing coroutine, timed from the
/// caller's side. One function per channel kind: their types differ.
macro_rules! round_trip {
    ($name:ident, $kind:ident) => {
        fn $name(iters: u64) -> Duration {
            let (ping_tx, ping_rx) = may::sync::$kind::channel::<u64>();
            let (pong_tx, pong_rx) = may::sync::$kind::channel::<u64>();
            let echo = go!(move || ping_rx.iter().for_each(|n| pong_tx.send(n).unwrap()));
            let elapsed = timed(iters, |n| {
                ping_tx.send(n).unwrap();
                black_box(pong_rx.recv().unwrap());
            });
            drop(ping_tx);
            echo.join().unwrap();
            elapsed
        }
    };
}
round_trip!(round_trip_mpsc, mpsc);
round_trip!(round_trip_spsc, spsc);
round_trip!(round_trip_mpmc, mpmc);

/// Growth of resident and virtual size per coroutine when `n` more are
/// parked, each on a `recv` of its own channel. A first batch takes the
/// 1000 ready-made coroutines of may's pool (allocated at start-up), so the
/// measured ones all get fresh stacks. /proc is read from this OS thread,
/// never from a coroutine.
fn may_memory_per_parked(n: usize) -> (f64, f64) {
    let first = park_coroutines(may::config().get_pool_capacity());
    let before = (status_bytes("VmRSS"), status_bytes("VmSize"));
    let more = park_coroutines(n);
    let after = (status_bytes("VmRSS"), status_bytes("VmSize"));
    more.into_iter()
        .chain(first)
        .for_each(|gate| gate.send(()).unwrap());
    per_task(before, after, n)
}

/// Start `n` coroutines that each park on their own channel; return once
/// all have started, with the senders that release them.
fn park_coroutines(n: usize) -> Vec<may::sync::mpsc::Sender<()>> {
    let (ready_tx, ready_rx) = may::sync::mpsc::channel();
    let gates = (0..n)
        .map(|_| {
            let (gate, parked) = may::sync::mpsc::channel::<()>();
            let ready = ready_tx.clone();
            go!(move || {
                ready.send(()).unwrap();
                parked.recv().unwrap();
            });
            gate
        })
        .collect();
    (0..n).for_each(|_| ready_rx.recv().unwrap());
    gates
}

// ------------------------------------------------- OS threads (in parent) --

fn thread_rows() -> HashMap<String, f64> {
    let spawn_join = measure(|n| timed(n, |_| std::thread::spawn(|| black_box(1)).join().unwrap()));
    let round_trip = measure(|iters| {
        let (ping_tx, ping_rx) = std::sync::mpsc::channel::<u64>();
        let (pong_tx, pong_rx) = std::sync::mpsc::channel::<u64>();
        let echo =
            std::thread::spawn(move || ping_rx.iter().for_each(|n| pong_tx.send(n).unwrap()));
        let elapsed = timed(iters, |n| {
            ping_tx.send(n).unwrap();
            black_box(pong_rx.recv().unwrap());
        });
        drop(ping_tx);
        echo.join().unwrap();
        elapsed
    });
    let (rss, virt) = thread_memory_per_parked(PARKED_THREADS);
    let switches = switches_per(SWITCH_ITERS, || {
        (0..SWITCH_ITERS).for_each(|_| drop(std::thread::spawn(|| black_box(1)).join()))
    });
    [
        ("spawn_join_from_thread", spawn_join),
        ("round_trip", round_trip),
        ("parked_rss", rss),
        ("parked_virtual", virt),
        ("switches_from_thread", switches),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn thread_memory_per_parked(n: usize) -> (f64, f64) {
    let before = (status_bytes("VmRSS"), status_bytes("VmSize"));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let parked: Vec<_> = (0..n)
        .map(|_| {
            let (gate, wait) = std::sync::mpsc::channel::<()>();
            let ready = ready_tx.clone();
            let thread = std::thread::spawn(move || {
                ready.send(()).unwrap();
                wait.recv().unwrap();
            });
            (gate, thread)
        })
        .collect();
    (0..n).for_each(|_| ready_rx.recv().unwrap());
    let after = (status_bytes("VmRSS"), status_bytes("VmSize"));
    for (gate, thread) in parked {
        gate.send(()).unwrap();
        thread.join().unwrap();
    }
    per_task(before, after, n)
}

// ---------------------------------------------------------------- memory --

/// A `VmRSS:` or `VmSize:` line of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib * 1024.0
}

fn per_task(before: (f64, f64), after: (f64, f64), n: usize) -> (f64, f64) {
    (
        (after.0 - before.0) / n as f64,
        (after.1 - before.1) / n as f64,
    )
}

// ---------------------------------------------------------------- parent --

/// `<key> <value>` lines into a map (other lines, such as the Go version,
/// are kept as text under their key too, in `text`).
fn parse(output: &str, text: &mut HashMap<String, String>) -> HashMap<String, f64> {
    let mut values = HashMap::new();
    for line in output.lines() {
        if let Some((key, value)) = line.split_once(' ') {
            match value.parse::<f64>() {
                Ok(v) => values.insert(key.to_owned(), v).map(drop),
                Err(_) => text.insert(key.to_owned(), value.to_owned()).map(drop),
            };
        }
    }
    values
}

fn run(mut command: Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot start {what}: {e}")));
    if !output.status.success() {
        fail(&format!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).unwrap()
}

fn fail(message: &str) -> ! {
    eprintln!("may_primer bench: {message}");
    std::process::exit(1);
}

fn may_results(workers: usize) -> HashMap<String, f64> {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.env("MAY_PRIMER_WORKERS", workers.to_string());
    parse(
        &run(child, &format!("the may child ({workers} workers)")),
        &mut HashMap::new(),
    )
}

fn go_results(procs: usize, text: &mut HashMap<String, String>) -> HashMap<String, f64> {
    if Command::new("go").arg("version").output().is_err() {
        fail(
            "the Go comparison needs the `go` command (Debian: `apt-get install golang-go`); \
             nothing was written",
        );
    }
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/may_primer_go/main.go");
    let mut go = Command::new("go");
    go.arg("run")
        .arg(program)
        .env("GOMAXPROCS", procs.to_string());
    parse(&run(go, &format!("`go run` (GOMAXPROCS={procs})")), text)
}

fn main() {
    if let Ok(workers) = std::env::var("MAY_PRIMER_WORKERS") {
        return may_child(workers.parse().expect("MAY_PRIMER_WORKERS is a number"));
    }
    let mut go_text = HashMap::new();
    // One column each, in the table's order.
    let columns = [
        may_results(1),
        may_results(2),
        go_results(1, &mut go_text),
        go_results(2, &mut go_text),
        thread_rows(),
    ];
    let go = go_text.get("go_version").map_or("Go", String::as_str);
    let titles = [
        "may, 1 worker".to_owned(),
        "may, 2 workers".to_owned(),
        format!("Go {go}, GOMAXPROCS=1"),
        format!("Go {go}, GOMAXPROCS=2"),
        "std::thread".to_owned(),
    ];
    let rows = [
        (
            "spawn + join, from main's OS thread",
            "spawn_join_from_thread",
            Cell::Nanos as fn(f64) -> Cell,
        ),
        (
            "spawn + join, from inside a coroutine or goroutine",
            "spawn_join_in_task",
            Cell::Nanos,
        ),
        (
            "round trip, mpsc (Go: unbuffered chan; threads: std mpsc)",
            "round_trip",
            Cell::Nanos,
        ),
        ("round trip, spsc", "round_trip_spsc", Cell::Nanos),
        ("round trip, mpmc", "round_trip_mpmc", Cell::Nanos),
        ("resident memory per parked task", "parked_rss", Cell::Bytes),
        (
            "virtual memory per parked task",
            "parked_virtual",
            Cell::Bytes,
        ),
        (
            "OS context switches per spawn + join, from main's OS thread",
            "switches_from_thread",
            Cell::Count,
        ),
        (
            "OS context switches per spawn + join, from inside a coroutine or goroutine",
            "switches_in_task",
            Cell::Count,
        ),
    ];
    let table: Vec<(String, Vec<Cell>)> = rows
        .iter()
        .map(|&(what, key, cell)| {
            let cells = columns
                .iter()
                .map(|c| c.get(key).copied().map_or(Cell::Empty, cell))
                .collect();
            (what.to_owned(), cells)
        })
        .collect();
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    support::write_cells_table(
        "may_primer",
        "benchmarks.md",
        &format!(
            "Each time is the median of {SAMPLES} samples of at least 10 ms; memory is the growth \
             of VmRSS / VmSize per task with {PARKED} tasks parked on a channel each \
             ({PARKED_THREADS} for threads); context switches are summed over every thread \
             of the process ({SWITCH_ITERS} iterations). — : not measured (Go spawns from a goroutine \
             either way; a thread has one kind of channel here)."
        ),
        &titles,
        &table,
    );
}
