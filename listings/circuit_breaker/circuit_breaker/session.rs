//! One run of the script: the protections the flags ask for, the backend
//! (built in, or an outside one that must answer at start), the phase
//! driver and the callers; what came of it, for the timeline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::breaker::{Breaker, ConfigError, RetryBudget, Transition};
use may_patterns::clock::MonotonicClock;

use crate::client::{self, CallRecord, Protection};
use crate::config::{Budget, Cli};
use crate::phases;

/// Why a run could not be done: a command line that cannot work (exit 2),
/// or a world that does not let it (exit 1).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Run(String),
}

/// What a run produced.
pub struct Session {
    /// Every call, in the order they started.
    pub records: Vec<CallRecord>,
    /// Every change of the breaker's state, in order (none without one).
    pub transitions: Vec<Transition>,
    /// Requests the built-in backend read; `None` for an outside backend.
    pub backend_requests: Option<u64>,
}

// ANCHOR: protection
/// The protections the flags ask for, all on `clock`.
pub fn protection(cli: &Cli, clock: MonotonicClock) -> Result<Protection, Failure> {
    let usage = |e: ConfigError| Failure::Usage(e.to_string());
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
/// Run the script once; may must be configured already. Time 0 of the
/// records and transitions is the start of the first phase.
pub fn run(cli: &Cli) -> Result<Session, Failure> {
    let period = cli.caller_period().map_err(Failure::Usage)?;
    let phases = &cli.phases.0;
    let clock = MonotonicClock::new();
    let protection = protection(cli, clock)?;
    let transitions = protection.breaker.as_ref().map(Breaker::subscribe);
    let (built_in, addr) = match cli.backend {
        Some(addr) => {
            // An outside backend that is down before the run is a mistake,
            // not an outage to watch: say so instead of a timeline of errors.
            may_patterns::net::connect_timeout(&addr, Duration::from_secs(1))
                .map_err(|e| Failure::Run(format!("cannot reach the backend at {addr}: {e}")))?;
            (None, addr)
        }
        None => {
            let mut config = BackendConfig::new("shop", Duration::ZERO);
            config.seed = cli.seed;
            let backend = Backend::start(config)
                .map_err(|e| Failure::Run(format!("cannot start the built-in backend: {e}")))?;
            backend.set_behaviour(phases::behaviour(phases[0].kind));
            let addr = backend.addr;
            (Some(backend), addr)
        }
    };
    let (_, end) = phases::starts(phases);
    let records = std::thread::scope(|s| {
        if let Some(backend) = &built_in {
            s.spawn(|| phases::drive(backend, phases, &clock));
        }
        let protection = Arc::new(protection);
        client::run_callers(
            addr,
            protection,
            clock,
            cli.concurrency,
            period,
            end,
            cli.seed,
        )
    })
    .map_err(|e| Failure::Run(format!("cannot start the callers' alarm thread: {e}")))?;
    Ok(Session {
        records,
        // Every transition was sent before the callers were joined.
        transitions: transitions.map_or_else(Vec::new, |rx| rx.try_iter().collect()),
        backend_requests: built_in.map(|b| b.stats.requests.load(Ordering::SeqCst)),
    })
}
// ANCHOR_END: run
