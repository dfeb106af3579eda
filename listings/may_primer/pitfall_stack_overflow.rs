//! Pitfall: a coroutine's stack is small and fixed (32 KiB by default), and
//! overflowing it is undefined behaviour (may's `docs/may_caveat.md`). With
//! may 0.3.51 an overflow ends in one of two ways, depending on where the
//! overflowing frames fall; this program shows both, each in a child process
//! (it runs itself again with the case as its argument), and reports what the
//! child printed and how it exited.
//!
//! Run it: `cargo run --example pitfall_stack_overflow`

use std::hint::black_box;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use may::go;
use may_patterns::runtime::{configure_once, Settings};

/// A child that has not ended by then is stuck: an overflow is immediate.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

fn main() {
    match std::env::args().nth(1) {
        Some(arg) => overflow_in_this_process(Case::from_arg(&arg)),
        None => {
            for case in Case::ALL {
                // The child ends itself within CHILD_LIMIT, so this returns.
                let child = Command::new(std::env::current_exe().unwrap())
                    .arg(case.arg())
                    .output()
                    .expect("the child process starts");
                report(case, child);
            }
        }
    }
}

// ANCHOR: cases
#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    /// Each frame holds a 1 KiB buffer, so the stack pointer jumps over the
    /// stack's lowest words straight into the guard page below them.
    BigFrames,
    /// Each frame is a few words, as in a recursive-descent parser's
    /// per-level call: the frames fill the stack down to its lowest word.
    SmallFrames,
}

/// Recurse `depth` times, each frame holding a 1 KiB buffer.
fn big_frames(depth: u32) -> u64 {
    let buffer = black_box([depth as u8; 1024]);
    if depth == 0 {
        return buffer[0] as u64;
    }
    buffer[1023] as u64 + big_frames(depth - 1)
}

/// Recurse `depth` times with almost nothing in each frame.
fn small_frames(depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    1 + small_frames(black_box(depth - 1))
}
// ANCHOR_END: cases

impl Case {
    const ALL: [Case; 2] = [Case::BigFrames, Case::SmallFrames];

    fn arg(self) -> &'static str {
        match self {
            Case::BigFrames => "big-frames",
            Case::SmallFrames => "small-frames",
        }
    }

    fn from_arg(arg: &str) -> Case {
        Case::ALL
            .into_iter()
            .find(|case| case.arg() == arg)
            .unwrap_or_else(|| panic!("unknown case {arg:?}: big-frames or small-frames"))
    }

    fn describe(self) -> &'static str {
        match self {
            Case::BigFrames => "64 frames of 1 KiB",
            Case::SmallFrames => "10000 small frames",
        }
    }
}

/// Set by a value's destructor on the overflowing stack, if it ever runs.
static DESTRUCTOR_RAN: AtomicBool = AtomicBool::new(false);

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        DESTRUCTOR_RAN.store(true, Ordering::SeqCst);
    }
}

// ANCHOR: child
/// The child: overflow one coroutine with may's default 32 KiB stack, then
/// say what `join` returned, if this process is still alive to say it.
fn overflow_in_this_process(case: Case) {
    // One worker: it ends the overflowed coroutine (and runs may's stack
    // check) before it runs any coroutine spawned after it.
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIMIT);
        eprintln!("the case ran longer than {CHILD_LIMIT:?}");
        std::process::exit(2);
    });
    let joined = go!(move || {
        let _guard = Guard; // dropped if the coroutine returns or unwinds
        match case {
            Case::BigFrames => big_frames(64),
            Case::SmallFrames => small_frames(10_000).into(),
        }
    })
    .join();
    // join() returns as soon as the coroutine is marked finished; may checks
    // its stack just after. Wait for that check before printing anything.
    go!(|| ()).join().unwrap();
    println!(
        "join returned {}; the destructor on the overflowed stack ran: {}",
        if joined.is_ok() { "Ok" } else { "Err" },
        DESTRUCTOR_RAN.load(Ordering::SeqCst)
    );
}
// ANCHOR_END: child

/// Print the child's lines about the overflow and how it exited.
fn report(case: Case, child: Output) {
    println!("{} on a 32 KiB stack:", case.describe());
    for line in String::from_utf8_lossy(&child.stderr).lines() {
        if line.contains("overflow") {
            println!("  stderr: {line}");
        }
    }
    for line in String::from_utf8_lossy(&child.stdout).lines() {
        if line.starts_with("join returned") {
            println!("  stdout: {line}");
        }
    }
    println!("  child process: {}", child.status);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE_VAR: &str = "PITFALL_STACK_OVERFLOW_CASE";

    /// The child side under `cargo test`: this test binary, started again by
    /// the tests below, runs only this test with the case in `CASE_VAR`.
    #[test]
    #[ignore = "started in a child process by the other tests"]
    fn child() {
        let case = std::env::var(CASE_VAR).expect("started by a test that names a case");
        overflow_in_this_process(Case::from_arg(&case));
    }

    fn in_child(case: Case) -> Output {
        Command::new(std::env::current_exe().unwrap())
            .args(["tests::child", "--exact", "--ignored", "--nocapture"])
            .env(CASE_VAR, case.arg())
            .output()
            .expect("the test binary starts")
    }

    fn stderr(child: &Output) -> String {
        String::from_utf8_lossy(&child.stderr).into_owned()
    }

    #[test]
    fn big_frames_hit_the_guard_page_and_the_process_lives_on() {
        let child = in_child(Case::BigFrames);
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(stderr(&child).contains("coroutine has overflowed its stack"));
        assert!(!stderr(&child).contains("stack overflow detected"));
        assert!(
            stdout.contains("join returned Err; the destructor on the overflowed stack ran: false"),
            "{stdout}"
        );
        assert!(child.status.success(), "{}", stderr(&child));
    }

    #[test]
    fn small_frames_overwrite_the_lowest_word_and_may_exits_the_process() {
        let child = in_child(Case::SmallFrames);
        assert!(stderr(&child).contains("stack overflow detected, size=4096"));
        assert!(!String::from_utf8_lossy(&child.stdout).contains("join returned"));
        assert_eq!(child.status.code(), Some(1), "{}", stderr(&child));
    }

    #[test]
    fn both_recursions_are_real_and_fit_a_larger_stack() {
        may_patterns::runtime::configure_for_tests();
        let handle = go!(
            may::coroutine::Builder::new().stack_size(0x4_0000), // 2 MiB
            || (big_frames(64), small_frames(10_000))
        )
        .unwrap();
        let expected: u64 = (1..=64u64).map(|d| d % 256).sum();
        assert_eq!(handle.join().unwrap(), (expected, 10_000));
    }
}
