//! Exercise 2 (solution): a request limit per client address. Each client
//! address may send `RATE` requests per `PERIOD`; past that it gets `429
//! Too Many Requests` with a `Retry-After` that is long enough, and
//! nothing is forwarded. The limiter keeps at most `MAX_CLIENTS`
//! addresses: a flood of new addresses cannot grow it, and an idle
//! address is the first to be forgotten. The limits and the demo are in
//! `exercise2_burst.rs`, which the starter shares.
//!
//! Run it: `cargo run --example exercise2_client_rate_limit_solution`

#[path = "exercise2_burst.rs"]
mod burst;
#[path = "exercise_forwarder.rs"]
mod forwarder;

use std::net::IpAddr;
use std::time::Duration;

use burst::{MAX_CLIENTS, PERIOD, RATE};
use forwarder::{Refusal, Rule};
use may_patterns::clock::{Clock, MonotonicClock};
use may_patterns::ratelimit::{Algorithm, Decision, Gcra, Limiter, Quota};

// ANCHOR: client_limit
/// At most a quota of requests per client address, for at most
/// `max_clients` addresses (the limiter forgets idle ones first).
struct ClientLimit<C: Clock = MonotonicClock> {
    limiter: Limiter<IpAddr, Gcra, C>,
}

impl ClientLimit {
    fn new(quota: Quota, max_clients: usize) -> ClientLimit {
        ClientLimit::with_clock(quota, max_clients, MonotonicClock::new())
    }
}

impl<C: Clock> ClientLimit<C> {
    fn with_clock(quota: Quota, max_clients: usize, clock: C) -> ClientLimit<C> {
        let limiter = Limiter::with_clock(Gcra::new(quota), max_clients, clock);
        ClientLimit { limiter }
    }
}

impl<C: Clock> Rule for ClientLimit<C> {
    fn check(&self, client: IpAddr, _host: &str) -> Result<(), Refusal> {
        let Decision::Denied { retry_after, .. } = self.limiter.check(&client, 1) else {
            return Ok(());
        };
        let quota = self.limiter.algorithm().quota();
        Err(Refusal {
            status: 429,
            reason: "Too Many Requests",
            headers: vec![(
                "Retry-After".to_owned(),
                whole_seconds(retry_after).to_string(),
            )],
            body: format!(
                "{client} is over its limit of {} requests per {:?}",
                quota.rate(),
                quota.period()
            ),
        })
    }
}

/// `Retry-After` counts whole seconds (RFC 9110 10.2.3): round up, so a
/// client that waits what it is told finds the quota there.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}
// ANCHOR_END: client_limit

fn quota() -> Quota {
    Quota::new(RATE, PERIOD, RATE).expect("a valid quota")
}

fn main() {
    burst::main(
        "exercise2_client_rate_limit_solution",
        ClientLimit::new(quota(), MAX_CLIENTS),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::clock::ManualClock;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    // ANCHOR: tests
    #[test]
    fn a_client_over_its_quota_gets_429_and_comes_back_after_retry_after() {
        may_patterns::runtime::configure_for_tests();
        let answers = burst::demo(ClientLimit::new(quota(), MAX_CLIENTS)).unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
        assert_eq!(statuses, [200, 200, 200, 429, 429, 200]);
        let (_, retry, body) = &answers[3];
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(
            body.starts_with("127.0.0.1 is over its limit of 3"),
            "{body}"
        );
    }

    #[test]
    fn retry_after_is_rounded_up_and_each_client_has_its_own_quota() {
        let clock = ManualClock::new();
        let limit = ClientLimit::with_clock(quota(), MAX_CLIENTS, clock.clone());
        for _ in 0..RATE {
            assert!(limit.check(ip(1), "h").is_ok());
        }
        let refusal = limit.check(ip(1), "h").unwrap_err();
        assert_eq!(refusal.status, 429);
        // The next request is due in 2 s / 3: said as 1 s, which is enough.
        assert_eq!(
            refusal.headers,
            [("Retry-After".to_owned(), "1".to_owned())]
        );
        assert!(limit.check(ip(2), "h").is_ok());
        clock.advance(Duration::from_secs(1));
        assert!(limit.check(ip(1), "h").is_ok());
    }

    #[test]
    fn at_most_max_clients_are_kept_and_an_idle_one_goes_first() {
        let clock = ManualClock::new();
        let limit = ClientLimit::with_clock(quota(), 64, clock.clone());
        for n in 0..10_000 {
            let _ = limit.check(ip(n), "h");
        }
        assert!(limit.limiter.keys() <= 64);

        let one = ClientLimit::with_clock(quota(), 1, clock.clone());
        assert!(one.check(ip(1), "h").is_ok());
        clock.advance(PERIOD); // its quota is full again: nothing to remember
        assert!(one.check(ip(2), "h").is_ok());
        assert_eq!((one.limiter.expired(), one.limiter.evicted()), (1, 0));
    }
    // ANCHOR_END: tests
}
