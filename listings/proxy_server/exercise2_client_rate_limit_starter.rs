//! Exercise 2 (starter): a request limit per client address. Each client
//! address may send `RATE` requests per `PERIOD`; past that it should get
//! `429 Too Many Requests` with a `Retry-After` that is long enough, and
//! nothing forwarded. At most `MAX_CLIENTS` addresses may be remembered,
//! idle ones forgotten first. The rule lets everything through for now,
//! as the demo shows. The limits and the demo are in `exercise2_burst.rs`,
//! which the solution shares. TODO: write `ClientLimit` with
//! `may_patterns::ratelimit`.
//!
//! Run it: `cargo run --example exercise2_client_rate_limit_starter`

#[path = "exercise2_burst.rs"]
mod burst;
#[path = "exercise_forwarder.rs"]
mod forwarder;

use std::net::IpAddr;

use forwarder::{Refusal, Rule};

// ANCHOR: client_limit
/// At most `RATE` requests per `PERIOD` per client address, for at most
/// `MAX_CLIENTS` addresses.
struct ClientLimit;

impl Rule for ClientLimit {
    fn check(&self, _client: IpAddr, _host: &str) -> Result<(), Refusal> {
        // TODO: refuse a client over its quota with 429 and a Retry-After
        // in whole seconds, long enough to find the quota there.
        Ok(())
    }
}
// ANCHOR_END: client_limit

fn main() {
    burst::main("exercise2_client_rate_limit_starter", ClientLimit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_lets_every_request_through() {
        may_patterns::runtime::configure_for_tests();
        let answers = burst::demo(ClientLimit).unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
        // No refusal, so no Retry-After to wait for either.
        assert_eq!(statuses, [200; burst::BURST]);
    }
}
