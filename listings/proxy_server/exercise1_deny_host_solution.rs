//! Exercise 1 (solution): a deny list of hosts. A rule such as
//! `ads.example` denies that host and every name under it
//! (`x.ads.example`), but not a name that merely ends with the same
//! letters (`badads.example`). Names are compared without regard to case,
//! and a trailing dot (`ads.example.`, the absolute form of the name) does
//! not get past the rule. The `403` says which rule denied the request.
//!
//! Run it: `cargo run --example exercise1_deny_host_solution`

#[path = "exercise_forwarder.rs"]
mod forwarder;

use std::io;
use std::net::IpAddr;

use forwarder::{Refusal, Rule};

// ANCHOR: deny_host
/// Whether `rule` denies `host`: the same name, or a name under it.
fn deny_host(rule: &str, host: &str) -> bool {
    let canonical = |name: &str| name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let (rule, host) = (canonical(rule), canonical(host));
    // A label boundary: `x.ads.example` is under `ads.example`,
    // `badads.example` is not.
    host == rule || host.ends_with(&format!(".{rule}"))
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
            eprintln!("exercise1_deny_host_solution: the demo failed: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ANCHOR: tests
    #[test]
    fn a_rule_denies_its_host_and_the_names_under_it_only() {
        assert!(deny_host("ads.example", "ads.example"));
        assert!(deny_host("ads.example", "x.ads.example"));
        assert!(deny_host("ads.example", "a.b.ads.example"));
        assert!(!deny_host("ads.example", "badads.example"));
        assert!(!deny_host("ads.example", "ads.example.com"));
        assert!(!deny_host("ads.example", "example"));
    }

    #[test]
    fn case_and_a_trailing_dot_do_not_get_past_a_rule() {
        assert!(deny_host("ads.example", "ADS.Example"));
        assert!(deny_host("ads.example", "ads.example."));
        assert!(deny_host("Ads.Example.", "x.ads.example"));
        assert!(!deny_host("ads.example", "badads.example."));
    }

    #[test]
    fn the_proxy_refuses_a_denied_host_with_403_naming_the_rule() {
        may_patterns::runtime::configure_for_tests();
        let answers = demo().unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(_, status, _)| *status).collect();
        assert_eq!(statuses, [200, 403, 403, 200, 403]);
        assert_eq!(
            answers[2].2,
            "x.ads.example is denied by the rule \"ads.example\""
        );
        // The allowed ones reached the origin, in origin form.
        assert_eq!(answers[3].2, "hello from badads.example/");
    }
    // ANCHOR_END: tests
}
