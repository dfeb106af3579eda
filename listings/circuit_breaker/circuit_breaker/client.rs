//! The callers: coroutines that call the backend at a steady rate, each call
//! through a timeout, retries with backoff, a retry budget and the breaker,
//! and keep a record of every call for the timeline.

use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::time::Duration;

use may::go;
use may::net::TcpStream;
use may_patterns::alarm::Alarm;
use may_patterns::breaker::{Breaker, RetryBudget, RetryPolicy};
use may_patterns::clock::{Clock, MonotonicClock};
use may_patterns::http::{self, Limits};
use may_patterns::timeout::for_may;

/// What stands between a caller and the backend. `None` leaves a block out.
pub struct Protection {
    /// Each attempt's timeout (connect, and every read and write).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub budget: Option<RetryBudget<MonotonicClock>>,
    pub breaker: Option<Breaker<MonotonicClock>>,
}

/// How a call ended, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An attempt got `200 OK`.
    Ok,
    /// Every attempt sent failed (an error status, a timeout, a refused
    /// connection), or the retries were cut short by the budget or the
    /// breaker.
    Failed,
    /// The breaker refused the first attempt: nothing reached the backend,
    /// and the caller falls back at once.
    Rejected,
}

/// One call, timed by the shared clock.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub started: Duration,
    pub ended: Duration,
    pub outcome: Outcome,
    /// When each attempt that reached for the backend started.
    pub attempts: Vec<Duration>,
}

impl CallRecord {
    pub fn latency(&self) -> Duration {
        self.ended - self.started
    }
}

// ANCHOR: call
/// One call: attempts until one succeeds, the retries run out, the budget
/// says no, or the breaker rejects.
pub fn call(
    addr: SocketAddr,
    protection: &Protection,
    clock: &MonotonicClock,
    alarm: &Alarm,
    rng: &mut fastrand::Rng,
) -> CallRecord {
    let started = clock.now();
    let mut attempts = Vec::new();
    let outcome = loop {
        // The breaker first: an open breaker answers without a socket.
        let permit = match protection.breaker.as_ref().map(Breaker::try_call) {
            Some(Err(_rejected)) if attempts.is_empty() => break Outcome::Rejected,
            Some(Err(_rejected)) => break Outcome::Failed,
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        if attempts.is_empty() {
            if let Some(budget) = &protection.budget {
                budget.record_call(); // every call earns a share of a retry
            }
        }
        attempts.push(clock.now());
        let ok = matches!(attempt(addr, protection.timeout), Ok(200));
        match permit {
            Some(permit) if ok => permit.success(),
            Some(permit) => permit.failure(),
            None => {}
        }
        if ok {
            break Outcome::Ok;
        }
        let retry = attempts.len() as u32 - 1;
        let allowed = retry < protection.retry.max_retries
            && protection
                .budget
                .as_ref()
                .is_none_or(RetryBudget::try_retry);
        if !allowed {
            break Outcome::Failed;
        }
        // On the alarm thread, not a may timer (see may_patterns::alarm).
        alarm.sleep(protection.retry.delay(retry, rng));
    };
    CallRecord {
        started,
        ended: clock.now(),
        outcome,
        attempts,
    }
}
// ANCHOR_END: call

// ANCHOR: attempt
/// `GET /search?q=lamp`, within the timeout: the status it got.
///
/// The connection is made on a `may_patterns::blocking` thread, then handed
/// to may: may 0.3.51's own connect registers the coroutine and goes on
/// reading its connect state, which another worker may already have
/// finished and dropped (`src/io/sys/unix/net/tcp_stream_connect.rs:113-130`).
/// At 200 connections a second on two busy cores that panicked ("no data to
/// deref for OptionCell") or crashed the process within seconds.
fn attempt(addr: SocketAddr, timeout: Duration) -> io::Result<u16> {
    let timeout = for_may(timeout);
    let connect = move || std::net::TcpStream::connect_timeout(&addr, timeout);
    let socket = may_patterns::blocking::run(connect)??;
    // Safety: `into_raw_fd` hands the descriptor over; nothing else owns it.
    let mut stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    http::write_request(&mut stream, "GET", "/search?q=lamp", "backend", &[], b"")?;
    let response = http::read_response(&mut BufReader::new(stream), &Limits::default())?;
    Ok(response.status)
}
// ANCHOR_END: attempt

// ANCHOR: callers
/// `concurrency` coroutines, each calling every `period` (their starts
/// spread over one period) until `until` by `clock`; every call's record.
/// A call that takes longer than `period` delays its caller's next one.
/// Their waits (pacing, backoff) are kept by one [`Alarm`]: a few thousand
/// short may sleeps a second is what may's timer race needs.
pub fn run_callers(
    addr: SocketAddr,
    protection: Arc<Protection>,
    clock: MonotonicClock,
    concurrency: u32,
    period: Duration,
    until: Duration,
    seed: u64,
) -> io::Result<Vec<CallRecord>> {
    let alarm = Arc::new(Alarm::new()?);
    let callers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (protection, alarm) = (protection.clone(), alarm.clone());
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(u64::from(i)));
            let mut next = clock.now() + period * i / concurrency;
            go!(move || {
                let mut records = Vec::new();
                while next < until {
                    alarm.sleep(next.saturating_sub(clock.now()));
                    records.push(call(addr, &protection, &clock, &alarm, &mut rng));
                    next += period;
                }
                records
            })
        })
        .collect();
    let mut records: Vec<CallRecord> = callers
        .into_iter()
        .flat_map(|caller| caller.join().expect("a caller does not panic"))
        .collect();
    records.sort_by_key(|r| r.started);
    Ok(records)
}
// ANCHOR_END: callers

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::backend::{Backend, BackendConfig};
    use may_patterns::breaker::{BreakerConfig, Jitter};
    use may_patterns::runtime::configure_for_tests;

    fn protection(retries: u32, breaker: bool) -> Protection {
        let clock = MonotonicClock::new();
        Protection {
            timeout: Duration::from_millis(200),
            retry: RetryPolicy {
                max_retries: retries,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
                jitter: Jitter::Full,
            },
            budget: None,
            breaker: breaker.then(|| Breaker::with_clock(BreakerConfig::default(), clock).unwrap()),
        }
    }

    fn one_call(backend: &Backend, protection: Protection) -> CallRecord {
        let addr = backend.addr;
        go!(move || {
            let (clock, alarm) = (MonotonicClock::new(), Alarm::new().unwrap());
            call(
                addr,
                &protection,
                &clock,
                &alarm,
                &mut fastrand::Rng::with_seed(1),
            )
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_failing_call_is_retried_and_a_good_one_is_not() {
        configure_for_tests();
        let mut config = BackendConfig::new("fails", Duration::ZERO);
        config.fail_fraction = 1.0;
        let failing = Backend::start(config).unwrap();
        let record = one_call(&failing, protection(2, false));
        assert_eq!(record.outcome, Outcome::Failed);
        assert_eq!(record.attempts.len(), 3, "one call and two retries");
        let healthy = Backend::start(BackendConfig::new("ok", Duration::ZERO)).unwrap();
        let record = one_call(&healthy, protection(2, false));
        assert_eq!(record.outcome, Outcome::Ok);
        assert_eq!(record.attempts.len(), 1);
    }

    #[test]
    fn an_open_breaker_rejects_without_sending_anything() {
        configure_for_tests();
        let mut config = BackendConfig::new("fails", Duration::ZERO);
        config.fail_fraction = 1.0;
        let failing = Backend::start(config).unwrap();
        let addr = failing.addr;
        let records = go!(move || {
            let protection = protection(0, true);
            let (clock, alarm) = (MonotonicClock::new(), Alarm::new().unwrap());
            let mut rng = fastrand::Rng::with_seed(1);
            (0..30)
                .map(|_| call(addr, &protection, &clock, &alarm, &mut rng))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        let rejected = records
            .iter()
            .filter(|r| r.outcome == Outcome::Rejected)
            .count();
        assert!(
            rejected >= 10,
            "the default breaker trips after its 10 minimum calls"
        );
        assert!(records
            .iter()
            .filter(|r| r.outcome == Outcome::Rejected)
            .all(|r| r.attempts.is_empty()));
        let reached = failing
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reached as usize, 30 - rejected);
    }
}
