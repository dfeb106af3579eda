//! Checked, not a bug: does a second stack overflow end the process?
//!
//! Notes taken while writing this book said that, with may 0.3.51, a second
//! coroutine stack overflow in one process ended it. This listing tests the
//! claim: a child process overflows several coroutines, one after another,
//! each by deep recursion with 1 KiB frames on a 32 KiB stack, which runs
//! into the stack's guard page. generator 0.8.12's signal handler reports
//! each one (src/stack/overflow_unix.rs:32-72) and may hands `join` an
//! error. The child then checks the sentinel words at the bottom of the
//! stack (may-0.3.51 src/coroutine_impl.rs:64-70); these frames jump past
//! them, so it lives on. The other outcome, a stack whose bottom words were
//! overwritten, ends the process at the first overflow: the primer shows
//! both.
//!
//! Run it: `cargo run --example pitfall_overflow_twice`, or
//! `cargo run --example pitfall_overflow_twice -- --overflows 10`.

use std::hint::black_box;
use std::process::Command;

use clap::Parser;
use may::coroutine::Builder;
use may::go;

/// Overflow several coroutine stacks in one child process.
#[derive(Parser)]
struct Args {
    /// Overflows, one after another, in one child process.
    #[arg(long, default_value_t = 3)]
    overflows: u32,
}

/// Set in the child: how many coroutines to overflow.
const CHILD: &str = "PITFALL_OVERFLOW_TWICE_CHILD";

fn main() {
    if let Some(n) = std::env::var_os(CHILD) {
        return overflow_in_turn(n.to_string_lossy().parse().unwrap());
    }
    let overflows = Args::parse().overflows;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("{overflows} overflows, one after another, in one child process ({build} build):");
    let seen = run_child(overflows);
    println!(
        "  \"coroutine has overflowed its stack\" printed {} times",
        seen.reported
    );
    println!("  join returned an error {} times", seen.joins_failed);
    println!("  the child ended with {}", seen.status);
}

// ANCHOR: child
/// What the parent saw of the child.
struct Seen {
    reported: usize,
    joins_failed: usize,
    status: std::process::ExitStatus,
}

/// Run `overflow_in_turn(overflows)` in a child process (under `cargo test`,
/// the test binary's `child` test) and read what it printed.
fn run_child(overflows: u32) -> Seen {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD, overflows.to_string());
    if cfg!(test) {
        command.args(["tests::child", "--exact", "--ignored", "--nocapture"]);
    }
    let out = command.output().expect("the listing can start itself");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    Seen {
        reported: stderr.matches("coroutine has overflowed its stack").count(),
        joins_failed: stdout.matches("join failed").count(),
        status: out.status,
    }
}

/// In the child: overflow `n` coroutines, one after another.
fn overflow_in_turn(n: u32) {
    may::config().set_workers(2);
    for _ in 0..n {
        let coroutine = go!(Builder::new().stack_size(0x1000), || recurse(64)).unwrap();
        if coroutine.join().is_err() {
            println!("join failed");
        }
    }
}

/// Recurse `depth` times, each frame holding a 1 KiB buffer: 64 frames need
/// more than 64 KiB.
fn recurse(depth: u32) -> u64 {
    let buffer = black_box([depth as u8; 1024]);
    if depth == 0 {
        return buffer[0] as u64;
    }
    buffer[1023] as u64 + recurse(depth - 1)
}
// ANCHOR_END: child

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a test: the body of the child process the other test starts.
    #[test]
    #[ignore = "run by the other test as a child process"]
    fn child() {
        overflow_in_turn(std::env::var(CHILD).unwrap().parse().unwrap());
    }

    #[test]
    fn a_process_survives_several_guard_page_overflows() {
        let seen = run_child(3);
        assert_eq!((seen.reported, seen.joins_failed), (3, 3));
        assert!(seen.status.success(), "{}", seen.status);
    }
}
