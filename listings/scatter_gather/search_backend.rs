//! A search backend to scatter to: answers `GET /search?q=WORD` with a JSON
//! list of offers, after a latency you choose, and fails, slows down or hangs
//! on request. The server itself is `may_patterns::backend` (the load
//! balancer and proxy chapters start it too); this is its command line.
//!
//! `cargo run --example search_backend -- --listen 127.0.0.1:8001 --latency 20ms --slow 0.05 --slow-latency 300ms`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::backend::{self, BackendConfig};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;

// ANCHOR: cli
/// An HTTP search backend with scripted latency and failures.
#[derive(Parser, Debug)]
#[command(name = "search_backend")]
struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Shop name in the offers.
    #[arg(long, default_value = "shop")]
    name: String,
    /// Usual time to answer (0, or at least 1ms).
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Share of requests (0 to 1) that take --slow-latency instead.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    slow_latency: Duration,
    /// Share of requests (0 to 1) answered with 500.
    #[arg(long, default_value_t = 0.0)]
    fail: f64,
    /// Never answer.
    #[arg(long)]
    hang: bool,
    /// Seed for which requests are slow or fail.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (default: run until killed).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}
// ANCHOR_END: cli

fn main() -> ExitCode {
    let args = Args::parse();
    let fractions_ok = (0.0..=1.0).contains(&args.slow) && (0.0..=1.0).contains(&args.fail);
    let latencies_ok = [args.latency, args.slow_latency]
        .iter()
        .all(|d| d.is_zero() || *d >= Duration::from_millis(1));
    if !fractions_ok || !latencies_ok {
        eprintln!("error: --slow and --fail are shares from 0 to 1; latencies are 0 or >= 1ms");
        return ExitCode::from(2);
    }
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            ExitCode::FAILURE
        }
    }
}

/// Listen, serve until Ctrl-C or `--duration`, print the summary; a failure
/// is one sentence saying what could not be done and why.
fn serve(args: &Args) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address it listens on: {e}"))?;
    println!("search backend {:?} listening on {addr}", args.name);
    let config = BackendConfig {
        slow_fraction: args.slow,
        slow_latency: args.slow_latency,
        fail_fraction: args.fail,
        hang: args.hang,
        seed: args.seed,
        ..BackendConfig::new(&args.name, args.latency)
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    ctrlc::set_handler(move || stop.trigger())
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    if let Some(after) = args.duration {
        let stop = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after); // an OS thread, not a coroutine
            stop.trigger();
        });
    }
    // `serve` wakes its own accept loop on shutdown.
    let stats = std::sync::Arc::new(backend::BackendStats::default());
    backend::serve(listener, shutdown, config, stats.clone())
        .map_err(|e| format!("stopped serving: {e}"))?;
    use std::sync::atomic::Ordering::SeqCst;
    println!(
        "served {} requests: {} answered, {} failed, {} clients left early",
        stats.requests.load(SeqCst),
        stats.answered.load(SeqCst),
        stats.failed.load(SeqCst),
        stats.client_gone.load(SeqCst)
    );
    Ok(())
}
