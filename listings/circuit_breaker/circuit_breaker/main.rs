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
//! **Architecture.** `config` reads the flags; `session` builds the
//! protections and runs the script: `phases` switches the built-in backend
//! from one phase to the next on a thread of its own while `client` runs
//! `--concurrency` caller coroutines, each making one call every
//! `concurrency/rate`, and records every call; `timeline` cuts the records
//! and the breaker's transitions (which it publishes on a channel) into
//! rows; `svg` draws them.
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
mod session;
mod svg;
mod timeline;

use std::process::ExitCode;

use clap::Parser;
use may_patterns::runtime::{configure_once, Settings};

use crate::config::Cli;
use crate::session::Failure;

// ANCHOR: main
/// Run the script, then show the timeline: as text or JSON, and as a picture.
fn run(cli: &Cli) -> Result<(), Failure> {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let session = session::run(cli)?;
    let slices = phases::slices(&cli.phases.0, cli.interval);
    let mut timeline = timeline::build(&slices, &session.records, &session.transitions);
    timeline.backend_requests = session.backend_requests;
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
// ANCHOR_END: main
