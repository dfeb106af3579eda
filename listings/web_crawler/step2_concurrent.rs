//! Step 2: concurrent fetchers under one global limit. One scheduler owns
//! the queue and the seen-set; `max_concurrent` fetcher coroutines take jobs
//! from a bounded channel and send what they found back on one event
//! channel. The scheduler hands out a job only while fewer than
//! `max_concurrent` are in flight, so that is the most the sites ever see.
//!
//! With no arguments it crawls a generated test site served in this process;
//! with URLs as arguments it crawls from those instead.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::go;
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::http::client::{self, Client, ClientConfig};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::testsite::{SiteServer, SiteSpec};
use url::Url;

/// Every `href="..."` in `html`, as written. Deliberately naive: it misses
/// `href='...'`, unquoted and upper-case `HREF=` attributes, does not decode
/// `&amp;`, ignores `<base href>`, and takes "links" out of comments and
/// scripts. Step 6 replaces it with lol_html and shows what this one missed.
fn naive_hrefs(html: &str) -> Vec<&str> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(href, _)| href))
        .collect()
}

/// The absolute http(s) URLs a page links to. A redirect is a page whose
/// one link is its `Location`, so its target goes through the same checks.
fn links(page: &client::Fetched) -> Vec<Url> {
    let text;
    let hrefs: Vec<&str> = if (300..400).contains(&page.status) {
        page.header("location").into_iter().collect()
    } else if is_html(page.header("content-type")) {
        text = String::from_utf8_lossy(&page.body);
        naive_hrefs(&text)
    } else {
        Vec::new()
    };
    hrefs
        .into_iter()
        .filter_map(|href| page.url.join(href).ok()) // a bad href is not a link
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .collect()
}

fn is_html(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

// ANCHOR: messages
/// A URL for a fetcher.
struct Job {
    url: Url,
}

/// What a fetcher tells the scheduler.
enum Event {
    /// A job is finished: its status and links, or why it failed.
    Done(Url, Result<(u16, Vec<Url>), String>),
}
// ANCHOR_END: messages

// ANCHOR: fetcher
/// One fetcher: fetch each job's URL, extract its links, report. It ends
/// when the scheduler drops the job channel.
fn fetcher(client: Client, jobs: Receiver<Job>, events: Sender<Event>) {
    for job in jobs.iter() {
        // A panic (a bug) is reported too: the scheduler waits for every
        // job it handed out.
        let result = catch_unwind(AssertUnwindSafe(|| fetch(&client, &job.url)))
            .unwrap_or_else(|_| Err("the fetcher panicked".into()));
        if events.send(Event::Done(job.url, result)).is_err() {
            return; // the scheduler is gone
        }
    }
}

fn fetch(client: &Client, url: &Url) -> Result<(u16, Vec<Url>), String> {
    let page = client.get(url).map_err(|e| e.to_string())?;
    Ok((page.status, links(&page)))
}
// ANCHOR_END: fetcher

/// A real site has no end: stop after this many fetches. (Step 8 makes the
/// limits flags and shows a link trap.)
const MAX_FETCHES: usize = 1_000;

/// What a crawl did: each URL fetched, with its status or why it failed.
#[derive(Debug, Default)]
struct Report {
    fetched: BTreeMap<String, Result<u16, String>>,
    most_in_flight: usize,
    elapsed: Duration,
}

// ANCHOR: scheduler
/// Crawl from `seeds` with `max_concurrent` fetchers, staying on the seeds'
/// hosts. This function is the scheduler: only it touches the queue, the
/// seen-set and the report, so none of them needs a lock. It runs on a
/// coroutine of its own (`run`), parked on the event channel while
/// nothing is ready.
fn crawl(client: &Client, seeds: &[Url], max_concurrent: usize) -> Report {
    let started = Instant::now();
    // At most `max_concurrent` jobs are handed out and not yet reported, so
    // neither channel ever holds more: no send below waits.
    let (job_tx, job_rx) = bounded::channel(max_concurrent);
    let (event_tx, event_rx) = bounded::channel(max_concurrent);
    let fetchers: Vec<_> = (0..max_concurrent)
        .map(|_| {
            let (client, jobs, events) = (client.clone(), job_rx.clone(), event_tx.clone());
            let builder = Builder::new().stack_size(FETCHER_STACK_BYTES / size_of::<usize>());
            go!(builder, move || fetcher(client, jobs, events)).expect("spawn never fails")
        })
        .collect();
    drop((job_rx, event_tx));

    let in_scope = |url: &Url| seeds.iter().any(|seed| seed.origin() == url.origin());
    let mut seen: HashSet<String> = seeds.iter().map(|s| s.to_string()).collect();
    let mut queue: VecDeque<Url> = seeds.iter().cloned().collect();
    let mut report = Report::default();
    let mut in_flight = 0;
    let mut handed_out = 0;
    loop {
        while in_flight < max_concurrent && handed_out < MAX_FETCHES {
            let Some(url) = queue.pop_front() else { break };
            job_tx
                .send(Job { url })
                .expect("the fetchers outlive the crawl");
            in_flight += 1;
            handed_out += 1;
        }
        report.most_in_flight = report.most_in_flight.max(in_flight);
        if in_flight == 0 {
            break; // nothing queued (or the limit reached) and nothing running
        }
        // The fetchers hold the channel open; it closes only if every one
        // of them ended early (a panic, which `join` below reports).
        let Ok(Event::Done(url, result)) = event_rx.recv() else {
            break;
        };
        in_flight -= 1;
        for link in result.iter().flat_map(|(_, links)| links) {
            if in_scope(link) && seen.insert(link.to_string()) {
                queue.push_back(link.clone());
            }
        }
        report
            .fetched
            .insert(url.to_string(), result.map(|(status, _)| status));
    }
    drop(job_tx); // the fetchers see the end and return
    for fetcher in fetchers {
        fetcher.join().expect("a fetcher does not panic");
    }
    report.elapsed = started.elapsed();
    report
}

/// Run the scheduler on a coroutine of its own, with a stack measured for
/// it (see the tests).
fn run(client: Client, seeds: Vec<Url>, max_concurrent: usize) -> Report {
    let builder = Builder::new().stack_size(SCHEDULER_STACK_BYTES / size_of::<usize>());
    go!(builder, move || crawl(&client, &seeds, max_concurrent))
        .expect("may's Builder::spawn never returns an error")
        .join()
        .expect("the scheduler does not panic")
}
// ANCHOR_END: scheduler

/// A fetcher runs the client and the link scan: the client's measured stack
/// plus the scan's (step 1's tests measure the scan).
const FETCHER_STACK_BYTES: usize = client::STACK_SIZE + SCAN_STACK_BYTES;
const SCAN_STACK_BYTES: usize = 24 * 1024;
/// The scheduler parses URLs and keeps the frontier (step 5's tests
/// measure it, with robots.txt rules to check as well).
const SCHEDULER_STACK_BYTES: usize = 64 * 1024;

fn client() -> Client {
    Client::new(ClientConfig {
        user_agent: "may-patterns-crawler/0.1".into(),
        max_redirects: 0, // a redirect is a link, see `links`
        ..ClientConfig::default()
    })
}

/// The seeds from the command line, or a reason to refuse them.
fn parse_seeds(args: &[String]) -> Result<Vec<Url>, String> {
    args.iter()
        .map(|arg| match Url::parse(arg) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
            Ok(url) => Err(format!("{arg}: not an http(s) URL ({})", url.scheme())),
            Err(e) => Err(format!("{arg}: not a URL ({e})")),
        })
        .collect()
}

// ANCHOR: main
/// How many fetches run at once.
const MAX_CONCURRENT: usize = 8;
/// How late the demo site answers each page: a real site takes tens of
/// milliseconds, loopback microseconds.
const PAGE_LATENCY: Duration = Duration::from_millis(20);

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds = match parse_seeds(&args) {
        Ok(seeds) => seeds,
        Err(reason) => {
            eprintln!("step2_concurrent: {reason}");
            std::process::exit(2);
        }
    };
    if !seeds.is_empty() {
        println!(
            "crawling {} seed(s), at most {MAX_CONCURRENT} fetches at once",
            seeds.len()
        );
        print_summary(&run(client(), seeds, MAX_CONCURRENT));
        return;
    }
    // The demo: the same site crawled one fetch at a time, then eight.
    for fetchers in [1, MAX_CONCURRENT] {
        let mut spec = SiteSpec::small();
        spec.features.trap = false; // endless links wait for step 8's limits
        let (servers, _site) = SiteServer::start_all(&spec).expect("the test site starts");
        servers[0].set_delay("/", PAGE_LATENCY);
        let seed = Url::parse(&format!("http://{}/", servers[0].addr)).unwrap();
        println!("{fetchers} fetcher(s), every page {PAGE_LATENCY:?} late:");
        let report = run(client(), vec![seed], fetchers);
        print_summary(&report);
        let most = servers[0].requests().iter().map(|r| r.in_flight).max();
        println!(
            "  the site saw at most ~{} requests at once",
            most.unwrap_or(0)
        );
    }
}
// ANCHOR_END: main

fn print_summary(report: &Report) {
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for status in report.fetched.values().flatten() {
        *by_status.entry(*status).or_default() += 1;
    }
    println!(
        "fetched {} URLs in {:.1?}",
        report.fetched.len(),
        report.elapsed
    );
    for (status, count) in by_status {
        println!("  HTTP {status}: {count}");
    }
    for (url, result) in &report.fetched {
        if let Err(reason) = result {
            println!("  failed: {url}: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn site() -> (Vec<SiteServer>, Url) {
        configure_for_tests();
        let mut spec = SiteSpec::small();
        spec.features.trap = false;
        let (servers, _site) = SiteServer::start_all(&spec).unwrap();
        let seed = Url::parse(&format!("http://{}/", servers[0].addr)).unwrap();
        (servers, seed)
    }

    /// Step 1's loop, for comparison: one fetch at a time.
    fn sequential(seeds: &[Url]) -> Report {
        run(client(), seeds.to_vec(), 1)
    }

    // ANCHOR: tests
    #[test]
    fn never_more_than_the_limit_in_flight_and_faster_than_one_at_a_time() {
        let (servers, seed) = site();
        // Every page takes 20 ms to answer.
        servers[0].set_delay("/", Duration::from_millis(20));
        let one = sequential(std::slice::from_ref(&seed));
        let four = run(client(), vec![seed.clone()], 4);
        assert_eq!(
            one.fetched.keys().collect::<Vec<_>>(),
            four.fetched.keys().collect::<Vec<_>>(),
            "the same URLs, whatever the concurrency"
        );
        assert_eq!(one.most_in_flight, 1);
        assert_eq!(four.most_in_flight, 4);
        let seen_at_once = servers[0].requests().iter().map(|r| r.in_flight).max();
        assert!(seen_at_once <= Some(4), "the server saw {seen_at_once:?}");
        // Loose: four fetchers take well under three quarters of the time.
        assert!(
            four.elapsed * 4 < one.elapsed * 3,
            "4 fetchers {:?}, 1 fetcher {:?}",
            four.elapsed,
            one.elapsed
        );
    }
    // ANCHOR_END: tests

    #[test]
    fn an_unreachable_seed_is_an_error_not_a_hang() {
        configure_for_tests();
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let seed = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let report = run(client(), vec![seed], 2);
        assert_eq!(report.fetched.len(), 1);
        assert!(report.fetched.values().all(|r| r.is_err()), "{report:?}");
    }
}
