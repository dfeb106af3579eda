//! A pool of backends shared by the coroutines that forward requests.
//!
//! Counters are atomics, read and bumped without a lock. The pick itself
//! (round-robin cursor, smooth WRR scores, the RNG) and each backend's health
//! sit behind `may::sync::Mutex`es held only for a few arithmetic steps,
//! never across I/O: a coroutine forwarding a request holds only its
//! [`Lease`], which is two atomics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::sync::Mutex;

use super::algorithm::{Algorithm, Candidate, PickState};
use super::health::{Health, HealthRule, Transition};
use super::slow_start::effective_weight;
use crate::clock::Clock;

/// One backend as configured.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// A label for stats (a host name, or the address).
    pub name: String,
    pub addr: SocketAddr,
    /// Relative share of traffic; at least 1.
    pub weight: u32,
}

impl BackendConfig {
    /// A backend of weight 1 named after its address.
    pub fn new(addr: SocketAddr) -> Self {
        BackendConfig {
            name: addr.to_string(),
            addr,
            weight: 1,
        }
    }

    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// How a leased request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
}

/// What changes under the backend's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub health: Health,
    pub draining: bool,
    /// When it last came up (for slow start); `None` if up since the start.
    pub up_at: Option<Duration>,
    pub last_change: Duration,
}

pub(crate) struct Backend {
    pub config: BackendConfig,
    pub status: Mutex<Status>,
    pub in_flight: AtomicU64,
    pub picks: AtomicU64,
    pub errors: AtomicU64,
    pub checks_passed: AtomicU64,
    pub checks_failed: AtomicU64,
}

pub(crate) struct Shared {
    pub backends: Vec<Backend>,
    pub algorithm: Algorithm,
    pub rule: HealthRule,
    pub slow_start: Duration,
    pub clock: Arc<dyn Clock>,
    pick: Mutex<PickState>,
}

/// The pool; clones share one set of backends.
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
}

/// How a pool is built.
pub struct PoolConfig {
    pub algorithm: Algorithm,
    pub rule: HealthRule,
    /// HAProxy's `slowstart`; zero for none.
    pub slow_start: Duration,
    /// Seed of power-of-two's RNG, so tests replay its choices.
    pub seed: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            algorithm: Algorithm::RoundRobin,
            rule: HealthRule::default(),
            slow_start: Duration::ZERO,
            seed: 0x5eed,
        }
    }
}

impl Pool {
    /// A pool over `backends`, all up. Panics on a weight of 0.
    pub fn new(backends: Vec<BackendConfig>, config: PoolConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let n = backends.len();
        let backends = backends
            .into_iter()
            .map(|config| {
                assert!(config.weight >= 1, "a backend's weight is at least 1");
                Backend {
                    config,
                    status: Mutex::new(Status {
                        health: Health::new(true),
                        draining: false,
                        up_at: None,
                        last_change: now,
                    }),
                    in_flight: AtomicU64::new(0),
                    picks: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    checks_passed: AtomicU64::new(0),
                    checks_failed: AtomicU64::new(0),
                }
            })
            .collect();
        Pool {
            shared: Arc::new(Shared {
                backends,
                algorithm: config.algorithm,
                rule: config.rule,
                slow_start: config.slow_start,
                clock,
                pick: Mutex::new(PickState {
                    cursor: 0,
                    current: vec![0; n],
                    rng: fastrand::Rng::with_seed(config.seed),
                }),
            }),
        }
    }

    /// The backends' addresses, in pool order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.shared.backends.iter().map(|b| b.config.addr).collect()
    }

    /// A usable backend for one request, or `None` if every backend is down
    /// or draining. The lease counts the request as in flight until dropped.
    pub fn pick(&self) -> Option<Lease> {
        self.pick_except(&[])
    }

    /// [`pick`](Self::pick) among the usable backends not in `tried`: a
    /// retry's pick, which never lands on a backend the request already
    /// failed on (so no pick is given back unused, and `picks` counts only
    /// requests sent). `None` if no other backend is usable.
    pub fn pick_except(&self, tried: &[SocketAddr]) -> Option<Lease> {
        let now = self.shared.clock.now();
        let mut state = self.shared.pick.lock().unwrap();
        let usable: Vec<Candidate> = self
            .shared
            .backends
            .iter()
            .enumerate()
            .filter_map(|(index, b)| {
                if tried.contains(&b.config.addr) {
                    return None;
                }
                let status = *b.status.lock().unwrap();
                if !status.health.is_up() || status.draining {
                    return None;
                }
                Some(Candidate {
                    index,
                    weight: self.effective(b, &status, now) as u64,
                    in_flight: b.in_flight.load(Ordering::SeqCst),
                })
            })
            .collect();
        let index = self.shared.algorithm.choose(&usable, &mut state)?;
        let backend = &self.shared.backends[index];
        // Counted before the pick lock is released, so the next pick sees it.
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        backend.picks.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            shared: self.shared.clone(),
            index,
        })
    }

    pub(crate) fn effective(&self, b: &Backend, status: &Status, now: Duration) -> u32 {
        match status.up_at {
            Some(at) => effective_weight(b.config.weight, now - at, self.shared.slow_start),
            None => b.config.weight,
        }
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.shared
            .backends
            .iter()
            .position(|b| b.config.addr == addr)
    }

    /// Stop new picks of `addr`; its leases finish normally. False if no
    /// backend has that address.
    pub fn drain(&self, addr: SocketAddr) -> bool {
        self.set_draining(addr, true)
    }

    /// Let `addr` be picked again.
    pub fn undrain(&self, addr: SocketAddr) -> bool {
        self.set_draining(addr, false)
    }

    fn set_draining(&self, addr: SocketAddr, draining: bool) -> bool {
        let Some(i) = self.index_of(addr) else {
            return false;
        };
        let mut status = self.shared.backends[i].status.lock().unwrap();
        if status.draining != draining {
            status.draining = draining;
            status.last_change = self.shared.clock.now();
        }
        true
    }

    /// Record an active check of backend `index`.
    pub(crate) fn record_check(&self, index: usize, ok: bool) -> Option<Transition> {
        let b = &self.shared.backends[index];
        let counter = if ok {
            &b.checks_passed
        } else {
            &b.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut status = b.status.lock().unwrap();
        let change = status.health.check(ok, self.shared.rule);
        self.note(&mut status, change);
        change
    }

    /// Record a check of `addr` done elsewhere (a program's own probe).
    pub fn check_result(&self, addr: SocketAddr, ok: bool) -> Option<Transition> {
        self.record_check(self.index_of(addr)?, ok)
    }

    /// Bring a backend up by hand (after a passive mark, with no checker).
    pub fn mark_up(&self, addr: SocketAddr) -> bool {
        let Some(i) = self.index_of(addr) else {
            return false;
        };
        let mut status = self.shared.backends[i].status.lock().unwrap();
        if !status.health.is_up() {
            status.health = Health::new(true);
            self.note(&mut status, Some(Transition::WentUp));
        }
        true
    }

    fn note(&self, status: &mut Status, change: Option<Transition>) {
        if let Some(change) = change {
            let now = self.shared.clock.now();
            status.last_change = now;
            if change == Transition::WentUp {
                status.up_at = Some(now);
            }
        }
    }
}

/// One request in flight on one backend. Dropping it ends the request with
/// no verdict (as a cancelled request); [`Lease::done`] also reports how it
/// went, for passive checks and stats.
pub struct Lease {
    shared: Arc<Shared>,
    index: usize,
}

impl Lease {
    pub fn addr(&self) -> SocketAddr {
        self.shared.backends[self.index].config.addr
    }

    /// End the request with its outcome: errors and timeouts count towards
    /// the backend's `fall`, a success ends a failure streak.
    pub fn done(self, outcome: Outcome) -> Option<Transition> {
        let b = &self.shared.backends[self.index];
        let ok = outcome == Outcome::Ok;
        if !ok {
            b.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut status = b.status.lock().unwrap();
        let change = status.health.observe(ok, self.shared.rule);
        if change.is_some() {
            status.last_change = self.shared.clock.now();
        }
        change
        // `self` drops here and takes the request out of flight.
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.backends[self.index]
            .in_flight
            .fetch_sub(1, Ordering::SeqCst);
    }
}
