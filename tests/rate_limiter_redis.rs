//! Step 10 of the rate-limiting chapter as a user runs it: three processes
//! against one redis-server share one limit. The step's own tests cover the
//! client (the script against the in-process GCRA, a killed or stalled
//! Redis, replies of the wrong shape); here the processes are real.
//! Needs redis-server (Debian's `redis-server`; `.ci/run` installs it).

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

const STEP: &str = "step10_redis_gcra";

/// The number after the `~` that follows `label` in `line`.
fn measured(line: &str, label: &str) -> u64 {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {line:?}"))
        + label.len()..];
    let digits: String = rest
        .trim_start_matches([' ', '~'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {label:?} in {line:?}"))
}

#[test]
fn three_processes_on_one_key_are_admitted_one_quota_not_three() {
    let examples = support::build_examples([STEP]);
    let out = support::output_bounded(
        &mut Command::new(examples.join(STEP)),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{STEP} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let per_process: Vec<u64> = lines
        .iter()
        .filter(|l| l.starts_with("process "))
        .map(|l| measured(l, ":"))
        .collect();
    assert_eq!(per_process.len(), 3, "{stdout}");
    assert!(
        per_process.iter().all(|&n| n > 0),
        "every process got some: {per_process:?}"
    );
    let together = lines
        .iter()
        .find(|l| l.starts_with("together:"))
        .expect("a total");
    let (admitted, allowed) = (
        measured(together, "together:"),
        measured(together, "at most"),
    );
    assert_eq!(per_process.iter().sum::<u64>(), admitted);
    // 100 per second, burst 10, for a run of at least 1 s: at most the
    // quota over the run (the program's bound), and far from three times it;
    // at least the burst and 70% of the rate (loose, for a busy machine).
    assert!(admitted <= allowed, "{together}");
    assert!(
        admitted >= 80,
        "the limit was shared, but hardly used: {together}"
    );
    assert!(
        stdout.contains("within the quota: true; failed decisions: 0"),
        "{stdout}"
    );
}

#[test]
fn a_process_whose_redis_is_not_there_says_so_and_exits() {
    let examples = support::build_examples([STEP]);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = support::output_bounded(
        Command::new(examples.join(STEP)).args(["--hammer", &free.to_string(), "1000"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("{STEP}: redis at {free}: connecting: Connection refused (os error 111)")
    );
    let out = support::output_bounded(
        Command::new(examples.join(STEP)).args(["--hammer", "nowhere", "1000"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("address \"nowhere\""),
        "{out:?}"
    );
}
