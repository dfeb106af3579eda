//! Step 1: a round-robin balancer over three backends.
//!
//! Each client connection carries one request. The balancer reads its head
//! with the bounded HTTP layer, asks the pool for a backend, forwards the
//! request in origin form with the hop-by-hop headers removed, and streams
//! the answer back through a fixed buffer. Then it closes both connections
//! (the final program keeps them alive). That code is written once, for
//! every step: `steps_http.rs` reads and checks the request, sends it and
//! relays the answer; `steps_forward.rs` picks a backend and tries it once,
//! as steps 2 and 3 do too.
//!
//! The demo starts three backends and the balancer on loopback, sends six
//! GETs, and prints which backend answered each.

#[path = "steps_answers.rs"]
mod steps_answers;
#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_forward.rs"]
mod steps_forward;
#[path = "steps_http.rs"]
mod steps_http;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use may_patterns::balance::{Algorithm, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::runtime::{configure_once, Settings};
use steps_answers::answers;
use steps_common::start_backends;
use steps_forward::forward;
use steps_http::start_balancer;

// ANCHOR: demo
/// Three backends, a round-robin pool over them, six GETs in a row: who
/// answered each.
fn demo() -> io::Result<Vec<String>> {
    let ms = Duration::from_millis(1);
    let (_backends, configs) = start_backends(&[("alpha", ms), ("beta", ms), ("gamma", ms)])?;
    let config = PoolConfig {
        algorithm: Algorithm::RoundRobin,
        ..PoolConfig::default()
    };
    let pool = Pool::new(configs, config, Arc::new(MonotonicClock::new()));
    let balancer = start_balancer(pool, forward)?;
    answers(balancer.addr, 6)
}
// ANCHOR_END: demo

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    for (i, name) in demo().expect("the demo runs").iter().enumerate() {
        println!("GET {}: answered by {name}", i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::http::{self, Limits};
    use may_patterns::runtime::configure_for_tests;
    use std::io::BufReader;
    use std::net::SocketAddr;
    use steps_common::{fetch, Running};

    /// A balancer over the one backend at `addr`.
    fn balancer_over(addr: SocketAddr) -> Running {
        let configs = vec![may_patterns::balance::BackendConfig::new(addr)];
        let clock = Arc::new(MonotonicClock::new());
        start_balancer(Pool::new(configs, PoolConfig::default(), clock), forward).unwrap()
    }

    #[test]
    fn requests_go_to_each_backend_in_turn() {
        configure_for_tests();
        let answers = demo().unwrap();
        assert_eq!(
            answers,
            ["alpha", "beta", "gamma", "alpha", "beta", "gamma"]
        );
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop_and_a_bad_head_gets_400() {
        configure_for_tests();
        // A backend that echoes the head it received, so the test sees
        // what the balancer forwarded.
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = listener.local_addr().unwrap();
        let echo = may::go!(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let head = http::read_request_head(&mut reader, &Limits::default())
                .unwrap()
                .unwrap();
            let seen = format!("{} {} {:?}", head.method, head.target, head.headers);
            let mut stream = stream;
            http::write_response(&mut stream, 200, "OK", "text/plain", &[], seen.as_bytes())
                .unwrap();
        });
        let balancer = balancer_over(echo_addr);
        let mut client = may_patterns::net::connect(balancer.addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let extra = [
            ("Connection", "close, X-Secret"),
            ("X-Secret", "hop"),
            ("X-Kept", "1"),
        ];
        http::write_request(&mut client, "GET", "/a?b=c", "lb", &extra, b"").unwrap();
        let answer = http::read_response(&mut BufReader::new(client), &Limits::default()).unwrap();
        echo.join().unwrap();
        let seen = String::from_utf8(answer.body).unwrap();
        assert!(seen.starts_with("GET /a?b=c "), "{seen}");
        assert!(seen.contains("X-Kept"), "{seen}");
        assert!(!seen.contains("X-Secret"), "{seen}");
        assert!(seen.contains(r#"("Connection", "close")"#), "{seen}");

        let absolute = fetch(balancer.addr, "GET", "http://elsewhere/", b"").unwrap();
        assert_eq!(absolute.status, 400);
    }

    #[test]
    fn a_backend_that_refuses_connections_is_a_502() {
        configure_for_tests();
        // A port nobody listens on any more.
        let gone = may::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let balancer = balancer_over(gone);
        let answer = fetch(balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answer.status, 502);
    }
}
