//! Exercise 2 (starter): a request limit per client address. Each client
//! address may send `RATE` requests per `PERIOD`; past that it should get
//! `429 Too Many Requests` with a `Retry-After` that is long enough, and
//! nothing forwarded. At most `MAX_CLIENTS` addresses may be remembered,
//! idle ones forgotten first. The rule lets everything through for now,
//! as the demo shows. TODO: write `ClientLimit` with
//! `may_patterns::ratelimit`.
//!
//! Run it: `cargo run --example exercise2_client_rate_limit_starter`

#[path = "exercise_forwarder.rs"]
mod forwarder;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use forwarder::{Refusal, Rule};

/// Requests each client address may send per `PERIOD`, all at once if it likes.
const RATE: u64 = 3;
const PERIOD: Duration = Duration::from_secs(2);
/// Client addresses remembered at most.
const MAX_CLIENTS: usize = 10_000;
/// Requests the demo sends at once.
const BURST: usize = 5;

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

/// What one request got: status, `Retry-After` if any, body.
type Answer = (u16, Option<String>, String);

/// `BURST` requests at once, then, if the last was refused, one more
/// after the `Retry-After` it was given.
fn demo() -> io::Result<Vec<Answer>> {
    let origin = forwarder::start_origin()?;
    let origins = forwarder::Origins::all_at(&["news.example"], origin.addr);
    let proxy = forwarder::start_proxy(ClientLimit, origins)?;
    let ask = || -> io::Result<Answer> {
        let answer = forwarder::get(proxy.addr, "http://news.example/")?;
        let retry = may_patterns::http::header(&answer.headers, "retry-after");
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        Ok((answer.status, retry.map(str::to_owned), body))
    };
    let mut answers = (0..BURST).map(|_| ask()).collect::<io::Result<Vec<_>>>()?;
    let last_wait = answers.last().and_then(|(_, retry, _)| retry.clone());
    if let Some(seconds) = last_wait.and_then(|s| s.parse().ok()) {
        may::coroutine::sleep(Duration::from_secs(seconds));
        answers.push(ask()?);
    }
    proxy.stop()?;
    origin.stop()?;
    Ok(answers)
}

fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!(
        "at most {RATE} requests per {PERIOD:?} per client address, \
         {MAX_CLIENTS} addresses remembered; {BURST} requests at once:"
    );
    let answers = match demo() {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("exercise2_client_rate_limit_starter: the demo failed: {e}");
            std::process::exit(1);
        }
    };
    for (i, (status, retry, body)) in answers.iter().enumerate() {
        let retry = retry.as_ref().map(|s| format!(" (Retry-After: {s})"));
        let label = match i < BURST {
            true => format!("request {}", i + 1),
            false => "after the wait".to_owned(),
        };
        println!("  {label}: {status} {body:?}{}", retry.unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_lets_every_request_through() {
        may_patterns::runtime::configure_for_tests();
        let answers = demo().unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
        // No refusal, so no Retry-After to wait for either.
        assert_eq!(statuses, [200; BURST]);
    }
}
