//! Step 6: draining and stats. To take a backend out for a deploy, an
//! operator drains it: it gets no new requests, and the ones in flight
//! finish. The balancer now answers two paths of its own, before any
//! backend is picked: `POST /_lb/drain?backend=NAME` (and `/_lb/undrain`)
//! and `GET /_lb/stats`, the pool's counters as JSON
//! (`balance::to_json`). They change the pool, so only a client on
//! loopback may use them. The forwarding code is step 4's; the checker of
//! step 5 is left out, so the stats print the same on every run (its check
//! counts grow with time).
//!
//! The demo starts a slow request on alpha, drains alpha while it is in
//! flight, sends more requests (all to beta), and prints the stats before
//! and after the slow request ends.

#[path = "steps_answers.rs"]
mod steps_answers;
#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_http.rs"]
mod steps_http;
#[path = "steps_retry.rs"]
mod steps_retry;

use std::io::{self, ErrorKind, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::alarm;
use may_patterns::backend::Backend;
use may_patterns::balance::{self, BackendStats, Pool, PoolConfig};
use may_patterns::clock::ManualClock;
use may_patterns::http;
use may_patterns::runtime::{configure_once, Settings};
use steps_answers::answers;
use steps_common::{answered_by, fetch, start_backends, Running};
use steps_http::{refuse, start_balancer, Request};
use steps_retry::forward;

// ANCHOR: handle
/// The balancer's own paths first, then forwarding as in step 4.
fn admin_or_forward(pool: &Pool, mut request: Request) -> io::Result<()> {
    if request.head.target.starts_with(ADMIN) {
        let out = &mut request.client_out;
        if !request.client_in.get_ref().peer().ip().is_loopback() {
            let why = "the balancer's own paths answer loopback clients only";
            return refuse(out, 403, "Forbidden", why);
        }
        return admin(&request.head, pool, out);
    }
    forward(pool, request)
}
// ANCHOR_END: handle

/// The prefix of the balancer's own paths; no backend sees them.
const ADMIN: &str = "/_lb/";
/// Every answer ends its connection, as forwarded ones do.
const CLOSE: [(&str, &str); 1] = [("Connection", "close")];

// ANCHOR: admin
/// `GET /_lb/stats`, `POST /_lb/drain?backend=NAME`, `POST
/// /_lb/undrain?backend=NAME`.
fn admin(head: &http::RequestHead, pool: &Pool, client: &mut impl Write) -> io::Result<()> {
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let action = &path[ADMIN.len()..];
    match (head.method.as_str(), action) {
        ("GET", "stats") => {
            let json = balance::to_json(&pool.stats());
            http::write_response(
                client,
                200,
                "OK",
                "application/json",
                &CLOSE,
                json.as_bytes(),
            )
        }
        ("POST", "drain" | "undrain") => {
            let Some(name) = query.strip_prefix("backend=") else {
                return refuse(client, 400, "Bad Request", "expected ?backend=NAME");
            };
            let Some(backend) = pool.stats().into_iter().find(|s| s.name == name) else {
                return refuse(
                    client,
                    404,
                    "Not Found",
                    &format!("no backend named {name:?}"),
                );
            };
            let what = match action {
                "drain" => {
                    pool.drain(backend.addr);
                    format!("{name}: draining, {} in flight", backend.in_flight)
                }
                _ => {
                    pool.undrain(backend.addr);
                    format!("{name}: taking new requests")
                }
            };
            let body = format!("{what}\n");
            http::write_response(client, 200, "OK", "text/plain", &CLOSE, body.as_bytes())
        }
        (_, "stats" | "drain" | "undrain") => refuse(
            client,
            405,
            "Method Not Allowed",
            "stats takes GET, drain and undrain POST",
        ),
        _ => refuse(
            client,
            404,
            "Not Found",
            "the balancer's paths: stats, drain, undrain",
        ),
    }
}
// ANCHOR_END: admin

/// How long the request in flight during the drain takes.
const SLOW: Duration = Duration::from_millis(500);
/// How long the demo waits for a state before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The demo's pieces: a slow alpha, a fast beta, the pool, the balancer.
/// The pool's clock is a `ManualClock` that never moves, so the stats'
/// `last_change_ms` prints the same every run.
struct Demo {
    _backends: Vec<Backend>,
    pool: Pool,
    balancer: Running,
}

fn start() -> io::Result<Demo> {
    let (backends, configs) =
        start_backends(&[("alpha", SLOW), ("beta", Duration::from_millis(1))])?;
    let pool = Pool::new(configs, PoolConfig::default(), Arc::new(ManualClock::new()));
    let balancer = start_balancer(pool.clone(), admin_or_forward)?;
    Ok(Demo {
        _backends: backends,
        pool,
        balancer,
    })
}

/// Probe the pool every few milliseconds until `done` holds for it.
fn wait_until(pool: &Pool, what: &str, done: impl Fn(&[BackendStats]) -> bool) -> io::Result<()> {
    let start = Instant::now();
    while !done(&pool.stats()) {
        if start.elapsed() > PATIENCE {
            let why = format!("not within {PATIENCE:?}: {what}");
            return Err(io::Error::new(ErrorKind::TimedOut, why));
        }
        alarm::shared().sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// An answer's body as text, without its last newline.
fn text(answer: &http::Response) -> String {
    String::from_utf8_lossy(&answer.body).trim_end().to_owned()
}

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let demo = start().expect("the demo starts");
    let addr = demo.balancer.addr;
    // Round-robin's first pick is alpha, which takes `SLOW` to answer.
    let slow = go!(move || fetch(addr, "GET", "/search?q=lamp", b""));
    wait_until(&demo.pool, "alpha has a request in flight", |s| {
        s[0].in_flight == 1
    })
    .expect("the slow request starts");
    let drained = fetch(addr, "POST", "/_lb/drain?backend=alpha", b"").expect("drain");
    println!(
        "POST /_lb/drain?backend=alpha: {} {}",
        drained.status,
        text(&drained)
    );
    let stats = fetch(addr, "GET", "/_lb/stats", b"").expect("stats");
    println!("GET /_lb/stats: {}", text(&stats));
    let seen = answers(addr, 4).expect("4 GETs");
    println!("4 GETs while alpha drains: {}", seen.join(" "));
    let slow = slow.join().expect("the slow client").expect("the slow GET");
    println!(
        "the GET in flight on alpha: {} from {}",
        slow.status,
        answered_by(&slow)
    );
    let stats = fetch(addr, "GET", "/_lb/stats", b"").expect("stats");
    println!("GET /_lb/stats: {}", text(&stats));
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_drained_backend_finishes_its_request_and_gets_no_new_one_until_undrained() {
        configure_for_tests();
        let demo = start().unwrap();
        let addr = demo.balancer.addr;
        let slow = go!(move || fetch(addr, "GET", "/search?q=x", b""));
        wait_until(&demo.pool, "in flight", |s| s[0].in_flight == 1).unwrap();
        let drained = fetch(addr, "POST", "/_lb/drain?backend=alpha", b"").unwrap();
        assert_eq!(drained.status, 200);
        for _ in 0..5 {
            let answer = fetch(addr, "GET", "/search?q=x", b"").unwrap();
            assert_eq!(answered_by(&answer), "beta");
        }
        let slow = slow.join().unwrap().unwrap();
        assert_eq!(
            answered_by(&slow),
            "alpha",
            "the request in flight finished"
        );
        let undrained = fetch(addr, "POST", "/_lb/undrain?backend=alpha", b"").unwrap();
        assert_eq!(undrained.status, 200);
        let picks = |name: &str| {
            demo.pool
                .stats()
                .into_iter()
                .find(|s| s.name == name)
                .unwrap()
        };
        let before = picks("alpha").picks;
        for _ in 0..2 {
            fetch(addr, "GET", "/search?q=x", b"").unwrap();
        }
        assert_eq!(
            picks("alpha").picks,
            before + 1,
            "alpha takes its turns again"
        );
    }

    #[test]
    fn stats_are_the_pools_counters_as_json() {
        configure_for_tests();
        let demo = start().unwrap();
        let addr = demo.balancer.addr;
        fetch(addr, "POST", "/_lb/drain?backend=beta", b"").unwrap();
        let answer = fetch(addr, "GET", "/_lb/stats", b"").unwrap();
        assert_eq!(answer.status, 200);
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        let backends = json.as_array().unwrap();
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0]["name"], "alpha");
        assert_eq!(backends[0]["state"], "up");
        assert_eq!(backends[1]["state"], "draining");
        assert_eq!(
            backends[1]["picks"], 0,
            "the balancer's own paths pick no backend"
        );
    }

    #[test]
    fn bad_admin_requests_are_told_what_is_wrong() {
        configure_for_tests();
        let demo = start().unwrap();
        let addr = demo.balancer.addr;
        let status = |method: &str, target: &str| fetch(addr, method, target, b"").unwrap().status;
        assert_eq!(status("POST", "/_lb/drain?backend=nobody"), 404);
        assert_eq!(status("POST", "/_lb/drain"), 400);
        assert_eq!(status("GET", "/_lb/drain?backend=alpha"), 405);
        assert_eq!(status("POST", "/_lb/stats"), 405);
        assert_eq!(status("GET", "/_lb/other"), 404);
        // None of them reached a backend or changed the pool.
        assert!(demo
            .pool
            .stats()
            .iter()
            .all(|s| s.picks == 0 && s.state.as_str() == "up"));
    }
}
