//! Step 4: passive health checks and one retry. Live traffic shows which
//! backend is failing: every lease now ends with `Lease::done(outcome)`,
//! and `fall` errors or timeouts in a row (HAProxy's default, 3) take the
//! backend out of the pool. The requests that met the failure need not
//! fail too: a GET that failed before any byte of its answer came back is
//! sent once more, to another backend. A POST is not: its body has been
//! streamed to the failed backend and is gone, and sending it twice could
//! do its work twice. It gets a `502`. This forwarding is in
//! `steps_retry.rs`, which steps 5 and 6 use too.
//!
//! The demo's pool has a backend that resets every connection. One POST
//! meets it (502); then 20 GETs all succeed, and the bad backend is down.

#[path = "steps_answers.rs"]
mod steps_answers;
#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_http.rs"]
mod steps_http;
#[path = "steps_retry.rs"]
mod steps_retry;

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use may_patterns::backend::Backend;
use may_patterns::balance::{BackendConfig, BackendStats, HealthRule, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::runtime::{configure_once, Settings};
use steps_answers::answers;
use steps_common::{fetch, start_backends, Running};
use steps_http::start_balancer;
use steps_retry::forward;

// ANCHOR: resetting
/// A backend that resets every connection: it reads the first byte of a
/// request and closes with the rest unread, so the kernel answers with a
/// reset, as when a backend's worker dies behind a listener still open.
fn start_resetting() -> io::Result<Running> {
    Running::start(|conn| {
        if let Ok((mut request, _)) = conn.split() {
            let _ = request.read(&mut [0u8; 1]);
        }
    })
}
// ANCHOR_END: resetting

/// The demo's balancer over `gamma` (resetting, first in the pool, so the
/// first request goes to it), `alpha` and `beta`; and a handle on its pool.
struct Demo {
    _backends: Vec<Backend>,
    _resetting: Running,
    pool: Pool,
    balancer: Running,
}

fn start() -> io::Result<Demo> {
    let ms = Duration::from_millis(1);
    let resetting = start_resetting()?;
    let (backends, good) = start_backends(&[("alpha", ms), ("beta", ms)])?;
    let mut configs = vec![BackendConfig {
        name: "gamma".into(),
        addr: resetting.addr,
        weight: 1,
    }];
    configs.extend(good);
    let pool = Pool::new(
        configs,
        PoolConfig::default(),
        Arc::new(MonotonicClock::new()),
    );
    let balancer = start_balancer(pool.clone(), forward)?;
    Ok(Demo {
        _backends: backends,
        _resetting: resetting,
        pool,
        balancer,
    })
}

/// The stats of the backend named `name`.
fn stats_of(pool: &Pool, name: &str) -> BackendStats {
    pool.stats()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a backend of that name")
}

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let demo = start().expect("the demo starts");
    let addr = demo.balancer.addr;
    let post = fetch(addr, "POST", "/search?q=lamp", b"order=1").expect("the POST");
    println!(
        "POST with a body, to gamma: {} {}",
        post.status, post.reason
    );
    let answers = answers(addr, 20).expect("20 GETs");
    let count = |name: &str| answers.iter().filter(|a| *a == name).count();
    let failed = answers.len() - count("alpha") - count("beta");
    println!(
        "20 GETs: alpha answered {}, beta {}, {failed} failed",
        count("alpha"),
        count("beta")
    );
    let gamma = stats_of(&demo.pool, "gamma");
    println!(
        "gamma: {}, after {} errors in {} picks (fall {})",
        gamma.state.as_str(),
        gamma.errors,
        gamma.picks,
        HealthRule::default().fall
    );
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::backend;
    use may_patterns::balance::Outcome;
    use may_patterns::runtime::configure_for_tests;
    use std::io::ErrorKind;
    use std::sync::atomic::Ordering;
    use steps_common::answered_by;
    use steps_retry::outcome_of;

    #[test]
    fn a_get_that_meets_a_reset_is_answered_by_another_backend() {
        configure_for_tests();
        let demo = start().unwrap();
        // The first pick is gamma, which resets.
        let answer = fetch(demo.balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answered_by(&answer), "alpha");
        let gamma = stats_of(&demo.pool, "gamma");
        assert_eq!((gamma.picks, gamma.errors), (1, 1));
    }

    #[test]
    fn a_post_with_a_body_is_not_sent_twice() {
        configure_for_tests();
        let demo = start().unwrap();
        let answer = fetch(demo.balancer.addr, "POST", "/search?q=x", b"pay=1").unwrap();
        assert_eq!(answer.status, 502);
        for backend in &demo._backends {
            assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 0);
        }
    }

    #[test]
    fn fall_errors_in_a_row_take_a_backend_down_and_it_gets_no_more_picks() {
        configure_for_tests();
        let demo = start().unwrap();
        for _ in 0..30 {
            let answer = fetch(demo.balancer.addr, "GET", "/search?q=x", b"").unwrap();
            assert_eq!(answer.status, 200);
        }
        let gamma = stats_of(&demo.pool, "gamma");
        assert_eq!(gamma.state.as_str(), "down");
        assert_eq!(gamma.picks, u64::from(HealthRule::default().fall));
    }

    #[test]
    fn a_5xx_is_relayed_and_counted_against_its_backend() {
        configure_for_tests();
        let mut config = backend::BackendConfig::new("broken", Duration::ZERO);
        config.fail_fraction = 1.0;
        let broken = Backend::start(config).unwrap();
        let configs = vec![BackendConfig::new(broken.addr)];
        let pool = Pool::new(
            configs,
            PoolConfig::default(),
            Arc::new(MonotonicClock::new()),
        );
        let balancer = start_balancer(pool.clone(), forward).unwrap();
        let fall = HealthRule::default().fall;
        for _ in 0..fall {
            let answer = fetch(balancer.addr, "GET", "/search?q=x", b"").unwrap();
            assert_eq!(answer.status, 500, "relayed as it came, not retried");
        }
        // The lease ends after its answer is relayed, so the last verdict
        // can land just after the client has read that answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.stats()[0].state.as_str() != "down" {
            assert!(
                std::time::Instant::now() < deadline,
                "still up after {fall} 5xx answers"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let answer = fetch(balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answer.status, 503);
    }

    #[test]
    fn timeouts_and_errors_are_told_apart() {
        let kind = |k| outcome_of(&io::Error::from(k));
        assert_eq!(kind(ErrorKind::TimedOut), Outcome::Timeout);
        assert_eq!(kind(ErrorKind::WouldBlock), Outcome::Timeout);
        assert_eq!(kind(ErrorKind::ConnectionReset), Outcome::Error);
        assert_eq!(kind(ErrorKind::ConnectionRefused), Outcome::Error);
    }
}
