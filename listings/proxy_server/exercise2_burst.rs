//! What exercise 2's starter and solution share: the limits and the demo.
//! Both include this file with `#[path = "exercise2_burst.rs"] mod
//! burst;` and write only `ClientLimit`.

use std::io;
use std::time::Duration;

use crate::forwarder::{self, Rule};

// ANCHOR: limits
/// Requests each client address may send per `PERIOD`, all at once if it likes.
pub const RATE: u64 = 3;
pub const PERIOD: Duration = Duration::from_secs(2);
/// Client addresses remembered at most.
pub const MAX_CLIENTS: usize = 10_000;
/// Requests the demo sends at once.
pub const BURST: usize = 5;
// ANCHOR_END: limits

/// What one request got: status, `Retry-After` if any, body.
pub type Answer = (u16, Option<String>, String);

/// `BURST` requests at once through a proxy deciding by `rule`, then, if
/// the last was refused, one more after the `Retry-After` it was given.
pub fn demo(rule: impl Rule) -> io::Result<Vec<Answer>> {
    let origin = forwarder::start_origin()?;
    let origins = forwarder::Origins::all_at(&["news.example"], origin.addr);
    let proxy = forwarder::start_proxy(rule, origins)?;
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

/// The exercise's `main`, for the starter and the solution alike.
pub fn main(name: &str, rule: impl Rule) {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!(
        "at most {RATE} requests per {PERIOD:?} per client address, \
         {MAX_CLIENTS} addresses remembered; {BURST} requests at once:"
    );
    let answers = match demo(rule) {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("{name}: the demo failed: {e}");
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
