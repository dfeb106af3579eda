//! End to end: run the finished `producer_consumer_bounded` program as a user
//! would, stop it with Ctrl-C (SIGINT) in the middle of a long run, and check
//! that its JSON report accounts for every item.

use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::{build_examples, interrupt, wait_bounded};

#[test]
fn ctrl_c_stops_the_run_and_every_item_is_accounted_for() {
    let binary = build_examples(["producer_consumer_bounded"]).join("producer_consumer_bounded");
    let items: u64 = 1_000_000; // far more than it can do before the signal
    let mut child = Command::new(binary)
        .args(["--items", &items.to_string(), "--consume-us", "1000"])
        .args(["--capacity", "8", "--drain-ms", "0", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the program starts");
    // Give it time to install the Ctrl-C handler and fill the buffer.
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");

    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {out}"))
    };
    assert_eq!(report["stopped_early"], true, "{out}");
    assert!(n("consumed") > 0, "{out}");
    assert_eq!(n("produced"), n("consumed") + n("abandoned"), "{out}");
    assert_eq!(n("produced") + n("shed") + n("not_started"), items, "{out}");
    assert!(n("max_queue_depth") <= 8, "{out}");
}
