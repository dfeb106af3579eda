//! Name resolution off the may workers, behind a small cache.
//!
//! `getaddrinfo` blocks its thread, so the lookup runs on
//! `may_patterns::blocking`'s pool while the coroutine parks. That pool has
//! a few threads: without a cache, every request to one busy name would
//! queue another lookup of it. [`Resolver`] keeps answers for a fixed TTL
//! (`getaddrinfo` reports none), keeps failures for a shorter one (so a
//! flood of requests to a dead name is one lookup, not a flood), bounds the
//! number of names it holds, and lets at most one lookup per name be in
//! flight: the other requests for that name wait for its answer.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use may::sync::SyncFlag;
use may_patterns::clock::{Clock, MonotonicClock};

/// The longest name DNS can carry (RFC 1035 2.3.4, in its text form).
const MAX_NAME: usize = 253;

/// How long answers stay, and how many names the cache holds.
#[derive(Debug, Clone, Copy)]
pub struct DnsConfig {
    /// How long an answer is reused; zero turns the cache off (every
    /// request looks its name up, and concurrent lookups are not shared).
    pub ttl: Duration,
    /// How long a failed lookup is reused.
    pub negative_ttl: Duration,
    /// Names held at most (answers, failures and lookups in flight).
    pub entries: usize,
}

/// A name lookup: every address of `host`, port left out. It may block
/// (the default one parks on the blocking pool), and is never called with
/// the cache's lock held.
pub type Lookup = Box<dyn Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync>;

/// What the summary prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsStats {
    /// Lookups started (cache misses).
    pub lookups: u64,
    /// Answers (or failures) served from the cache.
    pub hits: u64,
    /// Requests that waited for another request's lookup of the same name.
    pub shared: u64,
}

/// A bounded TTL cache in front of a [`Lookup`].
pub struct Resolver {
    config: DnsConfig,
    clock: Box<dyn Clock>,
    lookup: Lookup,
    /// A std Mutex: it is held only to read or change the map, never across
    /// a lookup or a wait, so it cannot freeze a worker for long nor be
    /// carried across a park to another thread.
    cache: Mutex<HashMap<String, Slot>>,
    lookups: AtomicU64,
    hits: AtomicU64,
    shared: AtomicU64,
}

enum Slot {
    Ready {
        answer: Answer,
        stored: Duration,
        expires: Duration,
    },
    Pending(Arc<Flight>),
}

/// A lookup's outcome, cloned to every request that shares it.
type Answer = Result<Arc<[IpAddr]>, Failure>;

/// An `io::Error` is not `Clone`: keep what is needed to make another.
#[derive(Clone)]
struct Failure {
    kind: ErrorKind,
    message: String,
}

/// One lookup in flight: its answer, and a flag that wakes the requests
/// waiting for it (a may primitive, so a waiting coroutine parks and its
/// worker runs others).
struct Flight {
    answer: OnceLock<Answer>,
    done: SyncFlag,
}

impl Resolver {
    /// The system resolver (`getaddrinfo` on the blocking pool) on the real
    /// clock.
    pub fn new(config: DnsConfig) -> Self {
        Resolver::with_parts(
            config,
            Box::new(MonotonicClock::new()),
            Box::new(system_lookup),
        )
    }

    /// Any clock and lookup (tests move time and count lookups).
    pub fn with_parts(config: DnsConfig, clock: Box<dyn Clock>, lookup: Lookup) -> Self {
        Resolver {
            config,
            clock,
            lookup,
            cache: Mutex::new(HashMap::new()),
            lookups: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            shared: AtomicU64::new(0),
        }
    }

    /// Every address `host:port` resolves to. An IP literal (`[v6]` too)
    /// needs no lookup and is not cached; a name longer than DNS allows is
    /// refused without one, so junk names cannot fill the cache with
    /// kilobyte keys.
    pub fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if host.len() > MAX_NAME {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a host name of {} bytes (DNS allows {MAX_NAME})",
                    host.len()
                ),
            ));
        }
        let ips = if self.config.ttl.is_zero() {
            self.look_up(host)
        } else {
            self.cached(&host.to_ascii_lowercase())
        };
        match ips {
            Ok(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            Err(f) => Err(io::Error::new(f.kind, format!("{host}: {}", f.message))),
        }
    }

    pub fn stats(&self) -> DnsStats {
        DnsStats {
            lookups: self.lookups.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            shared: self.shared.load(Ordering::Relaxed),
        }
    }

    // ANCHOR: cached
    fn cached(&self, key: &str) -> Answer {
        let now = self.clock.now();
        let mut cache = self.lock();
        match cache.get(key) {
            Some(Slot::Ready {
                answer, expires, ..
            }) if *expires > now => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return answer.clone();
            }
            Some(Slot::Pending(flight)) => {
                let flight = flight.clone();
                drop(cache);
                self.shared.fetch_add(1, Ordering::Relaxed);
                flight.done.wait();
                return flight.answer.get().cloned().unwrap_or_else(|| {
                    Err(Failure {
                        kind: ErrorKind::Other,
                        message: "the lookup was abandoned".into(),
                    })
                });
            }
            _ => {}
        }
        cache.remove(key);
        if !make_room(&mut cache, now, self.config.entries) {
            // Every slot is a lookup in flight: look up without caching
            // rather than wait for room.
            drop(cache);
            return self.look_up(key);
        }
        let flight = Arc::new(Flight {
            answer: OnceLock::new(),
            done: SyncFlag::new(),
        });
        cache.insert(key.to_owned(), Slot::Pending(flight.clone()));
        drop(cache);
        let guard = FlightGuard {
            resolver: self,
            key,
            flight: &flight,
        };
        let answer = self.look_up(key);
        let ttl = if answer.is_ok() {
            self.config.ttl
        } else {
            self.config.negative_ttl
        };
        let stored = self.clock.now();
        let _ = flight.answer.set(answer.clone());
        self.lock().insert(
            key.to_owned(),
            Slot::Ready {
                answer: answer.clone(),
                stored,
                expires: stored + ttl,
            },
        );
        drop(guard);
        answer
    }
    // ANCHOR_END: cached

    fn look_up(&self, host: &str) -> Answer {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        match (self.lookup)(host) {
            Ok(ips) if !ips.is_empty() => Ok(ips.into()),
            Ok(_) => Err(Failure {
                kind: ErrorKind::NotFound,
                message: "no address".into(),
            }),
            Err(e) => Err(Failure {
                kind: e.kind(),
                message: e.to_string(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // No code panics while holding it, but a poisoned map is still a
        // consistent one.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wakes the waiters however the lookup ends: if it unwound (a panic, a
/// cancelled coroutine) the slot is removed and they get an error instead
/// of waiting forever.
struct FlightGuard<'a> {
    resolver: &'a Resolver,
    key: &'a str,
    flight: &'a Arc<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if self.flight.answer.get().is_none() {
            let mut cache = self.resolver.lock();
            if matches!(cache.get(self.key), Some(Slot::Pending(f)) if Arc::ptr_eq(f, self.flight))
            {
                cache.remove(self.key);
            }
        }
        self.flight.done.fire();
    }
}

/// Make room for one more name: drop the expired answers, then the oldest
/// one. A scan of at most `entries` slots, done only on a miss when the
/// cache is full: small beside the lookup that follows. False when every
/// slot is a lookup in flight.
fn make_room(cache: &mut HashMap<String, Slot>, now: Duration, entries: usize) -> bool {
    if cache.len() < entries {
        return true;
    }
    cache.retain(|_, slot| !matches!(slot, Slot::Ready { expires, .. } if *expires <= now));
    if cache.len() < entries {
        return true;
    }
    let oldest = cache
        .iter()
        .filter_map(|(key, slot)| match slot {
            Slot::Ready { stored, .. } => Some((*stored, key)),
            Slot::Pending(_) => None,
        })
        .min()
        .map(|(_, key)| key.clone());
    match oldest {
        Some(key) => {
            cache.remove(&key);
            true
        }
        None => false,
    }
}

/// `getaddrinfo` on the blocking pool: the calling coroutine parks, its
/// worker serves others.
fn system_lookup(host: &str) -> io::Result<Vec<IpAddr>> {
    let host = host.to_owned();
    let addrs = may_patterns::blocking::run(move || (host.as_str(), 0).to_socket_addrs())??;
    Ok(addrs.map(|a| a.ip()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::clock::ManualClock;
    use may_patterns::runtime::configure_for_tests;
    use std::time::Instant;

    const CONFIG: DnsConfig = DnsConfig {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        entries: 1024,
    };

    /// A resolver whose lookups answer 192.0.2.1 for every name but
    /// `dead.test`, on a clock the test moves.
    fn counting(config: DnsConfig) -> (Resolver, ManualClock) {
        let clock = ManualClock::new();
        let lookup: Lookup = Box::new(|host| {
            if host == "dead.test" {
                Err(io::Error::new(ErrorKind::NotFound, "no such name"))
            } else {
                Ok(vec!["192.0.2.1".parse().unwrap()])
            }
        });
        (
            Resolver::with_parts(config, Box::new(clock.clone()), lookup),
            clock,
        )
    }

    #[test]
    fn a_second_request_is_a_hit_and_names_ignore_case() {
        let (r, _) = counting(CONFIG);
        assert_eq!(
            r.resolve("Example.test", 443).unwrap(),
            vec!["192.0.2.1:443".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("example.test", 80).unwrap(),
            vec!["192.0.2.1:80".parse().unwrap()]
        );
        assert_eq!(
            r.stats(),
            DnsStats {
                lookups: 1,
                hits: 1,
                shared: 0
            }
        );
    }

    #[test]
    fn answers_expire_after_the_ttl() {
        let (r, clock) = counting(CONFIG);
        r.resolve("a.test", 443).unwrap();
        clock.advance(CONFIG.ttl - Duration::from_millis(1));
        r.resolve("a.test", 443).unwrap();
        assert_eq!(r.stats().lookups, 1);
        clock.advance(Duration::from_millis(1));
        r.resolve("a.test", 443).unwrap();
        assert_eq!(r.stats().lookups, 2);
    }

    #[test]
    fn a_zero_ttl_looks_up_every_time() {
        let (r, _) = counting(DnsConfig {
            ttl: Duration::ZERO,
            ..CONFIG
        });
        r.resolve("a.test", 443).unwrap();
        r.resolve("a.test", 443).unwrap();
        assert_eq!(r.stats().lookups, 2);
    }

    #[test]
    fn the_bound_evicts_expired_names_then_the_oldest() {
        let (r, clock) = counting(DnsConfig {
            entries: 2,
            ..CONFIG
        });
        r.resolve("a.test", 443).unwrap();
        clock.advance(Duration::from_secs(1));
        r.resolve("b.test", 443).unwrap();
        clock.advance(Duration::from_secs(1));
        r.resolve("c.test", 443).unwrap(); // full: a, the oldest, goes
        assert_eq!(r.lock().len(), 2);
        r.resolve("b.test", 443).unwrap();
        r.resolve("c.test", 443).unwrap();
        assert_eq!(r.stats().lookups, 3, "b and c stayed");
        r.resolve("a.test", 443).unwrap();
        assert_eq!(r.stats().lookups, 4, "a was evicted");
    }

    #[test]
    fn an_expired_name_goes_before_an_older_live_one() {
        let (r, clock) = counting(DnsConfig {
            entries: 2,
            ..CONFIG
        });
        r.resolve("a.test", 443).unwrap();
        clock.advance(Duration::from_secs(1));
        r.resolve("dead.test", 443).unwrap_err();
        clock.advance(CONFIG.negative_ttl);
        r.resolve("b.test", 443).unwrap(); // full: dead.test has expired
        r.resolve("a.test", 443).unwrap();
        assert_eq!(r.stats().lookups, 3, "a stayed although older");
        assert_eq!(r.stats().hits, 1);
    }

    #[test]
    fn failures_are_cached_for_the_negative_ttl() {
        let (r, clock) = counting(CONFIG);
        for _ in 0..3 {
            let e = r.resolve("dead.test", 443).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound);
            assert!(e.to_string().contains("dead.test"), "{e}");
        }
        assert_eq!(r.stats().lookups, 1);
        clock.advance(CONFIG.negative_ttl);
        r.resolve("dead.test", 443).unwrap_err();
        assert_eq!(r.stats().lookups, 2);
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let lookup: Lookup = Box::new(|host| panic!("looked up {host}"));
        let r = Resolver::with_parts(CONFIG, Box::new(ManualClock::new()), lookup);
        assert_eq!(
            r.resolve("[::1]", 443).unwrap(),
            vec!["[::1]:443".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("10.1.2.3", 80).unwrap(),
            vec!["10.1.2.3:80".parse().unwrap()]
        );
    }

    #[test]
    fn names_too_long_for_dns_are_refused_without_a_lookup() {
        let (r, _) = counting(CONFIG);
        let e = r.resolve(&"a".repeat(MAX_NAME + 1), 443).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        r.resolve(&"a".repeat(MAX_NAME), 443).unwrap();
        assert_eq!(r.stats().lookups, 1);
    }

    #[test]
    fn concurrent_misses_share_one_lookup() {
        configure_for_tests();
        const N: u64 = 20;
        // The lookup waits for the gate, so every request arrives while it
        // is in flight.
        let gate = Arc::new(SyncFlag::new());
        let lookup_gate = gate.clone();
        let lookup: Lookup = Box::new(move |_| {
            lookup_gate.wait();
            Ok(vec!["192.0.2.7".parse().unwrap()])
        });
        let r = Arc::new(Resolver::with_parts(
            CONFIG,
            Box::new(ManualClock::new()),
            lookup,
        ));
        let requests: Vec<_> = (0..N)
            .map(|_| {
                let r = r.clone();
                may::go!(move || r.resolve("busy.test", 443))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.stats().shared < N - 1 {
            assert!(
                Instant::now() < deadline,
                "requests did not wait for the lookup in flight: {:?}",
                r.stats()
            );
            may::coroutine::sleep(Duration::from_millis(1));
        }
        gate.fire();
        for request in requests {
            assert_eq!(
                request.join().unwrap().unwrap(),
                vec!["192.0.2.7:443".parse().unwrap()]
            );
        }
        assert_eq!(
            r.stats(),
            DnsStats {
                lookups: 1,
                hits: 0,
                shared: N - 1
            }
        );
    }

    #[test]
    fn waiters_get_an_error_when_the_lookup_panics() {
        configure_for_tests();
        let gate = Arc::new(SyncFlag::new());
        let lookup_gate = gate.clone();
        let lookup: Lookup = Box::new(move |_| {
            lookup_gate.wait();
            panic!("the lookup failed badly");
        });
        let r = Arc::new(Resolver::with_parts(
            CONFIG,
            Box::new(ManualClock::new()),
            lookup,
        ));
        let first = {
            let r = r.clone();
            may::go!(move || r.resolve("a.test", 443))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.stats().lookups < 1 {
            assert!(Instant::now() < deadline, "the lookup never started");
            may::coroutine::sleep(Duration::from_millis(1));
        }
        let second = {
            let r = r.clone();
            may::go!(move || r.resolve("a.test", 443))
        };
        while r.stats().shared < 1 {
            assert!(Instant::now() < deadline, "the second request did not wait");
            may::coroutine::sleep(Duration::from_millis(1));
        }
        gate.fire();
        assert!(first.join().is_err(), "the panic ends its own coroutine");
        let e = second.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("abandoned"), "{e}");
        assert!(r.lock().is_empty(), "the abandoned slot is gone");
    }

    #[test]
    fn localhost_through_the_system_resolver() {
        configure_for_tests();
        let r = Resolver::new(CONFIG);
        let local = r.resolve("localhost", 80).unwrap();
        assert!(!local.is_empty());
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
