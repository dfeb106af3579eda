//! wget, wget2 and the crawler on the same nginx site, one after another,
//! each on a fresh nginx; everything but wall time and memory is read from
//! nginx's access log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use may_patterns::testsite::{
    max_concurrency_per_host, min_gap_per_host, AccessLine, Nginx, NginxOptions, SiteSpec,
};

use crate::support::{self, Cell};

/// The site: 16 hosts. 25 pages each keeps wget's sequential
/// crawl near a minute.
const HOSTS: usize = 16;
const PAGES_PER_HOST: usize = 25;
/// The same delay for every tool: wget's and wget2's `--wait`, the
/// crawler's `--delay`.
const DELAY: Duration = Duration::from_millis(100);
/// What the scriptable backend adds to every page.
const LATENCY: Duration = Duration::from_millis(50);
/// wget2's threads and the crawler's fetchers: one per host.
const CONCURRENCY: usize = HOSTS;
/// Deep enough for every tool to reach every page.
const LEVEL: &str = "50";

/// One tool's run, as nginx saw it.
struct Measured {
    title: &'static str,
    wall: Duration,
    /// Peak resident memory of the tool's process, in bytes.
    peak_rss: u64,
    /// Every (host, path) requested but robots.txt.
    fetched: BTreeSet<(usize, String)>,
    /// Pages answered 200.
    pages: usize,
    smallest_gap: Option<Duration>,
    most_at_once: usize,
}

/// The release build of the crawler.
fn crawler() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "--release", "--example", "web_crawler"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the crawler failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(root).join("target"));
    target.join("release/examples/web_crawler")
}

/// Stops the bench with a sentence when a tool it compares is missing.
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is missing: apt-get install -y {package}");
}

fn seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// The three command lines, each crawling from `seed` into `dir`.
fn command(tool: &str, seed: &str, dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap().to_owned();
    let wait = seconds(DELAY);
    let mut args: Vec<String> = match tool {
        "wget" => vec![
            "wget".into(),
            "--recursive".into(),
            format!("--level={LEVEL}"),
            format!("--wait={wait}"),
            "-e".into(),
            "robots=on".into(),
            "--follow-tags=a,area".into(),
            "--no-verbose".into(),
            format!("--directory-prefix={dir}"),
        ],
        "wget2" => vec![
            "wget2".into(),
            "--recursive".into(),
            format!("--level={LEVEL}"),
            format!("--wait={wait}"),
            format!("--max-threads={CONCURRENCY}"),
            "--robots".into(),
            "--no-verbose".into(),
            format!("--directory-prefix={dir}"),
        ],
        _ => vec![
            crawler().to_str().unwrap().to_owned(),
            "--max-concurrent".into(),
            CONCURRENCY.to_string(),
            "--per-host".into(),
            "1".into(),
            "--delay".into(),
            format!("{}ms", DELAY.as_millis()),
            "--depth".into(),
            LEVEL.into(),
            "--out".into(),
            format!("{dir}/crawl.jsonl"),
        ],
    };
    args.push(seed.to_owned());
    args
}

/// Run `tool` on a fresh nginx serving the bench site, under GNU time.
fn measure(tool: &'static str, title: &'static str) -> Measured {
    let spec = SiteSpec::bench(HOSTS, PAGES_PER_HOST);
    let (nginx, _site) = Nginx::start(&spec, latency_options())
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let rss = dir.path().join("rss");
    let seed = format!("{}/", nginx.origins[0]);
    let args = command(tool, &seed, dir.path());
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let wall = started.elapsed();
    // wget exits 8 when any page answered an error status; the site has
    // none, so any failure is worth seeing.
    assert!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let kib: u64 = std::fs::read_to_string(&rss)
        .unwrap()
        .trim()
        .parse()
        .expect("GNU time's %M");
    let log = nginx.access_log().unwrap_or_else(|e| {
        let errors = std::fs::read_to_string(nginx.dir().join("error.log")).unwrap_or_default();
        panic!("{tool}: nginx's access log: {e}; nginx's error.log:\n{errors}")
    });
    summarise(title, wall, kib * 1024, &log)
}

fn summarise(title: &'static str, wall: Duration, peak_rss: u64, log: &[AccessLine]) -> Measured {
    let pages = log
        .iter()
        .filter(|l| l.path != "/robots.txt" && l.status == 200)
        .count();
    let fetched = log
        .iter()
        .filter(|l| l.path != "/robots.txt")
        .map(|l| (l.host, l.path.clone()))
        .collect();
    Measured {
        title,
        wall,
        peak_rss,
        fetched,
        pages,
        smallest_gap: min_gap_per_host(log).into_iter().flatten().min(),
        most_at_once: max_concurrency_per_host(log).into_iter().max().unwrap_or(0),
    }
}

/// Every request passed by nginx to the harness's backends, which answer
/// `LATENCY` late.
fn latency_options() -> NginxOptions {
    NginxOptions {
        per_page_latency: Some(LATENCY),
        ..NginxOptions::default()
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn rate(m: &Measured) -> f64 {
    m.pages as f64 / m.wall.as_secs_f64()
}

fn met(holds: bool) -> &'static str {
    if holds {
        "met"
    } else {
        "missed"
    }
}

pub fn side_by_side() {
    require("nginx", "nginx");
    require("wget", "wget");
    require("wget2", "wget2");
    require("/usr/bin/time", "time");
    // The harness's backends are may coroutines in this process.
    support::configure_may();
    let load = load_average();
    let runs = [
        measure("wget", "wget"),
        measure("wget2", "wget2"),
        measure("crawler", "web_crawler"),
    ];
    let ours = &runs[2];
    let row = |what: &str, cell: &dyn Fn(&Measured) -> Cell| {
        (what.to_owned(), runs.iter().map(cell).collect::<Vec<_>>())
    };
    let rows = vec![
        row("pages fetched (200)", &|m| Cell::Whole(m.pages as u64)),
        row("total time", &|m| Cell::Nanos(m.wall.as_nanos() as f64)),
        row("pages per second", &|m| Cell::Count(rate(m))),
        row("web_crawler's pages/s ÷ this", &|m| {
            Cell::Count(rate(ours) / rate(m))
        }),
        row("peak resident memory", &|m| Cell::Bytes(m.peak_rss as f64)),
        row("same URL set as web_crawler", &|m| {
            Cell::Flag(m.fetched == ours.fetched)
        }),
        row(
            "smallest gap between starts, one host",
            &|m| match m.smallest_gap {
                Some(gap) => Cell::Nanos(gap.as_nanos() as f64),
                None => Cell::Empty,
            },
        ),
        row("most requests at once, one host", &|m| {
            Cell::Whole(m.most_at_once as u64)
        }),
    ];
    for m in &runs[..2] {
        print_difference(m, ours);
    }
    let versus_wget = rate(ours) / rate(&runs[0]);
    let versus_wget2 = rate(ours) / rate(&runs[1]);
    let note = format!(
        "{HOSTS} hosts of {PAGES_PER_HOST} pages (nginx, each page {} ms late through the \
         scriptable backend), a delay of {} ms for every tool (wget and wget2 `--wait`, \
         web_crawler `--delay` with `--per-host 1`), {CONCURRENCY} wget2 threads and \
         web_crawler fetchers; load average {load} at the start. Counts, URL sets, gaps and \
         concurrency from each tool's own nginx access log (gaps between request starts, \
         `$msec - $request_time`, to the millisecond).\n\n\
         Targets: at least 20x wget's pages per second: {versus_wget:.1}x, {}; faster than \
         wget2: {versus_wget2:.2}x, {}.",
        LATENCY.as_millis(),
        DELAY.as_millis(),
        met(versus_wget >= 20.0),
        met(versus_wget2 > 1.0),
    );
    let titles: Vec<&str> = runs.iter().map(|m| m.title).collect();
    support::write_cells_table("web_crawler", "benchmarks.md", &note, &titles, &rows);
}

/// A URL set that differs from the crawler's, printed so the run says how.
fn print_difference(m: &Measured, ours: &Measured) {
    let only_theirs: Vec<_> = m.fetched.difference(&ours.fetched).collect();
    let only_ours: Vec<_> = ours.fetched.difference(&m.fetched).collect();
    if !only_theirs.is_empty() || !only_ours.is_empty() {
        println!(
            "{}: fetched and web_crawler did not: {only_theirs:?}\n\
             web_crawler fetched and {} did not: {only_ours:?}",
            m.title, m.title
        );
    }
}
