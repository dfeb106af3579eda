//! Circuit breaker: a client that calls a backend through a timeout,
//! retries with backoff, a retry budget and a circuit breaker, while a
//! script takes the backend through phases (healthy, slow, failing,
//! recovering), and shows what each protection did, interval by interval.
//!
//! **Purpose.** See a breaker work: it opens soon after the backend starts
//! failing, keeps the callers' requests off it while open (rejected calls
//! return at once), lets a few probes through after `--open-for`, and closes
//! once the backend answers again.
//!
//! **Architecture.** `phases` switches the built-in backend from one phase
//! to the next on a thread of its own; `client` runs `--concurrency` caller
//! coroutines, each making one call every `concurrency/rate`, and records
//! every call; `timeline` cuts the records and the breaker's transitions
//! (which it publishes on a channel) into rows; `svg` draws them.
//!
//! **Usage.**
//! `cargo run --example circuit_breaker` runs the default script (11 s)
//! against a built-in backend; `--phases healthy:2s,failing:3s,recovering:2s`
//! changes it; `--svg timeline.svg` also draws it; `--json` prints it for a
//! machine. `--backend 127.0.0.1:8001` calls a running backend instead
//! (`cargo run --example search_backend`); stop and restart that backend by
//! hand to make an outage.
//!
//! **Performance.** `cargo bench --bench circuit_breaker` runs one outage
//! three ways (no protection, retries only, breaker and budget) and
//! reports what reached the failing backend, the callers' latency and the
//! time to detect recovery.
//!
//! **Customization.** Replace `client::attempt`'s request with your call;
//! keep every call going through `Breaker::try_call` and report its outcome
//! on the permit.

mod client;
mod config;
mod phases;
mod svg;
mod timeline;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use may::net::TcpStream;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::breaker::{Breaker, RetryBudget};
use may_patterns::clock::MonotonicClock;
use may_patterns::runtime::{configure_once, Settings};

use crate::client::Protection;
use crate::config::{Budget, Cli};

/// Why the program stopped: a command line that cannot work (exit 2), or a
/// run that could not be done (exit 1).
enum Failure {
    Usage(String),
    Run(String),
}

// ANCHOR: protection
/// The protections the flags ask for, all on `clock`.
fn protection(cli: &Cli, clock: MonotonicClock) -> Result<Protection, Failure> {
    let usage = |e: may_patterns::breaker::ConfigError| Failure::Usage(e.to_string());
    let breaker = match cli.no_breaker {
        true => None,
        false => Some(Breaker::with_clock(cli.breaker_config(), clock).map_err(usage)?),
    };
    // Finagle's defaults: a share of the calls of the last 10 s, plus 10
    // retries a second so a quiet client can still retry.
    let budget = match cli.budget {
        Budget::Off => None,
        Budget::Share(ratio) => Some(
            RetryBudget::with_clock(ratio, 10.0, Duration::from_secs(10), clock).map_err(usage)?,
        ),
    };
    Ok(Protection {
        timeout: cli.timeout,
        retry: cli.retry_policy(),
        budget,
        breaker,
    })
}
// ANCHOR_END: protection

// ANCHOR: run
fn run(cli: &Cli) -> Result<(), Failure> {
    let period = cli.caller_period().map_err(Failure::Usage)?;
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let clock = MonotonicClock::new();
    let protection = protection(cli, clock)?;
    let transitions = protection.breaker.as_ref().map(Breaker::subscribe);
    let (built_in, addr) = match cli.backend {
        Some(addr) => {
            // An outside backend that is down before the run is a mistake,
            // not an outage to watch: say so instead of a timeline of errors.
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map_err(|e| Failure::Run(format!("cannot reach the backend at {addr}: {e}")))?;
            (None, addr)
        }
        None => {
            let mut config = BackendConfig::new("shop", Duration::ZERO);
            config.seed = cli.seed;
            let backend = Backend::start(config)
                .map_err(|e| Failure::Run(format!("cannot start the built-in backend: {e}")))?;
            backend.set_behaviour(phases::behaviour(cli.phases.0[0].kind));
            let addr = backend.addr;
            (Some(backend), addr)
        }
    };
    let (_, end) = phases::starts(&cli.phases.0);
    let records = std::thread::scope(|s| {
        if let Some(backend) = &built_in {
            s.spawn(|| phases::drive(backend, &cli.phases.0, &clock));
        }
        client::run_callers(
            addr,
            Arc::new(protection),
            clock,
            cli.concurrency,
            period,
            end,
            cli.seed,
        )
    });
    let transitions: Vec<_> = transitions.map_or_else(Vec::new, |rx| rx.try_iter().collect());
    let slices = phases::slices(&cli.phases.0, cli.interval);
    let mut timeline = timeline::build(&slices, &records, &transitions);
    timeline.backend_requests = built_in.map(|b| b.stats.requests.load(Ordering::SeqCst));
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&timeline).expect("a timeline serialises")
        );
    } else {
        print!("{timeline}");
    }
    if let Some(path) = &cli.svg {
        std::fs::write(path, svg::render(&timeline, &cli.phases.0))
            .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
// ANCHOR_END: run

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(2)
        }
        Err(Failure::Run(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(1)
        }
    }
}
