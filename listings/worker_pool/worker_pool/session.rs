//! One run: the pool the flags ask for, the trace submitted burst by burst
//! from the main thread, every job's outcome and timing, and the pool's own
//! record of its size over time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::blocking::BlockingPool;
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
    /// From the pool's start to the last job's end.
    pub elapsed: Duration,
    pub timeline: Vec<Sample>,
    pub events: Vec<ScaleEvent>,
    pub report: Report,
}

// ANCHOR: run
/// Run the trace the flags describe on the pool they describe.
pub fn run(cli: &Cli) -> Result<Session, Failure> {
    cli.check().map_err(Failure::Usage)?;
    // The pool's samples and events count from its start: so do the
    // bursts, to draw them on one time axis.
    let started = Instant::now();
    let pool = Pool::new(cli.pool_config()).map_err(|e| Failure::Usage(e.to_string()))?;
    let cpu = cpu_threads(cli)?;
    let kinds = cli.mix.kinds(cli.jobs, cli.seed);
    let bursts = trace(cli.jobs, cli.burst, cli.gap);
    let mut handles: Vec<JobHandle<u64>> = Vec::with_capacity(cli.jobs);
    let mut submitting = Vec::with_capacity(bursts.len());
    for burst in &bursts {
        // The main thread is an OS thread, not a may worker: a std sleep
        // holds up no coroutine.
        if let Some(early) = (started + burst.at).checked_duration_since(Instant::now()) {
            std::thread::sleep(early);
        }
        let submitted = Instant::now();
        for job in burst.jobs.clone() {
            let body = job_body(cli, job, kinds[job], cpu.clone());
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

/// Where the CPU jobs run: OS threads, never the pool's worker coroutines.
#[derive(Clone)]
enum CpuThreads {
    /// Each job whole on one thread (the `spawn_blocking` idea, step 5).
    Blocking(Arc<BlockingPool>),
    /// Each job split over the threads (step 4).
    ForkJoin(Arc<ForkJoinPool>),
}

fn cpu_threads(cli: &Cli) -> Result<CpuThreads, Failure> {
    if !cli.steal {
        // Room for a job from every worker, so a worker hands its job over
        // without waiting for room.
        let pool = BlockingPool::new(cli.cpu_threads, cli.max)
            .map_err(|e| Failure::Run(format!("cannot start the CPU threads: {e}")))?;
        return Ok(CpuThreads::Blocking(Arc::new(pool)));
    }
    let scheduling = match cli.shared_queue {
        true => Scheduling::SharedQueue,
        false => Scheduling::Stealing,
    };
    let pool = ForkJoinPool::new(cli.cpu_threads, scheduling)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(CpuThreads::ForkJoin(Arc::new(pool)))
}

/// Job `job`'s closure: wait, or hand the hashing to the CPU threads and
/// park until it is done, or panic if `--panic-every` says so. Each CPU job
/// hashes from its own seed, so the checksum does not depend on which
/// thread ran what.
fn job_body(
    cli: &Cli,
    job: usize,
    kind: Kind,
    cpu: CpuThreads,
) -> impl FnOnce() -> u64 + Send + 'static {
    let (wait, rounds, seed) = (cli.io_wait, cli.cpu_work, cli.seed ^ job as u64);
    let panics = cli.panic_every > 0 && (job + 1).is_multiple_of(cli.panic_every);
    move || {
        if panics {
            panic!("job {job} panics on purpose (--panic-every)");
        }
        match (kind, cpu) {
            (Kind::Io, _) => io_job(wait),
            (Kind::Cpu, CpuThreads::Blocking(threads)) => threads
                .run(move || cpu_job(seed, rounds))
                .unwrap_or_else(|e| panic!("job {job}: {e:?}")),
            (Kind::Cpu, CpuThreads::ForkJoin(pool)) => {
                pool.install(|worker| cpu_fork(worker, seed, 0, rounds))
            }
        }
    }
}
// ANCHOR_END: run
