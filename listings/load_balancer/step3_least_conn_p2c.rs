//! Step 3: pick by load, and measure it. One backend of four turns slow
//! (ten times the others' latency: a cold cache, a noisy neighbour, a
//! garbage-collection pause). Round-robin keeps giving it every fourth
//! request, and those requests wait. Least-connections sends each request
//! to the backend with the fewest in flight; power of two choices compares
//! two picked at random. Both see the slow backend's queue and send it
//! less. The forwarding code is step 1's, unchanged: only the algorithm
//! differs, and the lease, which counts each request in flight from the
//! pick to its end, is what they read.
//!
//! The demo runs the same load (32 clients, each sending a GET at a fixed
//! pace) through each algorithm and prints the slow backend's share and
//! the latency clients saw.

#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_forward.rs"]
mod steps_forward;
#[path = "steps_http.rs"]
mod steps_http;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::alarm;
use may_patterns::backend::Backend;
use may_patterns::balance::{Algorithm, BackendConfig, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::runtime::{configure_once, Settings};
use steps_common::{answered_by, fetch, start_backends};
use steps_forward::forward;
use steps_http::start_balancer;

/// The fast backends' latency; the slow one takes `SLOWDOWN` times it.
const FAST: Duration = Duration::from_millis(5);
const SLOWDOWN: u32 = 10;

// ANCHOR: measure
/// The same offered load for every algorithm: `clients` clients, each
/// sending `requests` GETs one after the other, one every `every`. (Clients
/// that sent the next request as soon as the last was answered would send
/// more under the faster algorithm, and the balancer's own CPU, not the
/// pick, would set the latency.)
#[derive(Clone, Copy)]
struct Load {
    clients: u32,
    requests: u32,
    every: Duration,
}

/// The demo's load: 32 clients, a request every 120 ms each (about 270 a
/// second in all: light enough for a debug build on a shared machine), for
/// about two seconds.
const LOAD: Load = Load {
    clients: 32,
    requests: 16,
    every: Duration::from_millis(120),
};

/// What clients saw through one algorithm.
struct Measured {
    /// Share of requests answered by the slow backend, 0 to 1.
    slow_share: f64,
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

/// Run `load` through a balancer using `algorithm` over `backends`, the
/// last of which is the slow one.
fn measure(algorithm: Algorithm, backends: &[BackendConfig], load: Load) -> io::Result<Measured> {
    let config = PoolConfig {
        algorithm,
        ..PoolConfig::default()
    };
    let pool = Pool::new(backends.to_vec(), config, Arc::new(MonotonicClock::new()));
    let balancer = start_balancer(pool, forward)?;
    let addr = balancer.addr;
    let start = Instant::now();
    let handles: Vec<_> = (0..load.clients)
        .map(|client| {
            // Clients start spread over one interval, not all at once.
            let first = start + load.every * client / load.clients;
            go!(move || -> io::Result<Vec<(String, Duration)>> {
                let mut seen = Vec::new();
                for k in 0..load.requests {
                    let due = first + load.every * k;
                    // The alarm thread's sleep: no may timer (src/alarm.rs).
                    alarm::shared().sleep(due.saturating_duration_since(Instant::now()));
                    let sent = Instant::now();
                    let answer = fetch(addr, "GET", "/search?q=lamp", b"")?;
                    seen.push((answered_by(&answer), sent.elapsed()));
                }
                Ok(seen)
            })
        })
        .collect();
    let mut seen = Vec::new();
    for handle in handles {
        seen.extend(handle.join().expect("a client coroutine panicked")?);
    }
    let slow = &backends.last().expect("at least one backend").name;
    let to_slow = seen.iter().filter(|(name, _)| name == slow).count();
    let mut latencies: Vec<Duration> = seen.iter().map(|&(_, took)| took).collect();
    latencies.sort();
    let at = |percent: usize| latencies[(latencies.len() * percent / 100).min(latencies.len() - 1)];
    let total: Duration = latencies.iter().sum();
    Ok(Measured {
        slow_share: to_slow as f64 / seen.len() as f64,
        mean: total / latencies.len() as u32,
        p50: at(50),
        p99: at(99),
    })
}
// ANCHOR_END: measure

/// Three fast backends and a slow one, last.
fn skewed_pool() -> io::Result<(Vec<Backend>, Vec<BackendConfig>)> {
    start_backends(&[
        ("alpha", FAST),
        ("beta", FAST),
        ("gamma", FAST),
        ("delta", FAST * SLOWDOWN),
    ])
}

const ALGORITHMS: [(Algorithm, &str); 3] = [
    (Algorithm::RoundRobin, "round-robin"),
    (Algorithm::LeastConnections, "least-connections"),
    (Algorithm::PowerOfTwo, "power of two"),
];

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (_backends, configs) = skewed_pool().expect("the backends start");
    println!(
        "4 backends, delta {SLOWDOWN}x slower ({:?} against {FAST:?}); {} clients, \
         a GET every {:?} each, {} GETs per algorithm",
        FAST * SLOWDOWN,
        LOAD.clients,
        LOAD.every,
        LOAD.clients * LOAD.requests
    );
    let mut shares = Vec::new();
    for (algorithm, label) in ALGORITHMS {
        let m = measure(algorithm, &configs, LOAD).expect("the load runs");
        println!(
            "{label:<17}: {:.1}% to delta, mean {:.1?}, p50 {:.1?}, p99 {:.1?}",
            100.0 * m.slow_share,
            m.mean,
            m.p50,
            m.p99
        );
        shares.push(m.slow_share);
    }
    assert!(
        shares[1] < shares[0] && shares[2] < shares[0],
        "load-aware picks should send the slow backend less: {shares:?}"
    );
    println!("least-connections and power of two sent delta less than round-robin did");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn round_robin_gives_the_slow_backend_its_turn_and_load_aware_picks_do_not() {
        configure_for_tests();
        let (_backends, configs) = skewed_pool().unwrap();
        let load = Load {
            clients: 16,
            requests: 10,
            every: Duration::from_millis(30),
        };
        let rr = measure(Algorithm::RoundRobin, &configs, load).unwrap();
        // Every fourth pick, whatever the backend is doing.
        assert_eq!(rr.slow_share, 0.25);
        for algorithm in [Algorithm::LeastConnections, Algorithm::PowerOfTwo] {
            let m = measure(algorithm, &configs, load).unwrap();
            assert!(
                m.slow_share < rr.slow_share,
                "{algorithm:?}: {}",
                m.slow_share
            );
        }
    }

    #[test]
    fn percentiles_come_from_every_request() {
        configure_for_tests();
        let (_backends, configs) = start_backends(&[("alpha", FAST)]).unwrap();
        let load = Load {
            clients: 2,
            requests: 5,
            every: FAST,
        };
        let m = measure(Algorithm::LeastConnections, &configs, load).unwrap();
        // One backend, and it is the "slow" (last) one: all of them.
        assert_eq!(m.slow_share, 1.0);
        assert!(m.p50 >= FAST, "{:?}", m.p50);
        assert!(m.p50 <= m.p99, "{:?} {:?}", m.p50, m.p99);
        assert!(m.mean >= FAST && m.mean <= m.p99, "{:?}", m.mean);
    }
}
