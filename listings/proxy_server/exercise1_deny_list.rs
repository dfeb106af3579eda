//! What exercise 1's starter and solution share: the deny list as a
//! [`Rule`], and the demo. Both include this file with `#[path =
//! "exercise1_deny_list.rs"] mod deny_list;` and write only `deny_host`.

use std::io;
use std::net::IpAddr;

use crate::deny_host;
use crate::forwarder::{self, Refusal, Rule};

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
pub fn demo() -> io::Result<Vec<(String, u16, String)>> {
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

/// The exercise's `main`, for the starter and the solution alike.
pub fn main(name: &str) {
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
            eprintln!("{name}: the demo failed: {e}");
            std::process::exit(1);
        }
    }
}
