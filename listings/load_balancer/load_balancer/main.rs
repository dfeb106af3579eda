//! # load_balancer
//!
//! **Purpose.** An HTTP/1.1 load balancer on may: clients talk to it as to
//! one server, and each request goes to one of several backends, chosen
//! among those that are up by round-robin, nginx's smooth weighted
//! round-robin, least-connections or power-of-two choices.
//!
//! **Architecture.** `may_patterns::server::run` accepts, caps connections
//! and shuts down; each client connection runs [`handler::serve`] in its
//! own coroutine: request heads one after another (keep-alive), each
//! answered by [`admin`] (stats, drain) or sent on by [`forward`], which
//! picks a backend from the pool (`may_patterns::balance`), takes a kept
//! connection from [`upstream`] or connects, streams the request (its head
//! rewritten by [`rewrite`]) and the answer, and retries on another backend
//! when [`retry`] says that is safe. Beside them
//! the pool's active checker (`balance::spawn_checker`) checks every
//! backend each `--check-interval`.
//!
//! **Usage.** `cargo run --example load_balancer -- --backend
//! 127.0.0.1:9001 --backend 127.0.0.1:9002,weight=2`, then `curl
//! http://127.0.0.1:8080/`; `curl http://127.0.0.1:8080/_lb/stats` shows
//! the backends; `curl -X POST
//! 'http://127.0.0.1:8080/_lb/drain?backend=127.0.0.1:9001'` drains one.
//! Ctrl-C or SIGTERM stops it and prints a summary (`--json`: one JSON
//! object). `--help` lists every setting and its default.
//!
//! **Performance.** Measured beside HAProxy and nginx by the chapter's
//! bench (`cargo bench --bench load_balancer`). Memory is bounded per
//! connection: a client connection holds a read buffer (`handler.rs`) and
//! the buffers of [`buffers`] (a body's copy, a backend's answer, a write
//! gathered), all of fixed sizes on the heap and made once for all its
//! requests, and each backend keeps at most `upstream::IDLE_PER_BACKEND`
//! idle connections.
//!
//! **Shutdown.** Ctrl-C stops accepting and shuts every client socket and
//! every backend connection in use (a request waiting for an answer ends
//! at once); the checker ends within one check.
//!
//! **Customization.** A new algorithm goes into `balance::Algorithm`; a
//! request rewrite (a header added, a path prefix removed) goes into
//! `rewrite::Outgoing::new`.

mod admin;
mod buffers;
mod cli;
mod forward;
mod handler;
mod retry;
mod rewrite;
mod upstream;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::balance::{self, to_json, CheckConfig, HealthRule, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::http;
use may_patterns::server::{self, Report, Slots};
use may_patterns::shutdown::Shutdown;

use cli::Args;
use handler::{Settings, Stats};
use upstream::Upstreams;

fn main() -> ExitCode {
    let args = Args::parse();
    // Before anything starts may's scheduler (the listener's bind does).
    // Not through `runtime::configure_once`, which unpins the workers (for
    // parallel test binaries): the workers stay pinned to cores, may's
    // default, as they were before this flag.
    if let Some(workers) = args.workers {
        may::config().set_workers(workers);
    }
    let backends = match cli::resolve(&args.backends) {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("error: --backend {e}");
            return ExitCode::from(2);
        }
    };
    let config = PoolConfig {
        algorithm: args.algorithm.algorithm(),
        rule: HealthRule {
            rise: args.rise,
            fall: args.fall,
        },
        slow_start: args.slow_start,
        ..PoolConfig::default()
    };
    let pool = Arc::new(Pool::new(backends, config, Arc::new(MonotonicClock::new())));
    let settings = Settings {
        upstreams: Upstreams::new(pool.addrs()),
        pool,
        retries: args.retries,
        connect_timeout: args.connect_timeout,
        response_timeout: args.response_timeout,
        idle_timeout: args.idle_timeout,
        header_timeout: args.header_timeout,
        stats_path: args.stats_path.clone(),
    };
    // HAProxy without `timeout check`: a check may take the whole interval.
    let check = CheckConfig {
        interval: args.check_interval,
        timeout: args.check_interval,
        path: args.check_path.clone(),
    };
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    if let Err(e) = ctrlc::set_handler(move || stop.trigger()) {
        eprintln!("error: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    match listener.local_addr() {
        Ok(addr) if args.json => println!("{{\"listening\":\"{addr}\"}}"),
        Ok(addr) => println!("load_balancer listening on {addr}"),
        Err(e) => {
            eprintln!("error: local address: {e}");
            return ExitCode::FAILURE;
        }
    }
    let settings = Arc::new(settings);
    let stats = Arc::new(Stats::default());
    match run(
        listener,
        &shutdown,
        args.max_connections,
        check,
        settings.clone(),
        stats.clone(),
    ) {
        Ok(report) => {
            println!("{}", summary(&report, &stats, &settings.pool, args.json));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serve `listener` and check the backends until `shutdown`.
fn run(
    listener: TcpListener,
    shutdown: &Shutdown,
    max_connections: usize,
    check: CheckConfig,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) -> io::Result<Report> {
    let config = server::Config {
        slots: Slots::new(max_connections),
        full_message: Some(full_message(max_connections)),
        ..server::Config::default()
    };
    let checker = balance::spawn_checker(settings.pool.clone(), check, shutdown.clone());
    // `server::run` shuts the clients' sockets on shutdown; this shuts the
    // backend connections their requests may still be waiting on.
    let shutter = {
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        may::go!(move || {
            shutdown.wait();
            settings.upstreams.shut_in_use();
        })
    };
    let served = server::run(listener, shutdown, config, move |conn| {
        handler::serve(conn, &settings, &stats)
    });
    // `server::run` returns after the shutdown, or at once on a config it
    // cannot run with: the others stop in either case.
    shutdown.trigger();
    let _ = shutter.join();
    let _ = checker.join();
    served
}

/// The summary printed at the end: the balancer's counts, then each
/// backend's.
/// What a client over `--max-connections` reads before the close: a
/// refusal like the balancer's others, saying which limit it met.
fn full_message(max_connections: usize) -> Vec<u8> {
    let why = format!(
        "the balancer is serving its limit of {max_connections} connections \
         (--max-connections); try again shortly\n"
    );
    let mut message = Vec::new();
    http::write_error(&mut message, 503, "Service Unavailable", &[], &why, true)
        .expect("a Vec takes every write");
    message
}

fn summary(report: &Report, stats: &Stats, pool: &Pool, json: bool) -> String {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let fields = [
        ("accepted", report.accepted),
        ("refused_full", report.refused_full),
        ("requests", n(&stats.requests)),
        ("retried", n(&stats.retried)),
        ("failed", n(&stats.failed)),
        ("bad_requests", n(&stats.bad_requests)),
    ];
    let backends = pool.stats();
    if json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        return format!("{{{},\"backends\":{}}}", body.join(","), to_json(&backends));
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut text = format!("stopped: {}", body.join(", "));
    for b in &backends {
        text.push_str(&format!(
            "\n  {} ({}): {}, {} requests, {} errors, checks {} passed {} failed",
            b.name,
            b.addr,
            b.state.as_str(),
            b.picks,
            b.errors,
            b.checks_passed,
            b.checks_failed
        ));
    }
    text
}

#[cfg(test)]
mod tests;
