//! End to end: run the finished `multi_stage_producer_consumer` program as a
//! user would, stop it with Ctrl-C (SIGINT) mid-run, and check that its JSON
//! report balances the books: read = written + rejected + abandoned.

use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::{build_examples, interrupt, wait_bounded};

#[test]
fn ctrl_c_stops_every_stage_and_the_books_balance() {
    let name = "multi_stage_producer_consumer";
    let mut child = Command::new(build_examples([name]).join(name))
        .args(["--items", "100000", "--bad-every", "7", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the program starts");
    std::thread::sleep(Duration::from_millis(400)); // let records flow
    interrupt(&child);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
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
    assert_eq!(report["conserved"], true, "{out}");
    assert!(n("read") > 0 && n("read") < 100_000, "{out}");
    assert!(n("rejected") > 0, "{out}");
    assert_eq!(
        n("read"),
        n("written") + n("rejected") + n("abandoned"),
        "{out}"
    );
}
