//! Step 5: active health checks and slow start. Passive checks only take
//! a backend out; nothing brings it back, since a down backend gets no
//! traffic to show it has recovered. Now a checker coroutine
//! (`may_patterns::balance::spawn_checker`, HAProxy's `option httpchk`)
//! asks every backend for a path every interval: `fall` failed checks in a
//! row take it down, `rise` passed ones bring it back. A backend that comes
//! back starts at weight 1, and its weight grows to the configured one over
//! the slow-start window, so its cold caches get a share of traffic that
//! grows with them. The forwarding code is step 4's, unchanged.
//!
//! The demo kills a backend and starts it again on the same address, and
//! prints what the pool did. It moves the pool's clock by hand
//! (`ManualClock`) to show the ramp, so its output is the same every run;
//! the checker runs on real time.

#[path = "steps_answers.rs"]
mod steps_answers;
#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_http.rs"]
mod steps_http;
#[path = "steps_retry.rs"]
mod steps_retry;

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::go;
use may::net::TcpListener;
use may_patterns::alarm;
use may_patterns::backend;
use may_patterns::balance::{
    spawn_checker, Algorithm, BackendConfig, BackendStats, CheckConfig, HealthRule, Pool,
    PoolConfig, State,
};
use may_patterns::clock::ManualClock;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;
use steps_answers::answers;
use steps_common::{start_backends, Running};
use steps_http::start_balancer;
use steps_retry::forward;

/// How often the demo's checker checks, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long the demo waits for a state before it fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// The demo pool's slow-start window, and the weight of both backends.
const SLOW_START: Duration = Duration::from_secs(10);
const WEIGHT: u32 = 4;

// ANCHOR: restartable
/// A scripted backend that can be stopped and started again on the same
/// address, as a process restarted by its supervisor is.
struct Restartable {
    name: &'static str,
    addr: SocketAddr,
    running: Option<(Shutdown, JoinHandle<io::Result<()>>)>,
}

impl Restartable {
    fn start(name: &'static str, addr: SocketAddr) -> io::Result<Restartable> {
        let mut backend = Restartable {
            name,
            addr,
            running: None,
        };
        backend.restart()?;
        Ok(backend)
    }

    /// Listen on the address again and serve.
    fn restart(&mut self) -> io::Result<()> {
        let listener = TcpListener::bind(self.addr)?;
        self.addr = listener.local_addr()?; // the port, if it was 0
        let shutdown = Shutdown::new();
        let (stop, name) = (shutdown.clone(), self.name);
        let serving = go!(move || {
            let config = backend::BackendConfig::new(name, Duration::from_millis(1));
            backend::serve(listener, stop, config, Default::default())
        });
        self.running = Some((shutdown, serving));
        Ok(())
    }

    /// Stop: close the listener, so connects are refused.
    fn kill(&mut self) {
        if let Some((shutdown, serving)) = self.running.take() {
            shutdown.trigger();
            let _ = serving.join();
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.kill();
    }
}
// ANCHOR_END: restartable

/// The stats of the backend named `name`.
fn stats_of(pool: &Pool, name: &str) -> BackendStats {
    pool.stats()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a backend of that name")
}

/// Probe the pool every few milliseconds until `name` is in `state`.
fn wait_for(pool: &Pool, name: &str, state: State) -> io::Result<()> {
    let start = Instant::now();
    while stats_of(pool, name).state != state {
        if start.elapsed() > PATIENCE {
            let why = format!("{name} was not {} within {PATIENCE:?}", state.as_str());
            return Err(io::Error::new(ErrorKind::TimedOut, why));
        }
        alarm::shared().sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// How many of `answers` came from `name`.
fn count(answers: &[String], name: &str) -> usize {
    answers.iter().filter(|a| *a == name).count()
}

/// The demo's pieces: the backends, the pool and its clock, the checker,
/// the balancer.
struct Demo {
    /// alpha stops when dropped.
    _alpha: Vec<backend::Backend>,
    beta: Restartable,
    pool: Arc<Pool>,
    clock: ManualClock,
    checker: Option<(Shutdown, JoinHandle<()>)>,
    balancer: Running,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some((shutdown, checker)) = self.checker.take() {
            shutdown.trigger();
            let _ = checker.join();
        }
    }
}

// ANCHOR: start
fn start() -> io::Result<Demo> {
    let (alpha, mut configs) = start_backends(&[("alpha", Duration::from_millis(1))])?;
    let beta = Restartable::start("beta", SocketAddr::from(([127, 0, 0, 1], 0)))?;
    configs.push(BackendConfig {
        name: beta.name.into(),
        addr: beta.addr,
        weight: 1,
    });
    for config in &mut configs {
        config.weight = WEIGHT;
    }
    let clock = ManualClock::new();
    let config = PoolConfig {
        algorithm: Algorithm::Weighted,
        rule: HealthRule { rise: 2, fall: 3 },
        slow_start: SLOW_START,
        ..PoolConfig::default()
    };
    let pool = Arc::new(Pool::new(configs, config, Arc::new(clock.clone())));
    let checks = CheckConfig {
        interval: CHECK_EVERY,
        timeout: CHECK_EVERY,
        // The scripted backend answers searches only.
        path: "/search?q=health".into(),
    };
    let stop_checks = Shutdown::new();
    let checker = spawn_checker(pool.clone(), checks, stop_checks.clone());
    let balancer = start_balancer(Pool::clone(&pool), forward)?;
    Ok(Demo {
        _alpha: alpha,
        beta,
        pool,
        clock,
        checker: Some((stop_checks, checker)),
        balancer,
    })
}
// ANCHOR_END: start

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let mut demo = start().expect("the demo starts");
    let (addr, rule) = (demo.balancer.addr, HealthRule { rise: 2, fall: 3 });
    println!(
        "checks every {CHECK_EVERY:?}, rise {}, fall {}",
        rule.rise, rule.fall
    );
    demo.beta.kill();
    println!("beta killed");
    wait_for(&demo.pool, "beta", State::Down).expect("beta goes down");
    println!("beta down after {} failed checks in a row", rule.fall);
    let seen = answers(addr, 6).expect("GETs");
    println!(
        "6 GETs: alpha {}, beta {}",
        count(&seen, "alpha"),
        count(&seen, "beta")
    );
    demo.beta.restart().expect("beta listens again");
    println!("beta restarted on the same address");
    wait_for(&demo.pool, "beta", State::Up).expect("beta comes back");
    println!("beta up after {} passed checks in a row", rule.rise);
    println!("slow start over {SLOW_START:?} (the pool's clock moved by hand):");
    for _ in 0..5 {
        let beta = stats_of(&demo.pool, "beta");
        let seen = answers(addr, 20).expect("GETs");
        println!(
            "  weight {} of {WEIGHT}: 20 GETs, alpha {}, beta {}",
            beta.effective_weight,
            count(&seen, "alpha"),
            count(&seen, "beta")
        );
        demo.clock.advance(SLOW_START / 4);
    }
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use steps_common::fetch;

    #[test]
    fn a_killed_backend_goes_down_and_comes_back_after_checks_alone() {
        configure_for_tests();
        let mut demo = start().unwrap();
        demo.beta.kill();
        wait_for(&demo.pool, "beta", State::Down).unwrap();
        let down = stats_of(&demo.pool, "beta");
        assert!(down.checks_failed >= 3, "{down:?}");
        // No live request reached it: the checks alone took it down.
        assert_eq!(down.errors, 0, "{down:?}");
        demo.beta.restart().unwrap();
        wait_for(&demo.pool, "beta", State::Up).unwrap();
        assert!(stats_of(&demo.pool, "beta").checks_passed >= 2);
    }

    #[test]
    fn a_backend_back_up_ramps_from_weight_one_to_its_own() {
        configure_for_tests();
        let mut demo = start().unwrap();
        demo.beta.kill();
        wait_for(&demo.pool, "beta", State::Down).unwrap();
        demo.beta.restart().unwrap();
        wait_for(&demo.pool, "beta", State::Up).unwrap();
        let mut weights = Vec::new();
        for _ in 0..5 {
            weights.push(stats_of(&demo.pool, "beta").effective_weight);
            demo.clock.advance(SLOW_START / 4);
        }
        assert_eq!(weights, [1, 1, 2, 3, 4]);
        // alpha never went down: no ramp for it.
        assert_eq!(stats_of(&demo.pool, "alpha").effective_weight, WEIGHT);
    }

    #[test]
    fn with_every_backend_down_a_request_gets_503() {
        configure_for_tests();
        let mut demo = start().unwrap();
        demo._alpha.clear(); // stops it
        demo.beta.kill();
        wait_for(&demo.pool, "alpha", State::Down).unwrap();
        wait_for(&demo.pool, "beta", State::Down).unwrap();
        let answer = fetch(demo.balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answer.status, 503);
    }
}
