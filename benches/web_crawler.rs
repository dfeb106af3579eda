//! The crawler against wget and wget2, side by side in one run on the same
//! box: the same generated site (16 hosts, plain pages linking across
//! hosts) served by nginx, every page made late by the scriptable backend
//! (nginx proxies to it), the same delay between requests. Each tool gets a
//! fresh nginx of its own, so its access log holds only its requests: the
//! pages fetched, the URL set, the smallest gap between two request starts
//! to one host and the most requests one host had at once all come from
//! that log, not from the tools' own reports. Wall time is the tool's
//! process from start to exit; peak resident memory is its own, from
//! `/usr/bin/time -f %M`.
//!
//! Then the final program's frontier on its own, with a counting allocator:
//! the bytes it holds per URL seen, per 100,000.
//!
//! `cargo bench --bench web_crawler` (about two minutes after the release
//! build, most of it wget) rewrites `book/web_crawler/benchmarks.md` and
//! `book/web_crawler/memory.md`. It needs nginx, wget, wget2 (Debian
//! packages `nginx`, `wget`, `wget2`) and GNU time (`time`), and stops with
//! a sentence naming what is missing.

mod support;

// The final program's frontier, as its main.rs declares it; the parts only
// the program uses (scope, normalisation) are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/web_crawler/web_crawler/frontier.rs"]
mod frontier;

#[path = "web_crawler/memory.rs"]
mod memory;
#[path = "web_crawler/tools.rs"]
mod tools;

fn main() {
    tools::side_by_side();
    memory::per_100k_urls();
}
