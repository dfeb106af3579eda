//! The command line: clap flags, each refused with one sentence when it
//! cannot work (clap then exits with 2). The pool's own settings are checked
//! by the library (`Config::check`), so its sentences are the ones a user
//! of the library sees too.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use may_patterns::cli::at_least_one;
use may_patterns::pool::Config;

use crate::mix::{Mix, MAX_CPU_WORK};

// ANCHOR: cli
/// Run a mix of waiting (I/O) and computing (CPU) jobs, arriving in bursts,
/// on a dynamic pool of coroutine workers, and report queue waits, scale
/// events and the worker count over time.
#[derive(Parser, Debug)]
#[command(name = "worker_pool")]
pub struct Cli {
    /// Workers kept even when idle.
    #[arg(long, default_value_t = 2, value_parser = at_least_one::<usize>)]
    pub min: usize,
    /// Workers at most.
    #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>)]
    pub max: usize,
    /// Workers the pool had spare for this long retire, down to --min.
    #[arg(long, default_value = "100ms", value_parser = positive_duration)]
    pub idle: Duration,
    /// The pool grows when the oldest queued job has waited this long.
    #[arg(long, default_value = "5ms", value_parser = positive_duration)]
    pub grow_after: Duration,
    /// How often the pool's scaler looks at the queue.
    #[arg(long, default_value = "5ms", value_parser = positive_duration)]
    pub tick: Duration,
    /// Jobs the submission queue holds; a submit waits while it is full.
    #[arg(long, default_value_t = 512, value_parser = at_least_one::<usize>)]
    pub queue: usize,
    /// Jobs in all.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one::<usize>)]
    pub jobs: usize,
    /// Waiting jobs to computing jobs, as IO:CPU (3:1: three of every four
    /// jobs wait, one computes).
    #[arg(long, value_name = "IO:CPU", default_value = "3:1", value_parser = Mix::parse)]
    pub mix: Mix,
    /// Jobs per burst: a burst is submitted at once, then --gap passes.
    #[arg(long, default_value_t = 200, value_parser = at_least_one::<usize>)]
    pub burst: usize,
    /// Time between the starts of two bursts.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub gap: Duration,
    /// How long an I/O job waits (on the process's alarm thread, not a may
    /// timer).
    #[arg(long, default_value = "5ms", value_parser = positive_duration)]
    pub io_wait: Duration,
    /// Hash rounds per CPU job (at most 1000000).
    #[arg(long, default_value_t = 20_000, value_parser = cpu_work)]
    pub cpu_work: u64,
    /// OS threads that run the CPU jobs: a CPU job never parks, so on a
    /// worker coroutine it would hold a may worker thread while it computes.
    #[arg(long, default_value_t = 2, value_parser = at_least_one::<usize>)]
    pub cpu_threads: usize,
    /// Run each CPU job as a fork-join on a work-stealing pool of
    /// --cpu-threads threads, instead of whole on one thread of a blocking
    /// pool.
    #[arg(long)]
    pub steal: bool,
    /// With --steal: one shared queue instead of a deque per thread (to
    /// compare).
    #[arg(long)]
    pub shared_queue: bool,
    /// Every Nth job panics (0: none), to show the pool survives it.
    #[arg(long, default_value_t = 0)]
    pub panic_every: usize,
    /// Seed of the job order within each group of IO+CPU jobs, and of the
    /// CPU jobs' input.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Also draw workers and queue depth over time as an SVG picture into
    /// this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}
// ANCHOR_END: cli

impl Cli {
    /// What clap cannot check flag by flag, in one sentence.
    pub fn check(&self) -> Result<(), String> {
        if self.shared_queue && !self.steal {
            return Err(
                "--shared-queue picks the scheduling of --steal's fork-join pool; \
                        add --steal"
                    .into(),
            );
        }
        Ok(())
    }

    /// The pool's settings; `Pool::new` checks them (`--min 8 --max 4`).
    pub fn pool_config(&self) -> Config {
        let mut config = Config::dynamic(self.min, self.max, self.queue);
        config.idle = self.idle;
        config.grow_after = self.grow_after;
        config.tick = self.tick;
        config
    }
}

/// A duration that is not zero, which may would read as "no timeout".
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be longer than 0".into()),
        duration => Ok(duration),
    }
}

/// Hash rounds: at least 1, and at most `MAX_CPU_WORK`.
fn cpu_work(text: &str) -> Result<u64, String> {
    match at_least_one::<u64>(text)? {
        n if n > MAX_CPU_WORK => Err(format!("must be at most {MAX_CPU_WORK}")),
        n => Ok(n),
    }
}
