//! The bench's load: `wrk -t2 -c50 -d10s --latency`, and what its summary
//! says.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WRK: &str = "/usr/bin/wrk";

/// The command line, as the tables quote it.
pub const COMMAND: &str = "wrk -t2 -c50 -d10s --latency http://BALANCER/1k";

/// What one wrk run printed.
pub struct Wrk {
    pub requests: u64,
    pub seconds: f64,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// `Socket errors:` connect + read + write + timeout.
    pub socket_errors: u64,
    /// `Non-2xx or 3xx responses:`.
    pub non_2xx: u64,
}

impl Wrk {
    /// Requests that did not get a good answer.
    pub fn failed(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

pub fn require() {
    assert!(
        std::path::Path::new(WRK).exists(),
        "{WRK} is missing: apt-get install -y wrk (the load-balancer bench's load tool)"
    );
}

/// Start wrk for `seconds` against `url`; [`finish`] reads its summary.
pub fn start(url: &str, seconds: u32) -> Child {
    Command::new(WRK)
        .args(["-t2", "-c50", &format!("-d{seconds}s"), "--latency", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk starts")
}

/// Wait for a [`start`]ed wrk and parse its summary.
pub fn finish(wrk: Child) -> Wrk {
    let out = wrk.wait_with_output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

/// `start` then `finish`.
pub fn run(url: &str, seconds: u32) -> Wrk {
    finish(start(url, seconds))
}

fn parse(text: &str) -> Wrk {
    let mut wrk = Wrk {
        requests: 0,
        seconds: 0.0,
        per_sec: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        socket_errors: 0,
        non_2xx: 0,
    };
    let mut seen = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [n, "requests", "in", secs, ..] => {
                wrk.requests = n.parse().unwrap();
                wrk.seconds = secs
                    .trim_end_matches(",")
                    .trim_end_matches('s')
                    .parse()
                    .unwrap();
                seen += 1;
            }
            ["Requests/sec:", n] => (wrk.per_sec, seen) = (n.parse().unwrap(), seen + 1),
            ["50%", t] => (wrk.p50, seen) = (duration(t), seen + 1),
            ["99%", t] => (wrk.p99, seen) = (duration(t), seen + 1),
            // `Socket errors: connect 0, read 3, write 0, timeout 0`
            ["Socket", "errors:", ref counts @ ..] => {
                wrk.socket_errors = counts
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => wrk.non_2xx = n.parse().unwrap(),
            _ => {}
        }
    }
    assert_eq!(seen, 4, "unexpected wrk output: {text}");
    wrk
}

/// wrk's `812.00us`, `1.23ms`, `2.01s`.
fn duration(text: &str) -> Duration {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap();
    let secs = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        other => panic!("unknown wrk unit {other} in {text}"),
    };
    Duration::from_secs_f64(secs)
}
