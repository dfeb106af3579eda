//! End-to-end: the `load_balancer` program as a user runs it (debug build),
//! in front of may_patterns' backends running in this test process, driven
//! by curl and by plain sockets where the test needs exact bytes.
//!
//! Each test starts its own backends and balancer on ephemeral loopback
//! ports, with checks every 200 ms (`rise 2`, `fall 3`). That the admin
//! paths refuse a client from outside loopback cannot be shown on
//! loopback: the program's own unit tests check that decision.
//!
//! `.ci/run` installs curl (Debian package `curl`); without it the tests
//! fail and say so.

#[path = "support/mod.rs"]
mod support;

#[path = "load_balancer/backends.rs"]
mod backends;
#[path = "load_balancer/balancer.rs"]
mod balancer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backends::TestBackend;
use balancer::{Balancer, CHECK_INTERVAL, FALL, RISE, SLACK};

/// `n` backends named `b0`, `b1`, ...
fn backends(n: usize) -> Vec<TestBackend> {
    may_patterns::runtime::configure_for_tests();
    (0..n)
        .map(|i| TestBackend::start(&format!("b{i}")))
        .collect()
}

fn addrs(backends: &[TestBackend]) -> Vec<String> {
    backends.iter().map(|b| b.addr.to_string()).collect()
}

/// Wait until the balancer counts every backend up.
fn all_up(balancer: &Balancer, backends: &[TestBackend]) {
    for b in backends {
        balancer.wait_for_state(b.addr, "up", CHECK_INTERVAL * RISE + SLACK);
    }
}

fn search_urls(balancer: &Balancer, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| balancer.url(&format!("/search?q=item{i}")))
        .collect()
}

/// How many of `answers` each backend gave; every one must be a 200.
fn count_per_backend(answers: &[(u16, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (status, backend) in answers {
        assert_eq!(*status, 200, "{answers:?}");
        *counts.entry(backend.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_sends_each_backend_its_turn() {
    let backends = backends(3);
    let balancer = Balancer::start(&addrs(&backends), &["--algorithm", "round-robin"]);
    all_up(&balancer, &backends);
    let answers = curl_many(&balancer, 12);
    let order: Vec<&str> = answers.iter().map(|(_, b)| b.as_str()).collect();
    for window in order.windows(3) {
        let mut turn = window.to_vec();
        turn.sort_unstable();
        turn.dedup();
        assert_eq!(turn.len(), 3, "three in a row went to all three: {order:?}");
    }
    let counts = count_per_backend(&answers);
    assert_eq!(
        counts.values().collect::<Vec<_>>(),
        [&4, &4, &4],
        "{counts:?}"
    );
    for b in &backends {
        assert_eq!(balancer.backend(b.addr)["picks"], 4, "{}", b.name);
    }
    let lines = balancer.stop();
    let last = lines.last().expect("a summary is printed on Ctrl-C");
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(summary["failed"], 0, "{summary}");
    // The 12 forwarded, and the stats requests beside them.
    assert!(summary["requests"].as_u64() >= Some(12), "{summary}");
    let picks: Vec<_> = summary["backends"]
        .as_array()
        .expect("the backends in the summary")
        .iter()
        .map(|b| b["picks"].as_u64())
        .collect();
    assert_eq!(picks, [Some(4); 3], "{summary}");
}

fn curl_many(balancer: &Balancer, n: usize) -> Vec<(u16, String)> {
    balancer::curl_many(&search_urls(balancer, n))
}

#[test]
fn weights_three_to_one_give_three_requests_to_one() {
    let backends = backends(2);
    let weighted = [
        format!("{},weight=3", backends[0].addr),
        format!("{},weight=1", backends[1].addr),
    ];
    let balancer = Balancer::start(&weighted, &["--algorithm", "weighted"]);
    all_up(&balancer, &backends);
    let counts = count_per_backend(&curl_many(&balancer, 40));
    assert_eq!(counts.get("b0"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b1"), Some(&10), "{counts:?}");
}

#[test]
fn a_killed_backend_costs_no_request_goes_down_and_comes_back() {
    let mut backends = backends(3);
    let balancer = Balancer::start(&addrs(&backends), &["--retries", "1"]);
    all_up(&balancer, &backends);
    let victim = backends[0].addr;
    let addr = balancer.addr;
    let (answered, answers) = mpsc::channel();
    let load = std::thread::spawn(move || {
        (0..200)
            .map(|i| {
                let answer = balancer::request(addr, "GET", &format!("/search?q=n{i}"));
                let _ = answered.send(());
                answer
            })
            .collect::<Vec<_>>()
    });
    // A quarter of the loop before the kill, the rest during and after it.
    for _ in 0..50 {
        answers
            .recv_timeout(Duration::from_secs(10))
            .expect("the loop goes on");
    }
    backends[0].stop();
    let killed = Instant::now();
    // Requests answered by now, plus one that may have reached b0 before
    // its listener closed: every later one started after the close.
    let after_close = 50 + answers.try_iter().count() + 1;
    let results = load.join().unwrap();
    let failed: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {failed:?}",
        failed.len()
    );
    let late: Vec<_> = results[after_close.min(200)..]
        .iter()
        .filter(|(_, body)| balancer::backend_of(body) == "b0")
        .collect();
    assert!(late.is_empty(), "the stopped b0 still answered: {late:?}");
    let down_within = CHECK_INTERVAL * FALL + SLACK;
    balancer.wait_for_state(victim, "down", down_within.saturating_sub(killed.elapsed()));
    backends[0].restart();
    balancer.wait_for_state(victim, "up", CHECK_INTERVAL * RISE + SLACK);
    let counts = count_per_backend(&curl_many(&balancer, 6));
    assert_eq!(counts.get("b0"), Some(&2), "back in turn: {counts:?}");
}

#[test]
fn a_drained_backend_gets_no_new_requests_until_undrained() {
    let backends = backends(2);
    let balancer = Balancer::start(&addrs(&backends), &[]);
    all_up(&balancer, &backends);
    let drained: SocketAddr = backends[0].addr;
    let (status, body) = balancer::request(
        balancer.addr,
        "POST",
        &format!("/_lb/drain?backend={drained}"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(balancer.state(drained), "draining");
    let counts = count_per_backend(&curl_many(&balancer, 10));
    assert_eq!(counts.get("b0"), None, "{counts:?}");
    assert_eq!(counts.get("b1"), Some(&10), "{counts:?}");
    let (status, body) = balancer::request(
        balancer.addr,
        "POST",
        &format!("/_lb/undrain?backend={drained}"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(balancer.state(drained), "up");
    let counts = count_per_backend(&curl_many(&balancer, 10));
    assert_eq!(counts.get("b0"), Some(&5), "{counts:?}");
}

#[test]
fn with_no_backend_up_the_answer_is_503() {
    // Two addresses nothing listens on: bound, read, closed.
    let closed: Vec<SocketAddr> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let names: Vec<String> = closed.iter().map(SocketAddr::to_string).collect();
    let balancer = Balancer::start(&names, &[]);
    for &addr in &closed {
        balancer.wait_for_state(addr, "down", CHECK_INTERVAL * FALL + SLACK);
    }
    let (status, body) = balancer::request(balancer.addr, "GET", "/search?q=x");
    assert_eq!(status, 503, "{body}");
}

#[test]
fn the_connection_past_max_connections_gets_a_503_naming_the_flag() {
    use std::io::{BufRead, BufReader, Read, Write};
    let backends = backends(1);
    let balancer = Balancer::start(&addrs(&backends), &["--max-connections", "1"]);
    all_up(&balancer, &backends);
    // A keep-alive client that has had its answer holds the only slot. (The
    // slot of the last stats request may not be free yet: then this one is
    // refused, and tries again.)
    let (held, reader) = (0..50)
        .find_map(|_| {
            let held = std::net::TcpStream::connect(balancer.addr).unwrap();
            held.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            (&held)
                .write_all(b"GET /search?q=x HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut reader = BufReader::new(held.try_clone().unwrap());
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            if !status.starts_with("HTTP/1.1 200") {
                std::thread::sleep(Duration::from_millis(50));
                return None;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            Some((held, reader))
        })
        .expect("a slot came free within 50 tries");
    // The next client is refused at once, before it sends anything.
    let mut extra = std::net::TcpStream::connect(balancer.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    extra.read_to_string(&mut answer).unwrap();
    let (status, body) = balancer::parse_response(&answer)
        .unwrap_or_else(|| panic!("no response past the cap: {answer:?}"));
    assert_eq!(status, 503, "{answer}");
    assert!(body.contains("--max-connections"), "{answer}");
    assert!(
        answer.contains(&format!("Content-Length: {}", body.len())),
        "{answer}"
    );
    drop(reader);
    drop(held);
    let lines = balancer.stop();
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(summary["refused_full"].as_u64() >= Some(1), "{summary}");
}

#[test]
fn a_malformed_request_gets_400_and_reaches_no_backend() {
    let backends = backends(1);
    let balancer = Balancer::start(&addrs(&backends), &[]);
    all_up(&balancer, &backends);
    for bytes in [
        &b"GET /search?q=x HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"[..],
        b"GET /search?q=x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"NOT HTTP AT ALL\r\n\r\n",
    ] {
        let answer = balancer::exchange(balancer.addr, bytes);
        let (status, body) = balancer::parse_response(&answer)
            .unwrap_or_else(|| panic!("no response to {bytes:?}: {answer:?}"));
        assert_eq!(status, 400, "{bytes:?}: {answer}");
        assert_eq!(balancer::backend_of(&body), "", "{bytes:?} was forwarded");
    }
    assert_eq!(balancer.backend(backends[0].addr)["picks"], 0);
}
