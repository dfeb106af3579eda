//! Exercise 1 (starter): a deny list of hosts. A rule such as
//! `ads.example` must deny that host and every name under it
//! (`x.ads.example`), but not a name that merely ends with the same
//! letters (`badads.example`), whatever the case, with or without a
//! trailing dot (`ads.example.`, the absolute form of the name). The proxy
//! and the `403` that names the rule are here; `deny_host` denies nothing
//! yet, as the demo shows. TODO: write `deny_host`.
//!
//! Run it: `cargo run --example exercise1_deny_host_starter`

#[path = "exercise_forwarder.rs"]
mod forwarder;

use std::io;
use std::net::IpAddr;

use forwarder::{Refusal, Rule};

// ANCHOR: deny_host
/// Whether `rule` denies `host`: the same name, or a name under it.
fn deny_host(_rule: &str, _host: &str) -> bool {
    // TODO: compare without case and without a trailing dot, and match
    // whole labels only.
    false
}
// ANCHOR_END: deny_host

// ANCHOR: deny_list
/// The hosts this proxy refuses to reach, and everything under them.
struct DenyList(&'static [&'static str]);

impl Rule for DenyList {
    fn check(&self, _client: IpAddr, host: &str) -> Result<(), Refusal> {
        match self.0.iter().find(|rule| deny_host(rule, host)) {
            None => Ok(()),
            Some(rule) => Err(Refusal {
                status: 403,
                reason: "Forbidden",
                headers: Vec::new(),
                body: format!("{host} is denied by the rule {rule:?}"),
            }),
        }
    }
}
// ANCHOR_END: deny_list

const DENIED: &[&str] = &["ads.example", "tracker.example"];

/// The demo's URLs: an allowed host, the denied host, a name under it, a
/// name that only ends with the same letters, and the denied name in
/// capitals with a trailing dot.
const URLS: [&str; 5] = [
    "http://news.example/",
    "http://ads.example/banner",
    "http://x.ads.example/pixel",
    "http://badads.example/",
    "http://X.ADS.Example./pixel",
];

/// Every URL through the proxy: (url, status, body).
fn demo() -> io::Result<Vec<(String, u16, String)>> {
    let origin = forwarder::start_origin()?;
    let names = [
        "news.example",
        "ads.example",
        "x.ads.example",
        "badads.example",
    ];
    let origins = forwarder::Origins::all_at(&names, origin.addr);
    let proxy = forwarder::start_proxy(DenyList(DENIED), origins)?;
    let answers = URLS
        .iter()
        .map(|url| {
            let answer = forwarder::get(proxy.addr, url)?;
            let body = String::from_utf8_lossy(&answer.body).into_owned();
            Ok((url.to_string(), answer.status, body))
        })
        .collect::<io::Result<Vec<_>>>();
    proxy.stop()?;
    origin.stop()?;
    answers
}

fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!("denied: {}", DENIED.join(", "));
    match demo() {
        Ok(answers) => {
            for (url, status, body) in answers {
                println!("  GET {url:<28} -> {status} {body:?}");
            }
        }
        Err(e) => {
            eprintln!("exercise1_deny_host_starter: the demo failed: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_forwards_every_host_it_can_reach() {
        may_patterns::runtime::configure_for_tests();
        let answers = demo().unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(_, status, _)| *status).collect();
        // The denied host, and the names under it, are reached too.
        assert_eq!(statuses, [200; 5]);
        assert_eq!(answers[1].2, "hello from ads.example/banner");
    }
}
