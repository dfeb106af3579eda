//! One run: the pool the flags ask for, the trace submitted burst by burst
//! from the main thread, every job's outcome and timing, and the pool's own
//! record of its size over time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::pool::fork_join::{ForkJoinPool, Scheduling};
use may_patterns::pool::{JobError, JobHandle, Pool, Report, Sample, ScaleEvent, Shutdown, Timing};

use crate::arrivals::{trace, Burst};
use crate::cli::Cli;
use crate::mix::{cpu_fork, cpu_job, io_job, Kind};

/// Why a run could not be done: a command line that cannot work (exit 2),
/// or a world that does not let it (exit 1).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Run(String),
}

/// What became of one job.
pub struct Outcome {
    pub kind: Kind,
    /// The job's checksum and its queue wait and run time, or its panic.
    pub result: Result<(u64, Timing), JobError>,
}

/// What a run produced.
pub struct Session {
    pub bursts: Vec<Burst>,
    /// How long submitting each burst took: above a few µs, the queue was
    /// full and the submitter waited (backpressure).
    pub submitting: Vec<Duration>,
    /// Every job's outcome, by job number.
    pub outcomes: Vec<Outcome>,
    /// From the first submit to the last job's end.
    pub elapsed: Duration,
    pub timeline: Vec<Sample>,
    pub events: Vec<ScaleEvent>,
    pub report: Report,
}

// ANCHOR: run
/// Run the trace the flags describe on the pool they describe.
pub fn run(cli: &Cli) -> Result<Session, Failure> {
    cli.check().map_err(Failure::Usage)?;
    let pool = Pool::new(cli.pool_config()).map_err(|e| Failure::Usage(e.to_string()))?;
    let fork_join = match cli.steal {
        false => None,
        true => {
            let scheduling = match cli.shared_queue {
                true => Scheduling::SharedQueue,
                false => Scheduling::Stealing,
            };
            let workers = may::config().get_workers();
            let pool = ForkJoinPool::new(workers, scheduling)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            Some(Arc::new(pool))
        }
    };
    let kinds = cli.mix.kinds(cli.jobs, cli.seed);
    let bursts = trace(cli.jobs, cli.burst, cli.gap);
    let mut handles: Vec<JobHandle<u64>> = Vec::with_capacity(cli.jobs);
    let mut submitting = Vec::with_capacity(bursts.len());
    let started = Instant::now();
    for burst in &bursts {
        // The main thread is an OS thread, not a may worker: a std sleep
        // holds up no coroutine.
        if let Some(early) = (started + burst.at).checked_duration_since(Instant::now()) {
            std::thread::sleep(early);
        }
        let submitted = Instant::now();
        for job in burst.jobs.clone() {
            let body = job_body(cli, job, kinds[job], fork_join.clone());
            let handle = pool
                .submit(body)
                .map_err(|e| Failure::Run(format!("job {job}: {e}")))?;
            handles.push(handle);
        }
        submitting.push(submitted.elapsed());
    }
    let outcomes = handles
        .into_iter()
        .zip(kinds)
        .map(|(handle, kind)| Outcome {
            kind,
            result: handle.join_timed(),
        })
        .collect();
    let elapsed = started.elapsed();
    let (timeline, events) = (pool.timeline(), pool.events());
    let report = pool.shutdown(Shutdown::Drain);
    Ok(Session {
        bursts,
        submitting,
        outcomes,
        elapsed,
        timeline,
        events,
        report,
    })
}

/// Job `job`'s closure: wait or compute, or panic if `--panic-every` says
/// so. Each CPU job hashes from its own seed, so the checksum does not
/// depend on which worker ran what.
fn job_body(
    cli: &Cli,
    job: usize,
    kind: Kind,
    fork_join: Option<Arc<ForkJoinPool>>,
) -> impl FnOnce() -> u64 + Send + 'static {
    let (wait, rounds, seed) = (cli.io_wait, cli.cpu_work, cli.seed ^ job as u64);
    let panics = cli.panic_every > 0 && (job + 1) % cli.panic_every == 0;
    move || {
        if panics {
            panic!("job {job} panics on purpose (--panic-every)");
        }
        match (kind, fork_join) {
            (Kind::Io, _) => io_job(wait),
            (Kind::Cpu, None) => cpu_job(seed, rounds),
            (Kind::Cpu, Some(pool)) => pool.install(|worker| cpu_fork(worker, seed, 0, rounds)),
        }
    }
}
// ANCHOR_END: run
