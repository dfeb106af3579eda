//! Worker pool: a mix of waiting (I/O) and computing (CPU) jobs arrives in
//! bursts; a dynamic pool of coroutine workers (`may_patterns::pool`) runs
//! them, growing when jobs wait in its queue and shrinking when workers
//! idle; the program reports how long jobs waited, how the pool scaled and
//! how many workers it kept over time.
//!
//! **Purpose.** See the pool follow its load: with bursts far apart, the
//! worker count rises with each burst and falls back to `--min` between
//! them, and the queue wait shows what the growth costs a burst's first
//! jobs.
//!
//! **Architecture.** `cli` reads the flags; `mix` says what each job does
//! and in what order the kinds come; `arrivals` cuts the jobs into bursts;
//! `session` builds the pool, and the OS threads the CPU jobs are handed to
//! (a blocking pool, or with `--steal` a fork-join pool), submits the
//! bursts from the main thread (an OS thread, so it may sleep between
//! bursts), then joins every job's handle; `report` turns the timings, the
//! pool's statistics and its samples into a summary; `svg` draws the
//! samples.
//!
//! **Usage.** `cargo run --example worker_pool` runs 2,000 jobs (3 I/O to
//! 1 CPU) in bursts of 200 every 300 ms on 2 to 32 workers; `--min 32 --max
//! 32` runs the same on a fixed pool (to compare); `--steal` splits each CPU
//! job over a fork-join pool; `--svg run.svg` draws the run; `--json` prints it
//! for a machine.
//!
//! **Performance.** `cargo bench --bench worker_pool_io` measures the pool
//! with 1,000 workers against thread pools for jobs that wait 1 ms, and
//! draws the chapter's picture from a bursty run of this program.
//!
//! **Customization.** Replace `mix::io_job` and `mix::cpu_job` with your
//! jobs; keep a waiting job parked on a may primitive (channel, socket,
//! alarm), never on a blocking std call.

mod arrivals;
mod cli;
mod mix;
mod report;
mod session;
mod svg;

use std::process::ExitCode;

use clap::Parser;
use may_patterns::runtime::{configure_once, Settings};

use crate::cli::Cli;
use crate::session::Failure;

// ANCHOR: main
/// Run the trace, then report it: as text or JSON, and as a picture.
fn run(cli: &Cli) -> Result<(), Failure> {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let session = session::run(cli)?;
    let summary = report::build(cli, &session);
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("a summary serialises")
        );
    } else {
        print!("{summary}");
    }
    if let Some(path) = &cli.svg {
        std::fs::write(path, svg::render(&summary))
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
