//! Step 2: weights. Backends are not all alike: one with three times the
//! cores should get three times the requests. The pool now runs nginx's
//! smooth weighted round-robin over weights 3, 1, 1; the forwarding code is
//! step 1's, unchanged.
//!
//! The demo prints the order of the first ten picks (the heavy backend's
//! turns spread through each cycle, not three in a row) and the shares over
//! 500 requests.

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

use may_patterns::backend::Backend;
use may_patterns::balance::{Algorithm, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::runtime::{configure_once, Settings};
use steps_answers::answers;
use steps_common::{start_backends, Running};
use steps_forward::forward;
use steps_http::start_balancer;

// ANCHOR: pool
/// The weights of the demo's backends.
const WEIGHTS: [(&str, u32); 3] = [("alpha", 3), ("beta", 1), ("gamma", 1)];

/// The demo's balancer: smooth weighted round-robin over `WEIGHTS`.
fn start() -> io::Result<(Vec<Backend>, Running)> {
    let ms = Duration::from_millis(1);
    let specs: Vec<(&str, Duration)> = WEIGHTS.iter().map(|&(name, _)| (name, ms)).collect();
    let (backends, mut configs) = start_backends(&specs)?;
    for (config, (_, weight)) in configs.iter_mut().zip(WEIGHTS) {
        config.weight = weight;
    }
    let config = PoolConfig {
        algorithm: Algorithm::Weighted,
        ..PoolConfig::default()
    };
    let pool = Pool::new(configs, config, Arc::new(MonotonicClock::new()));
    let balancer = start_balancer(pool, forward)?;
    Ok((backends, balancer))
}
// ANCHOR_END: pool

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (_backends, balancer) = start().expect("the balancer starts");
    let weights: Vec<String> = WEIGHTS.iter().map(|(n, w)| format!("{n} {w}")).collect();
    println!("weights: {}", weights.join(", "));
    let first = answers(balancer.addr, 10).expect("the first ten GETs");
    println!("first 10 GETs: {}", first.join(" "));
    let many = answers(balancer.addr, 500).expect("500 GETs");
    for (name, _) in WEIGHTS {
        let count = many.iter().filter(|a| *a == name).count();
        let share = 100.0 * count as f64 / many.len() as f64;
        println!("{name}: {count} of {} GETs ({share:.1}%)", many.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn each_backend_gets_its_weight_and_the_heavy_ones_turns_are_spread() {
        configure_for_tests();
        let (_backends, balancer) = start().unwrap();
        let seen = answers(balancer.addr, 100).unwrap();
        let count = |name: &str| seen.iter().filter(|a| *a == name).count();
        assert_eq!(
            (count("alpha"), count("beta"), count("gamma")),
            (60, 20, 20)
        );
        // Smooth: alpha never gets more than two in a row (the end of one
        // cycle and the start of the next); repeating each backend
        // `weight` times would give it three.
        let longest = seen
            .split(|a| a != "alpha")
            .map(|run| run.len())
            .max()
            .unwrap();
        assert_eq!(longest, 2, "{seen:?}");
    }
}
