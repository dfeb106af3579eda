//! web_crawler: a polite concurrent web crawler.
//!
//! **Purpose.** Fetch the pages reachable from a few seed URLs, as fast as
//! many hosts at once allow and never faster than each host allows: at
//! most `--per-host` requests in flight and one request started per
//! `--delay` to any one host, `robots.txt` obeyed (RFC 9309), `429` and
//! `503` answered by backing off, transient errors retried with jittered
//! backoff, and limits on depth, pages, bytes, URL length and scope so
//! that no site (a calendar with an endless "next month") can keep it busy
//! forever. Pages go to `--out` as JSON Lines and, with `--warc`, to a
//! WARC 1.1 file.
//!
//! **Architecture.** One scheduler coroutine (`scheduler`) owns all crawl
//! state: the URL queue (`frontier`: one FIFO queue per host, URL
//! normalisation, a seen-set of 64-bit fingerprints), each host's rate
//! limiter and robots.txt rules (`politeness`, `robots`), the counters and
//! the storage (`storage`). It hands jobs to `--max-concurrent` fetcher
//! coroutines (`fetcher`) over a bounded channel and waits on one event
//! channel, where fetchers send outcomes, the alarm thread sends the
//! wake-up for the next host whose delay has passed, and Ctrl-C sends a
//! stop. A fetcher fetches with the book's HTTP client and feeds the body
//! to a streaming HTML parser (`extractor`) as it arrives. At the end, or
//! on Ctrl-C after the fetches in flight have ended, the frontier and the
//! seen-set go to `--checkpoint` (`checkpoint`), which `--resume`
//! continues. `progress` draws a progress line on a terminal.
//!
//! **Usage.** `cargo run --example web_crawler -- --max-concurrent 10
//! --delay 100ms https://example.com/` crawls one site and everything it
//! links to, five links deep; add `--same-host` to stay on it, `--warc
//! crawl.warc` to keep the exchanges. `--json` prints the summary as one
//! JSON object. Against the chapter's test site: `cargo run --example
//! crawl_site` serves it with nginx and prints the command.
//!
//! **Performance.** `cargo bench --bench web_crawler` crawls a 16-host
//! nginx site beside `wget` and `wget2` with the same politeness and
//! writes the chapter's table.
//!
//! **Customization.** What is followed: `frontier::Scope::admits`. What
//! is pulled out of a page: `extractor`. What is kept: `storage`. How
//! often a host is asked: `politeness::Politeness`.

mod checkpoint;
mod cli;
mod extractor;
mod fetcher;
mod frontier;
mod politeness;
mod progress;
mod robots;
mod scheduler;
mod storage;
mod warc;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use may::coroutine::Builder;
use may::go;
use may_patterns::http::client::{self, Client, ClientConfig};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;
use may_patterns::{bounded, tls};

use crate::checkpoint::Checkpoint;
use crate::cli::{Args, Config};
use crate::fetcher::Fetcher;
use crate::frontier::{origin, Scope};
use crate::politeness::Politeness;
use crate::progress::Progress;
use crate::scheduler::{Event, Scheduler, Summary};
use crate::storage::Storage;

// ANCHOR: stack
/// Stack of the fetcher and scheduler coroutines, in bytes: the client's
/// own need for its deepest fetch (`client::STACK_SIZE`) plus what the
/// extractor measured for its worst pages on top of it
/// (`extractor::STACK_BYTES`). Measured for the whole fetcher with may's
/// odd-stack report (each coroutine spawned on 2^17 + 1 words, which makes
/// may print its use when it ends), 2026-12-02, over the worst page the
/// crawler admits: HTTPS with a test CA, gzip bodies, a 500 KiB robots.txt
/// (parsed on the blocking pool, off this stack) and 10,000 nested `div`s
/// (the case in `tests/nesting.rs`): a fetcher used at most 65,000 bytes
/// in a debug build and 26,312 in a release build, the scheduler 23,648
/// and 10,872. The sum, 176 KiB, leaves more than twice the debug figure.
const STACK_BYTES: usize = client::STACK_SIZE + extractor::STACK_BYTES;
// ANCHOR_END: stack

// ANCHOR: main
fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            return ExitCode::from(2);
        }
    };
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    if let Err(e) = ctrlc::set_handler(move || stop.trigger()) {
        eprintln!("error: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    match crawl(&config, &shutdown) {
        Ok(summary) => {
            report(&summary, config.args.json);
            ExitCode::SUCCESS
        }
        Err(sentence) => {
            eprintln!("error: {sentence}");
            ExitCode::FAILURE
        }
    }
}
// ANCHOR_END: main

// ANCHOR: crawl
/// Run one crawl to its end (or to `shutdown`), then save the checkpoint.
/// Files are opened and the checkpoint read and written here, on the
/// calling OS thread, before and after the coroutines run.
pub fn crawl(config: &Config, shutdown: &Shutdown) -> Result<Summary, String> {
    let args = &config.args;
    let started = Instant::now();
    let client = Client::new(ClientConfig {
        user_agent: args.user_agent.clone(),
        total_timeout: args.timeout,
        // A redirect is a page whose one link is its target: the frontier
        // applies scope, robots.txt and de-duplication to it.
        max_redirects: 0,
        max_body: args.max_bytes,
        max_idle_per_host: args.per_host,
        tls: config.tls.clone().unwrap_or_else(tls::web_client_config),
        ..ClientConfig::default()
    });
    let storage =
        Storage::create(&args.out, args.warc.as_deref(), args.resume).map_err(|e| e.to_string())?;
    let saved = match args.resume {
        true => Some(
            Checkpoint::load(&args.checkpoint)
                .map_err(|e| format!("cannot resume from {}: {e}", args.checkpoint.display()))?,
        ),
        false => None,
    };
    let scope = Scope {
        hosts: args
            .same_host
            .then(|| config.seeds.iter().map(origin).collect::<HashSet<_>>()),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        max_url_len: args.max_url_len,
        max_depth: args.depth,
        max_redirects: args.max_redirects,
    };
    let settings = scheduler::Settings {
        scope,
        max_pages: args.max_pages,
        max_concurrent: args.max_concurrent,
        retries: args.retries,
        seed: 1,
    };

    let (jobs_tx, jobs_rx) = bounded::channel(args.max_concurrent);
    let (events_tx, events_rx) = may::sync::mpsc::channel();
    let mut scheduler = Scheduler::new(
        settings,
        Politeness::new(args.per_host, args.delay),
        storage,
        jobs_tx,
        events_tx.clone(),
    );
    if let Some(saved) = saved {
        scheduler.restore(saved)?;
    }
    for seed in &config.seeds {
        scheduler.seed(seed.clone());
    }

    let fetcher = Fetcher {
        client,
        user_agent: args.user_agent.clone(),
        keep_exchange: args.warc.is_some(),
    };
    let fetchers: Vec<_> = (0..args.max_concurrent)
        .map(|i| {
            let (fetcher, jobs, done) = (fetcher.clone(), jobs_rx.clone(), events_tx.clone());
            spawn(&format!("fetcher {i}"), move || {
                fetcher.run(jobs, |outcome| done.send(Event::Done(outcome)).is_ok())
            })
        })
        .collect::<Result<_, _>>()?;
    drop(jobs_rx);

    // Ctrl-C (or a test) triggers `shutdown`; this coroutine turns it into
    // an event, so the scheduler waits on its one channel only. Its own
    // signal is a child, triggered when the crawl ends, so it never stays.
    let stop = shutdown.child();
    let watcher = {
        let (stop, events) = (stop.clone(), events_tx);
        go!(move || {
            stop.wait();
            let _ = events.send(Event::Wake);
        })
    };
    let progress = Progress::start();
    let run = {
        let stop = stop.clone();
        let counts = progress.counts.clone();
        spawn("scheduler", move || {
            let ended = scheduler.run(&events_rx, &stop, &counts)?;
            // Consuming the scheduler drops its job sender: the fetchers'
            // loops end.
            scheduler.finish(ended, started.elapsed())
        })?
    };
    let ended = run.join().map_err(|_| "the scheduler panicked".to_owned());
    progress.finish();
    stop.trigger();
    let _ = watcher.join();
    for fetcher in fetchers {
        fetcher
            .join()
            .map_err(|_| "a fetcher panicked".to_owned())?;
    }
    let (summary, checkpoint) = ended??;
    checkpoint.save(&args.checkpoint).map_err(|e| {
        format!(
            "cannot save the checkpoint {}: {e}",
            args.checkpoint.display()
        )
    })?;
    Ok(summary)
}
// ANCHOR_END: crawl

/// Spawn `f` as a named coroutine with the crawler's stack.
fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<may::coroutine::JoinHandle<T>, String> {
    let builder = Builder::new()
        .name(name.to_owned())
        .stack_size(STACK_BYTES / size_of::<usize>());
    go!(builder, f).map_err(|e| format!("cannot start {name}: {e}"))
}

// ANCHOR: report
/// The summary, for a person or (`--json`) for a machine.
fn report(summary: &Summary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("a summary serialises")
        );
        return;
    }
    let s = summary;
    let list = |pairs: Vec<String>| match pairs.is_empty() {
        true => "none".to_owned(),
        false => pairs.join(", "),
    };
    let counts = |map: &std::collections::BTreeMap<String, u64>| {
        list(map.iter().map(|(k, v)| format!("{k} {v}")).collect())
    };
    let resumed = match s.pages_before {
        0 => String::new(),
        n => format!(" ({n} of them before --resume)"),
    };
    let ended = serde_json::to_value(s.ended).expect("a summary serialises");
    println!(
        "{} pages{resumed} from {} hosts in {:.2}s, {:.1} pages/s, {} bytes; ended: {}",
        s.pages,
        s.hosts,
        s.elapsed_s,
        s.pages_per_s,
        s.bytes,
        ended.as_str().unwrap_or("?")
    );
    let statuses = s.statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("statuses: {}", list(statuses));
    println!("errors: {}", counts(&s.errors));
    println!(
        "robots.txt denied {} (unreachable on {} hosts), retries {}, duplicate links {}; seen {}, still queued {}",
        s.robots_denied, s.robots_unreachable, s.retries, s.duplicates_skipped, s.seen, s.queued
    );
    println!("links not followed: {}", counts(&s.skipped));
    for (origin, why) in &s.robots_reasons {
        println!(
            "robots.txt of {origin} could not be read, so none of its pages is fetched (RFC 9309): {why}"
        );
    }
}
// ANCHOR_END: report

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::time::Duration;

    use may_patterns::runtime::configure_for_tests;
    use may_patterns::testsite::{Logged, SiteServer, SiteSpec};

    use super::*;

    /// The politeness every test crawl runs with.
    const DELAY: Duration = Duration::from_millis(50);
    const PER_HOST: usize = 2;
    /// Beyond the small site's reach, except for the calendar trap, which
    /// it cuts at 30 months.
    const DEPTH: &str = "30";

    fn config(dir: &Path, seed: &str, more: &[&str]) -> Config {
        let out = dir.join("crawl.jsonl");
        let checkpoint = dir.join("crawl.checkpoint");
        let args = [
            "web_crawler",
            "--delay",
            "50ms",
            "--per-host",
            "2",
            "--max-concurrent",
            "8",
            "--depth",
            DEPTH,
            "--out",
            out.to_str().unwrap(),
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ];
        let args = Args::try_parse_from(args.iter().chain(more).chain([&seed])).unwrap();
        Config::from_args(args).unwrap()
    }

    /// The URLs recorded in the crawl's JSON Lines, and how often each.
    fn recorded(dir: &Path) -> BTreeMap<String, usize> {
        let mut urls = BTreeMap::new();
        for line in std::fs::read_to_string(dir.join("crawl.jsonl"))
            .unwrap()
            .lines()
        {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            *urls
                .entry(record["url"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        urls
    }

    /// The most requests that arrived at one host within any `window`
    /// (the log is in the order of the answers: a slow page's comes late).
    fn most_within(log: &[Logged], window: Duration) -> usize {
        let mut arrivals: Vec<_> = log.iter().map(|r| r.at).collect();
        arrivals.sort();
        (0..arrivals.len())
            .map(|i| {
                arrivals[i..]
                    .iter()
                    .take_while(|t| **t - arrivals[i] < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// What every crawl of the site must hold, read from the servers' own
    /// logs: robots.txt first, nothing disallowed, at most K at once, the
    /// delay kept, and no page fetched twice but the one answering 503
    /// before it answers 200.
    fn assert_polite(servers: &[SiteServer], site: &may_patterns::testsite::Site) {
        for (host, server) in servers.iter().enumerate() {
            let log = server.requests();
            let Some(first) = log.first() else { continue };
            assert_eq!(
                first.path, "/robots.txt",
                "host {host} was asked for a page first"
            );
            for request in &log {
                assert!(request.in_flight <= PER_HOST, "host {host}: {request:?}");
                let denied = site.disallowed_paths(host);
                let path = request.path.as_str();
                assert!(
                    path == "/robots.txt" || !denied.iter().any(|p| path.starts_with(p.as_str())),
                    "host {host}: {path} is disallowed"
                );
            }
            let pages: Vec<Logged> = log
                .iter()
                .filter(|r| r.path != "/robots.txt")
                .cloned()
                .collect();
            let delay = match site.crawl_delay(host) {
                Some(seconds) => Duration::from_secs_f64(seconds),
                None => DELAY,
            };
            // One request per delay: at most 10 (and 2 for slack) in any
            // 10 delays. Not a gap between two requests: the server reads a
            // request late when a worker it shares with the crawler is busy
            // parsing a page, and the next one then looks early.
            let most = most_within(&pages, delay * 10);
            assert!(
                most <= 12,
                "host {host}: {most} requests within {:?}",
                delay * 10
            );
            let mut times = BTreeMap::<&str, usize>::new();
            for page in &pages {
                *times.entry(&page.path).or_default() += 1;
            }
            for (path, n) in times {
                let expected = if path == "/fail/1.html" { 3 } else { 1 };
                assert_eq!(n, expected, "host {host}: {path} fetched {n} times");
            }
        }
    }

    #[test]
    fn the_crawl_fetches_what_a_polite_crawler_should_and_nothing_else() {
        configure_for_tests();
        let (servers, site) = SiteServer::start_all(&SiteSpec::small()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let warc = dir.path().join("crawl.warc");
        let with_warc = ["--warc", warc.to_str().unwrap()];
        let summary = crawl(
            &config(dir.path(), &site.seed_url(), &with_warc),
            &Shutdown::new(),
        )
        .unwrap();

        // Every response the crawl recorded is in the WARC file, with its
        // request (warc.rs's tests read such a file back with warcio).
        let answered: usize = summary.statuses.values().sum::<u64>() as usize;
        let archive = String::from_utf8_lossy(&std::fs::read(&warc).unwrap()).into_owned();
        for kind in ["request", "response"] {
            let records = archive.matches(&format!("WARC-Type: {kind}\r\n")).count();
            assert_eq!(records, answered, "{kind} records");
        }

        let expected = site.expected_urls(DEPTH.parse().unwrap());
        let got: BTreeSet<String> = recorded(dir.path()).into_keys().collect();
        let missing: Vec<_> = expected.difference(&got).collect();
        let extra: Vec<_> = got.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?}"
        );
        assert_polite(&servers, &site);

        assert_eq!(summary.ended, scheduler::Ended::Done);
        assert_eq!(summary.pages as usize, expected.len());
        assert_eq!(summary.hosts, SiteSpec::small().hosts);
        // The 503 page twice, and h3's failing robots.txt --retries times.
        assert_eq!(summary.retries, 2 + 3);
        assert_eq!(summary.robots_unreachable, 1);
        let [(_, why)] = summary.robots_reasons.as_slice() else {
            panic!(
                "one reason for one unreachable robots.txt: {:?}",
                summary.robots_reasons
            );
        };
        assert!(why.starts_with("answered 5"), "{why}");
        let asked = servers[3]
            .requests()
            .iter()
            .filter(|r| r.path == "/robots.txt")
            .count();
        assert_eq!(asked, 1 + 3, "h3's robots.txt: once and three retries");
        assert_eq!(
            summary.errors.get("body too large"),
            Some(&1),
            "{:?}",
            summary.errors
        );
        assert!(summary.robots_denied > 0, "the 503 robots.txt host");
        assert!(
            summary.skipped.contains_key("not_http"),
            "{:?}",
            summary.skipped
        );
        assert!(summary.duplicates_skipped > 0);
    }

    #[test]
    fn a_stopped_crawl_resumes_without_fetching_a_page_twice() {
        configure_for_tests();
        let (servers, site) = SiteServer::start_all(&SiteSpec::small()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let seed = site.seed_url();
        let first = crawl(
            &config(dir.path(), &seed, &["--max-pages", "10"]),
            &Shutdown::new(),
        )
        .unwrap();
        assert_eq!((first.ended, first.pages), (scheduler::Ended::MaxPages, 10));
        assert!(first.queued > 0);

        // Ctrl-C before anything is handed out: nothing is fetched, and the
        // checkpoint it writes holds the same crawl.
        let interrupted = Shutdown::new();
        interrupted.trigger();
        let resume = config(dir.path(), &seed, &["--resume"]);
        let second = crawl(&resume, &interrupted).unwrap();
        assert_eq!(
            (second.ended, second.pages),
            (scheduler::Ended::Interrupted, 10)
        );
        assert_eq!(second.queued, first.queued);

        let last = crawl(&resume, &Shutdown::new()).unwrap();
        assert_eq!(last.ended, scheduler::Ended::Done);
        let records = recorded(dir.path());
        assert!(
            records.values().all(|n| *n == 1),
            "a page recorded twice: {records:?}"
        );
        let got: BTreeSet<String> = records.into_keys().collect();
        assert_eq!(got, site.expected_urls(DEPTH.parse().unwrap()));
        assert_polite(&servers, &site);
    }
}
