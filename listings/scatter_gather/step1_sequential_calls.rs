//! Step 1: ask every backend, one after another, and merge what they say.
//! The query takes the sum of every backend's latency.

use std::io::BufReader;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::http::{self, Limits};
use may_patterns::runtime::{configure_once, Settings};
use serde::Deserialize;

// ANCHOR: call
/// One offer, as a backend's JSON has it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Offer {
    sku: String,
    shop: String,
    price_cents: u64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    offers: Vec<Offer>,
}

/// `GET /search?q=QUERY` on one backend; every step of it bounded by `timeout`.
fn call(addr: SocketAddr, query: &str, timeout: Duration) -> Result<Vec<Offer>, String> {
    let mut stream =
        may_patterns::net::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let target = format!("/search?q={query}");
    http::write_request(&mut stream, "GET", &target, &addr.to_string(), &[], b"")
        .map_err(|e| format!("send: {e}"))?;
    let response = http::read_response(&mut BufReader::new(stream), &Limits::default())
        .map_err(|e| format!("receive: {e}"))?;
    if response.status != 200 {
        return Err(format!("HTTP {} {}", response.status, response.reason));
    }
    let answer: Answer =
        serde_json::from_slice(&response.body).map_err(|e| format!("JSON: {e}"))?;
    Ok(answer.offers)
}
// ANCHOR_END: call

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    // Four shops on loopback, answering in 10, 20, 30 and 40 ms.
    let backends: Vec<Backend> = (1..=4)
        .map(|i| {
            let config = BackendConfig::new(&format!("shop{i}"), Duration::from_millis(10 * i));
            Backend::start(config).expect("a backend starts")
        })
        .collect();
    let started = Instant::now();
    let mut offers = Vec::new();
    for backend in &backends {
        match call(backend.addr, "lamp", Duration::from_secs(1)) {
            Ok(found) => offers.extend(found),
            Err(e) => println!("{}: {e}", backend.addr),
        }
    }
    println!(
        "{} offers from {} backends, one after another: {:.1?}",
        offers.len(),
        backends.len(),
        started.elapsed()
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_call_returns_the_backends_offers_and_reports_failures() {
        configure_for_tests();
        let ok = Backend::start(BackendConfig::new("ok", Duration::from_millis(1))).unwrap();
        let mut failing = BackendConfig::new("bad", Duration::from_millis(1));
        failing.fail_fraction = 1.0;
        let bad = Backend::start(failing).unwrap();
        let (a, b) = (ok.addr, bad.addr);
        let (offers, error) = may::go!(move || {
            let t = Duration::from_secs(2);
            (call(a, "desk", t).unwrap(), call(b, "desk", t).unwrap_err())
        })
        .join()
        .unwrap();
        assert_eq!(offers.len(), 3);
        assert!(offers
            .iter()
            .all(|o| o.shop == "ok" && o.sku.starts_with("desk-")));
        assert_eq!(error, "HTTP 500 Internal Server Error");
    }

    #[test]
    fn a_backend_that_does_not_answer_in_time_is_an_error() {
        configure_for_tests();
        let mut hanging = BackendConfig::new("hang", Duration::ZERO);
        hanging.hang = true;
        let backend = Backend::start(hanging).unwrap();
        let addr = backend.addr;
        let started = Instant::now();
        let error = may::go!(move || call(addr, "x", Duration::from_millis(50)).unwrap_err())
            .join()
            .unwrap();
        assert!(error.starts_with("receive:"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
