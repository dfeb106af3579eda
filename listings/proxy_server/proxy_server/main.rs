//! # proxy_server
//!
//! **Purpose.** A forward proxy on may: a client configured with
//! `-x http://127.0.0.1:3128` sends it plain `GET http://...` requests,
//! forwarded on keep-alive connections to the origin with both bodies
//! streamed ([`forward`]; the heads rewritten by [`rewrite`]; the idle
//! origin connections pooled by [`upstream`], built here from the
//! `--origin-idle-*` flags), and opens `CONNECT host:443` tunnels (HTTPS,
//! or any TCP the port policy allows).
//!
//! **Architecture.** `may_patterns::server::run` accepts, caps connections
//! and shuts down; each connection runs [`handler::serve`] in its own
//! coroutine: the request head (within `--header-timeout`), the client
//! check ([`access`]), `Proxy-Authorization` ([`auth`]), the port policy,
//! name resolution on the blocking pool behind a TTL cache ([`resolve`]),
//! the destination check on the resolved address, the connect
//! (`502`/`504`), then [`tunnel::run`]: one more coroutine so both
//! directions copy at once. With `--access-log`, one line per request goes
//! to a dedicated writer thread ([`access_log`]) that never makes a
//! request wait.
//!
//! **Usage.** `cargo run --example proxy_server -- --listen 127.0.0.1:3128`,
//! then `curl -x http://127.0.0.1:3128 https://example.com/`. `--help`
//! lists what is allowed by default. Ctrl-C or SIGTERM stops it and prints
//! a summary (`--json`: as one JSON object).
//!
//! **Performance.** `cargo bench --bench proxy_server` loads it beside
//! tinyproxy and squid (nginx as the origin, hey as the load). Each tunnel holds two 16 KiB heap buffers and two coroutines;
//! both coroutine stacks are sized from a measurement
//! ([`CONNECTION_STACK`], [`tunnel::COPY_STACK_WORDS`]).
//!
//! **Customization.** The policy lives in `access.rs`; a new check is one
//! more test in `handler.rs` before the connect.

mod access;
mod access_log;
mod auth;
mod cli;
mod forward;
mod handler;
#[cfg(test)]
mod loopback_tests;
mod resolve;
mod rewrite;
#[cfg(test)]
mod stack_tests;
mod tunnel;
mod upstream;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::server::{self, Report, Slots};
use may_patterns::shutdown::Shutdown;

use access_log::{AccessLog, LogWriter};
use cli::Args;
use handler::{Refusal, Settings, Stats};
use resolve::{DnsStats, Resolver};
use upstream::Pool;

fn main() -> ExitCode {
    let args = Args::parse();
    let users = match &args.auth_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| auth::Users::parse(&text))
        {
            Ok(users) => Some(users),
            Err(e) => {
                eprintln!("error: --auth-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let log = match &args.access_log {
        None => None,
        Some(path) => match access_log::open(path)
            .and_then(|out| access_log::start(out, access_log::QUEUE_ENTRIES))
        {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!("error: --access-log {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let (access_log, log_writer): (Option<AccessLog>, Option<LogWriter>) = log.unzip();
    let resolver = Resolver::new(args.dns());
    let settings = Settings {
        policy: args.policy(),
        users,
        connect_timeout: args.connect_timeout(),
        idle_timeout: args.idle_timeout(),
        response_timeout: args.response_timeout(),
        header_timeout: args.header_timeout(),
        resolver,
        pool: Pool::start(args.pool_limits()),
        tunnel_stack_words: tunnel::COPY_STACK_WORDS,
        access_log: access_log.clone(),
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
        Ok(addr) => println!("proxy_server listening on {addr}"),
        Err(e) => {
            eprintln!("error: local address: {e}");
            return ExitCode::FAILURE;
        }
    }
    let stats = Arc::new(Stats::default());
    let settings = Arc::new(settings);
    let served = run(
        listener,
        &shutdown,
        args.max_connections,
        settings.clone(),
        stats.clone(),
    );
    // Every connection has ended: the log's last lines are queued.
    if let Some(Err(e)) = log_writer.map(LogWriter::finish) {
        eprintln!("error: --access-log: {e}");
    }
    match served {
        Ok(report) => {
            let log_dropped = access_log.as_ref().map_or(0, AccessLog::dropped);
            let dns = settings.resolver.stats();
            summary(&report, &stats, dns, log_dropped, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each connection coroutine's stack, in bytes: a request's whole path
/// (auth, the resolver's wait, forwarding both bodies, a refusal, the
/// tunnel's client -> origin side) runs on it. `stack_tests.rs` measured
/// its worst case (a chunked upload after `Expect: 100-continue` to a
/// name, answered chunked) at 3641 words, 28.4 KiB, in a debug build and
/// 1459 words, 11.4 KiB, in a release one: this is over twice the debug
/// figure, rounded up to a power of two. (server::Config's default,
/// 128 KiB, was measured for the chat server's TLS connections.)
pub const CONNECTION_STACK: usize = 64 * 1024;

/// Serve `listener` until `shutdown`.
fn run(
    listener: TcpListener,
    shutdown: &Shutdown,
    max_connections: usize,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) -> io::Result<Report> {
    let config = server::Config {
        slots: Slots::new(max_connections),
        full_message: Some(full_message(max_connections)),
        stack_size: CONNECTION_STACK,
        ..server::Config::default()
    };
    server::run(listener, shutdown, config, move |conn| {
        handler::serve(conn, &settings, &stats)
    })
}

/// What a client over `--max-connections` reads before the close: a
/// refusal like the others, saying which limit it met.
fn full_message(max_connections: usize) -> Vec<u8> {
    let why = format!(
        "the proxy is serving its limit of {max_connections} connections \
         (--max-connections); try again shortly"
    );
    let mut message = Vec::new();
    handler::refuse(&mut message, &Refusal::new(503, why)).expect("a Vec takes every write");
    message
}

fn summary(report: &Report, stats: &Stats, dns: DnsStats, log_dropped: u64, json: bool) {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let fields = [
        ("accepted", report.accepted),
        ("refused_full", report.refused_full),
        ("forwarded", n(&stats.forwarded)),
        ("origin_reused", n(&stats.origin_reused)),
        ("origin_retried", n(&stats.origin_retried)),
        ("client_gone", n(&stats.client_gone)),
        ("tunnels", n(&stats.tunnels)),
        ("bytes_up", n(&stats.bytes_up)),
        ("bytes_down", n(&stats.bytes_down)),
        ("denied", n(&stats.denied)),
        ("auth_failed", n(&stats.auth_failed)),
        ("upstream_failed", n(&stats.upstream_failed)),
        ("bad_requests", n(&stats.bad_requests)),
        ("dns_lookups", dns.lookups),
        ("dns_hits", dns.hits + dns.shared),
        ("log_dropped", log_dropped),
    ];
    if json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", body.join(","));
    } else {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("stopped: {}", body.join(", "));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_full_message_is_a_complete_503_naming_the_limit() {
        let text = String::from_utf8(super::full_message(7)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        let length = format!("Content-Length: {}", body.len());
        assert!(head.contains(&length), "{head}");
        assert!(body.contains("limit of 7") && body.contains("--max-connections"));
    }
}
