//! Step 3: a frontier. Links are normalised before they are compared, so
//! `/p/3.html#top` and `/p/3.html` are one page, and the seen-set keeps a
//! stable 64-bit fingerprint of each URL instead of the URL itself. The
//! program also measures what the seen-set costs per URL both ways.
//!
//! With no arguments it crawls a generated test site served in this process;
//! with URLs as arguments it crawls from those instead.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
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

/// A URL for a fetcher.
struct Job {
    url: Url,
}

/// What a fetcher tells the scheduler.
enum Event {
    /// A job is finished: its status and links, or why it failed.
    Done(Url, Result<(u16, Vec<Url>), String>),
}

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

// ANCHOR: normalise
/// The one spelling of `url` the frontier compares. The url crate already
/// lower-cases the scheme and host, drops a default port, makes an empty
/// path `/`, resolves `.` and `..` and percent-encodes what must be; left
/// to do is the fragment, which never reaches the server. The query stays
/// as written: `?b=2&a=1` and `?a=1&b=2` may be different pages to a server.
fn normalise(mut url: Url) -> Url {
    url.set_fragment(None);
    url
}

/// FNV-1a, 64 bits: the seen-set's key. Written out here, not std's
/// `DefaultHasher`, whose output may change between Rust releases: a
/// fingerprint saved by one build must mean the same URL to the next.
fn fingerprint(url: &Url) -> u64 {
    fnv1a(url.as_str().as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
// ANCHOR_END: normalise

// ANCHOR: frontier
/// The URLs still to fetch and the fingerprints of every URL ever queued.
struct Frontier {
    queue: VecDeque<Url>,
    seen: HashSet<u64>,
    /// The origins the crawl stays on: the seeds'.
    scope: Vec<url::Origin>,
}

impl Frontier {
    fn new(seeds: &[Url]) -> Frontier {
        let mut frontier = Frontier {
            queue: VecDeque::new(),
            seen: HashSet::new(),
            scope: seeds.iter().map(Url::origin).collect(),
        };
        for seed in seeds {
            frontier.push(seed.clone());
        }
        frontier
    }

    /// Queue `url` if it is in scope and new once normalised; whether it was.
    fn push(&mut self, url: Url) -> bool {
        let url = normalise(url);
        let fresh = self.scope.contains(&url.origin()) && self.seen.insert(fingerprint(&url));
        if fresh {
            self.queue.push_back(url);
        }
        fresh
    }

    fn pop(&mut self) -> Option<Url> {
        self.queue.pop_front()
    }
}
// ANCHOR_END: frontier

// ANCHOR: memory
thread_local! {
    /// Bytes this thread has allocated and not yet freed. Counted per
    /// thread, so the other threads of a test run do not blur a
    /// measurement; a const-initialised `Cell` needs no allocation itself.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting what it hands out (the size asked for:
/// malloc's own few bytes of bookkeeping per block are not included).
struct Counting;

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta)); // not while a thread ends
}

// Safety: every call is passed on to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a seen-set of `urls` URLs costs, both ways, in bytes per URL.
struct SeenCost {
    urls: usize,
    mean_url_len: f64,
    strings: f64,
    fingerprints: f64,
}

/// Insert `n` made-up URLs one by one (as a crawl does, so the sets grow as
/// they would) into a `HashSet<String>` and into a fingerprint set.
fn measure_seen_set(n: usize) -> SeenCost {
    let urls: Vec<Url> = (0..n)
        .map(|i| {
            let (site, section) = (i % 16, i / 1000);
            let url =
                format!("https://www.site{site}.example.com/articles/{section}/page-{i}.html");
            Url::parse(&url).unwrap()
        })
        .collect();
    let live = || LIVE.with(Cell::get);
    let before = live();
    let mut strings = HashSet::new();
    for url in &urls {
        strings.insert(url.to_string());
    }
    let string_bytes = live() - before;
    drop(strings);
    let before = live();
    let mut fingerprints = HashSet::new();
    for url in &urls {
        fingerprints.insert(fingerprint(url));
    }
    let fingerprint_bytes = live() - before;
    let total_len: usize = urls.iter().map(|u| u.as_str().len()).sum();
    SeenCost {
        urls: n,
        mean_url_len: total_len as f64 / n as f64,
        strings: string_bytes as f64 / n as f64,
        fingerprints: fingerprint_bytes as f64 / n as f64,
    }
}

/// The chance that some two of `n` distinct URLs share a 64-bit
/// fingerprint (the birthday bound, 1 - e^(-n(n-1)/2^65)). A collision
/// makes the frontier take a new URL for one it has seen: that page is
/// skipped, never fetched twice.
fn collision_odds(n: f64) -> f64 {
    -(-(n * (n - 1.0) / 2f64.powi(65))).exp_m1()
}
// ANCHOR_END: memory

/// Crawl from `seeds` with `max_concurrent` fetchers, staying on the seeds'
/// hosts. This function is the scheduler: only it touches the frontier and
/// the report, so neither needs a lock. It runs on a
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

    let mut frontier = Frontier::new(seeds);
    let mut report = Report::default();
    let mut in_flight = 0;
    let mut handed_out = 0;
    loop {
        while in_flight < max_concurrent && handed_out < MAX_FETCHES {
            let Some(url) = frontier.pop() else { break };
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
            frontier.push(link.clone());
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

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds = match parse_seeds(&args) {
        Ok(seeds) => seeds,
        Err(reason) => {
            eprintln!("step3_frontier: {reason}");
            std::process::exit(2);
        }
    };
    // Keep the test site's servers alive while the crawl runs.
    let (_servers, seeds) = if seeds.is_empty() {
        let mut spec = SiteSpec::small();
        spec.features.trap = false; // endless links wait for step 8's limits
        let (servers, _site) = SiteServer::start_all(&spec).expect("the test site starts");
        let seed = Url::parse(&format!("http://{}/", servers[0].addr)).unwrap();
        (servers, vec![seed])
    } else {
        (Vec::new(), seeds)
    };
    println!(
        "crawling {} seed(s), at most {MAX_CONCURRENT} fetches at once",
        seeds.len()
    );
    let report = run(client(), seeds, MAX_CONCURRENT);
    print_summary(&report);
    print_seen_cost(&measure_seen_set(SEEN_SAMPLE));
}
// ANCHOR_END: main

/// How many URLs the seen-set measurement inserts.
const SEEN_SAMPLE: usize = 100_000;

fn print_seen_cost(cost: &SeenCost) {
    println!(
        "seen-set of {} URLs, {:.1} bytes long on average:",
        cost.urls, cost.mean_url_len
    );
    println!("  HashSet<String>:     ~{:.1} bytes per URL", cost.strings);
    println!(
        "  HashSet<u64> (FNV):  ~{:.1} bytes per URL",
        cost.fingerprints
    );
    for n in [cost.urls as f64, 1e7, 1e9] {
        println!(
            "  chance two of {n:.0e} URLs share a fingerprint: {:.1e}",
            collision_odds(n)
        );
    }
}

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

    // ANCHOR: tests
    fn normalised(url: &str) -> String {
        normalise(Url::parse(url).unwrap()).to_string()
    }

    #[test]
    fn each_normalisation_rule() {
        // The fragment never reaches the server: dropped.
        assert_eq!(normalised("http://a.test/p#top"), "http://a.test/p");
        // Scheme and host are case-insensitive: lower-cased (by url).
        assert_eq!(normalised("HTTP://A.Test/P"), "http://a.test/P");
        // The default port is dropped (by url); another port is kept.
        assert_eq!(normalised("https://a.test:443/"), "https://a.test/");
        assert_eq!(normalised("http://a.test:8080/"), "http://a.test:8080/");
        // An empty path is `/` (by url), dot segments are resolved.
        assert_eq!(normalised("http://a.test"), "http://a.test/");
        assert_eq!(normalised("http://a.test/a/../b/./c"), "http://a.test/b/c");
        // What must be escaped is escaped (by url); an escape already
        // there is left as written, so `%7e` and `~` stay two URLs.
        assert_eq!(normalised("http://a.test/a b"), "http://a.test/a%20b");
        assert_ne!(
            normalised("http://a.test/%7ex"),
            normalised("http://a.test/~x")
        );
        // The query is kept as written, order and all.
        assert_eq!(
            normalised("http://a.test/?b=2&a=1"),
            "http://a.test/?b=2&a=1"
        );
    }

    #[test]
    fn the_fingerprint_is_fnv1a_and_stable() {
        // Published FNV-1a 64 test vectors: the same on every build.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_frontier_queues_each_page_once_and_only_in_scope() {
        let seed = Url::parse("http://a.test/").unwrap();
        let mut frontier = Frontier::new(std::slice::from_ref(&seed));
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(!frontier.push(url("http://a.test/#top")), "the seed, again");
        assert!(frontier.push(url("http://A.TEST:80/p/1.html#x")));
        assert!(!frontier.push(url("http://a.test/p/1.html")));
        assert!(!frontier.push(url("http://b.test/")), "out of scope");
        let queued: Vec<String> = std::iter::from_fn(|| frontier.pop())
            .map(|u| u.to_string())
            .collect();
        assert_eq!(queued, ["http://a.test/", "http://a.test/p/1.html"]);
    }

    #[test]
    fn no_page_is_fetched_twice_though_links_differ_by_fragment() {
        let (servers, seed) = site();
        let report = run(client(), vec![seed], 8);
        let mut paths: Vec<String> = servers[0].requests().into_iter().map(|r| r.path).collect();
        let fetched = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), fetched, "a path was fetched twice");
        assert_eq!(fetched, report.fetched.len());
    }

    #[test]
    fn fingerprints_cost_a_fraction_of_the_urls() {
        let cost = measure_seen_set(20_000);
        assert!(cost.mean_url_len > 50.0, "{}", cost.mean_url_len);
        assert!(cost.strings > cost.mean_url_len, "{}", cost.strings);
        assert!(
            (8.0..32.0).contains(&cost.fingerprints),
            "{}",
            cost.fingerprints
        );
        assert!(cost.fingerprints * 3.0 < cost.strings);
    }

    #[test]
    fn the_collision_odds_follow_the_birthday_bound() {
        assert!((collision_odds(1e5) - 2.7e-10).abs() < 0.1e-10);
        assert!((collision_odds(2f64.powi(32)) - 0.39).abs() < 0.01); // 1 - e^-0.5
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
