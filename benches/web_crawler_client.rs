//! The book's HTTP client (`may_patterns::http::client`) beside ureq 3 run
//! over may's sockets (`listings/web_crawler/ureq_over_may.rs`), on the
//! same crawl: every page URL of one generated site served by nginx
//! (`testsite::Nginx`, `SiteSpec::bench`), fetched by 10 coroutines that
//! share one client, keep-alive on both. Each run is a child process of its
//! own (this bench, started again), so its CPU time and peak memory are its
//! own; the clients take turns, and each column is the median run.
//!
//! `cargo bench --bench web_crawler_client` (nginx must be installed;
//! about a minute after the build) rewrites `book/web_crawler/client.md`.

mod support;

// The listing's connector, transport and resolver; its main is not used.
#[allow(dead_code)]
#[path = "../listings/web_crawler/ureq_over_may.rs"]
mod ureq_over_may;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use may::coroutine::Builder;
use may_patterns::http::client::{self, Client, ClientConfig};
use may_patterns::testsite::{Nginx, NginxOptions, SiteSpec};
use support::Cell;
use url::Url;

/// Coroutines fetching at once, as the issue asks.
const COROUTINES: usize = 10;
/// The site: 10 hosts of 2,000 pages, 20,000 URLs: a run of about a
/// second, a hundred CPU ticks.
const HOSTS: usize = 10;
const PAGES_PER_HOST: usize = 2_000;
/// Runs per client; the table shows the median run (by pages a second).
const RUNS: usize = 5;

/// The clients, in the table's order: (child mode, column title).
/// "ureq, no deadline" shows what arming a deadline on every read costs.
const CLIENTS: [(&str, &str); 3] = [
    ("ours", "may_patterns::http::client"),
    ("ureq", "ureq 3 over may"),
    ("ureq_untimed", "ureq 3 over may, no deadline"),
];

// ----------------------------------------------------------------- child --

/// A `VmRSS:` or `VmHWM:` line of /proc/self/status, in bytes.
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// User + system CPU time of the whole process so far (every thread), from
/// /proc/self/stat, in clock ticks of 1/100 s (Linux's USER_HZ).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces; the rest follow ") ".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// One way to fetch a URL: the status and the body's length.
type Fetch = dyn Fn(&str) -> Result<(u16, usize), String> + Send + Sync;

/// `COROUTINES` coroutines of `stack_bytes` take `urls` in turn; returns
/// (pages answered 200, body bytes, failures).
fn fetch_all(urls: Arc<Vec<String>>, stack_bytes: usize, fetch: Arc<Fetch>) -> (u64, u64, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let fetchers: Vec<_> = (0..COROUTINES)
        .map(|_| {
            let (urls, next, fetch) = (urls.clone(), next.clone(), fetch.clone());
            let builder = Builder::new().stack_size(stack_bytes / size_of::<usize>());
            may::go!(builder, move || {
                let (mut pages, mut bytes, mut failed) = (0, 0, 0);
                while let Some(url) = urls.get(next.fetch_add(1, Ordering::Relaxed)) {
                    match fetch(url) {
                        Ok((200, len)) => (pages, bytes) = (pages + 1, bytes + len as u64),
                        Ok((status, _)) => panic!("{url}: HTTP {status}"),
                        Err(why) => {
                            eprintln!("{url}: {why}");
                            failed += 1;
                        }
                    }
                }
                (pages, bytes, failed)
            })
            .expect("may spawns")
        })
        .collect();
    fetchers
        .into_iter()
        .map(|f| f.join().expect("a fetcher does not panic"))
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

fn child(mode: &str, urls_file: &str) {
    support::configure_may();
    let urls: Vec<String> = std::fs::read_to_string(urls_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let urls = Arc::new(urls);
    let (rss, ticks) = (status_bytes("VmRSS"), cpu_ticks());
    let started = Instant::now();
    let ((pages, bytes, failed), connections) = match mode {
        "ours" => {
            let client = Client::new(ClientConfig {
                user_agent: "may-patterns-crawler/0.1".into(),
                max_redirects: 0,
                max_idle_per_host: COROUTINES,
                ..ClientConfig::default()
            });
            let shared = client.clone();
            let fetch: Arc<Fetch> = Arc::new(move |url: &str| {
                let url = Url::parse(url).map_err(|e| e.to_string())?;
                let page = shared.get(&url).map_err(|e| e.to_string())?;
                Ok((page.status, page.body.len()))
            });
            let counts = fetch_all(urls.clone(), client::STACK_SIZE, fetch);
            (counts, client.stats().connections_opened as usize)
        }
        "ureq" | "ureq_untimed" => {
            let budget = (mode == "ureq").then_some(ureq_over_may::CALL_BUDGET);
            let (agent, opened) = ureq_over_may::agent(COROUTINES, budget);
            let fetch: Arc<Fetch> = Arc::new(move |url: &str| {
                ureq_over_may::fetch(&agent, url).map(|(status, body)| (status, body.len()))
            });
            let counts = fetch_all(urls.clone(), ureq_over_may::FETCH_STACK_BYTES, fetch);
            (counts, opened.load(Ordering::Relaxed))
        }
        other => panic!("unknown mode {other}"),
    };
    let elapsed = started.elapsed();
    println!("pages {pages}");
    println!("bytes {bytes}");
    println!("failed {failed}");
    println!("elapsed_ns {}", elapsed.as_nanos());
    println!("memory {}", status_bytes("VmHWM").saturating_sub(rss));
    println!("cpu_ticks {}", cpu_ticks() - ticks);
    println!("connections {connections}");
}

// ---------------------------------------------------------------- parent --

/// One child run: its `<key> <value>` lines.
fn run_child(mode: &str, urls_file: &str) -> HashMap<String, f64> {
    let output = Command::new(std::env::current_exe().unwrap())
        .env("WEB_CRAWLER_CLIENT", format!("{mode}:{urls_file}"))
        .output()
        .expect("the bench starts itself");
    assert!(
        output.status.success(),
        "{mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// Every client `RUNS` times, taking turns, and each client's median run
/// by pages a second.
fn measure_all(urls_file: &str, expected: usize) -> Vec<HashMap<String, f64>> {
    let mut runs: Vec<Vec<HashMap<String, f64>>> = CLIENTS.iter().map(|_| Vec::new()).collect();
    for _ in 0..RUNS {
        for (i, &(mode, _)) in CLIENTS.iter().enumerate() {
            let run = run_child(mode, urls_file);
            assert_eq!(run["pages"] as usize, expected, "{mode}: every page, once");
            assert_eq!(run["failed"], 0.0, "{mode}");
            runs[i].push(run);
        }
    }
    let rate = |r: &HashMap<String, f64>| r["pages"] / r["elapsed_ns"] * 1e9;
    runs.into_iter()
        .zip(CLIENTS)
        .map(|(mut runs, (mode, _))| {
            runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
            let median = runs.swap_remove(RUNS / 2);
            println!("{mode}: {:.0} pages/s", rate(&median));
            median
        })
        .collect()
}

fn main() {
    if let Ok(spec) = std::env::var("WEB_CRAWLER_CLIENT") {
        let (mode, urls_file) = spec.split_once(':').expect("mode:file");
        return child(mode, urls_file);
    }
    let spec = SiteSpec::bench(HOSTS, PAGES_PER_HOST);
    let (nginx, site) = Nginx::start(&spec, NginxOptions::default())
        .unwrap_or_else(|e| panic!("this bench needs nginx: {e}"));
    let urls: Vec<String> = site.expected_urls(usize::MAX).into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let urls_file = dir.path().join("urls.txt");
    std::fs::write(&urls_file, urls.join("\n")).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    let measured = measure_all(urls_file.to_str().unwrap(), urls.len());
    drop(nginx);
    let column = |cell: &dyn Fn(&HashMap<String, f64>) -> Cell| measured.iter().map(cell).collect();
    let rows: Vec<(String, Vec<Cell>)> = vec![
        (
            "pages fetched".into(),
            column(&|m| Cell::Whole(m["pages"] as u64)),
        ),
        (
            "wall time".into(),
            column(&|m| Cell::Nanos(m["elapsed_ns"])),
        ),
        (
            "pages a second".into(),
            column(&|m| Cell::PerSecond(m["pages"] / m["elapsed_ns"] * 1e9)),
        ),
        (
            "CPU time per page (user + system, all threads)".into(),
            column(&|m| Cell::Nanos(m["cpu_ticks"] * 1e7 / m["pages"])),
        ),
        (
            "peak resident memory above the start".into(),
            column(&|m| Cell::Bytes(m["memory"])),
        ),
        (
            "connections opened".into(),
            column(&|m| Cell::Whole(m["connections"] as u64)),
        ),
    ];
    let titles: Vec<&str> = CLIENTS.iter().map(|&(_, title)| title).collect();
    support::write_cells_table_of(
        "web_crawler_client",
        "web_crawler",
        "client.md",
        &format!(
            "Every page URL of `SiteSpec::bench({HOSTS}, {PAGES_PER_HOST})` served by nginx on \
             loopback ({} URLs, {HOSTS} ports), fetched once each by {COROUTINES} coroutines \
             sharing one client (keep-alive, up to {COROUTINES} idle connections per host, a \
             30 s budget per fetch but in the last column), 2 may workers. Each column is the median of {RUNS} runs \
             by pages a second, each run a process of its own, the clients taking turns. CPU \
             time is counted in 10 ms ticks. Load average before the runs: {load}.",
            urls.len()
        ),
        &titles,
        &rows,
    );
}
