//! rate_limiter: an HTTP gateway that limits each client's request rate
//! and forwards what it admits to an upstream.
//!
//! **Purpose.** Put a per-client limit in front of a service that cannot
//! protect itself: each client (its IP address, or an API-key header) gets
//! `--rate` requests per `--period` with bursts of up to `--burst`; the
//! rest get `429 Too Many Requests` with `Retry-After`, and every response
//! carries the `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` fields so well-behaved clients can pace themselves.
//!
//! **Architecture.** An accept loop (`gateway::run`) caps the connections
//! and starts one coroutine per client connection, which reads requests one
//! after another (keep-alive) with an idle and a whole-request timeout.
//! Each request gets a key (`keys`), one decision from the shared
//! `may_patterns::ratelimit::Limiter` (sharded, a lock held for one decision
//! only, never across a park), and then either a 429 (`headers`) or a trip
//! to the upstream over a pool of kept-alive connections (`upstream`). With
//! `--algorithm leaky-bucket` a request is queued instead: its coroutine
//! sleeps until its turn, then goes upstream (smoothing, not rejecting).
//!
//! **Usage.** `cargo run --example rate_limiter -- --demo --rate 2 --burst 3`
//! starts a demo upstream in the same process; then
//! `curl -i 'http://127.0.0.1:8080/search?q=lamp'` a few times. In front of
//! a real service: `--upstream 127.0.0.1:9000 --key header:X-Api-Key`.
//! Ctrl-C prints a summary (`--json` for one JSON line).
//!
//! **Performance.** See the chapter's gateway table
//! (`cargo bench --bench rate_limiter_gateway`), measured with wrk.
//!
//! **Customization.** Another key (a user id from a token, an IPv6 /64):
//! `keys::key_of`. Another cost per request (bytes, a query's weight): the
//! `cost` argument of `Limiter::check` in `gateway::Gateway::answer`.

mod config;
mod deadlines;
mod gateway;
mod headers;
mod keys;
mod upstream;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::ratelimit::{AnyAlgorithm, Limiter};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;

use config::{Args, Config};
use gateway::{Gateway, GatewayConfig, Summary};
use upstream::Upstream;

// ANCHOR: main
fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            return ExitCode::from(2);
        }
    };
    // may's default stack, 32 KiB (0x1000 words), for every connection
    // coroutine: a connection parses heads with httparse into heap
    // buffers and recurses nowhere. Measured by running it with an odd
    // stack size (0x1001; may then prints each coroutine's use as it ends)
    // under wrk: about 1,500 words at most in a debug build, 2026-12-02.
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            ExitCode::FAILURE
        }
    }
}

/// Start the demo upstream if asked, check the upstream is there, listen,
/// serve until Ctrl-C, print the summary. A failure is one sentence.
fn serve(config: Config) -> Result<(), String> {
    let demo = match config.upstream {
        Some(_) => None,
        None => Some(
            Backend::start(BackendConfig::new("demo", Duration::ZERO))
                .map_err(|e| format!("cannot start the demo upstream: {e}"))?,
        ),
    };
    let upstream = config
        .upstream
        .or(demo.as_ref().map(|b| b.addr))
        .expect("clap requires one");
    if let Err(e) = upstream::probe(upstream, config.upstream_timeout) {
        if !config.allow_upstream_down {
            return Err(format!(
                "the upstream {upstream} is down ({e}); start it first, \
                 or pass --allow-upstream-down to answer 502 until it is up"
            ));
        }
        eprintln!("warning: the upstream {upstream} is down ({e}); answering 502 until it is up");
    }
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address it listens on: {e}"))?;
    let quota = config.quota;
    println!(
        "rate_limiter listening on {addr}, forwarding to {upstream}: {} per {}, {} requests per {:?}, burst {}",
        config.algorithm.name(),
        config.key,
        quota.rate(),
        quota.period(),
        quota.burst()
    );
    let limiter = Limiter::new(AnyAlgorithm::new(config.algorithm, quota), config.max_keys);
    let gateway = Gateway::new(
        limiter,
        Upstream::new(upstream, config.upstream_timeout, config.upstream_idle),
        GatewayConfig {
            key: config.key.clone(),
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            header_timeout: config.header_timeout,
        },
    )
    .map_err(|e| format!("cannot start the alarm thread: {e}"))?;
    let gateway = Arc::new(gateway);
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    ctrlc::set_handler(move || stop.trigger())
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let summary =
        gateway::run(listener, shutdown, gateway).map_err(|e| format!("stopped serving: {e}"))?;
    let answered = demo.map(|b| b.stats.answered.load(std::sync::atomic::Ordering::SeqCst));
    report(&summary, answered, config.json);
    Ok(())
}
// ANCHOR_END: main

/// The summary, readable or as one JSON line; `answered` is what the demo
/// upstream itself counted.
fn report(summary: &Summary, answered: Option<u64>, json: bool) {
    if json {
        let mut value = serde_json::to_value(summary).expect("a summary serialises");
        if let Some(n) = answered {
            value["upstream_answered"] = n.into();
        }
        println!("{value}");
        return;
    }
    let s = summary;
    println!(
        "{} admitted ({} queued first), {} rejected with 429, {} bad requests, {} upstream errors",
        s.admitted, s.queued, s.rejected, s.bad_requests, s.upstream_errors
    );
    println!(
        "{} connections ({} refused), {} upstream connections ({} reuses), {} keys held, {} evicted",
        s.connections, s.refused_connections, s.upstream_connects, s.upstream_reused, s.keys, s.evicted
    );
    if let Some(n) = answered {
        println!("the demo upstream answered {n}");
    }
}
