//! Step 4: per-host politeness. The frontier keeps one queue per host and
//! hands a host's next URL out only while that host has fewer than
//! `per_host` requests in flight and its delay since the START of its
//! previous request has passed. A `429` or `503` puts the URL back at the
//! head of its host's queue and pushes the whole host back, by the
//! server's `Retry-After` or by a doubling backoff. When no host is ready,
//! the scheduler asks the alarm to wake it when the first one will be, so
//! it only ever waits on its one event channel.
//!
//! With no arguments it crawls a generated test site served in this process
//! (every host's `/` as a seed); with URLs as arguments it crawls from those.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use may::coroutine::Builder;
use may::go;
use may_patterns::alarm::{self, Call};
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::http::client::{self, Client, ClientConfig};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::testsite::{Logged, SiteServer, SiteSpec};
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
/// A URL for a fetcher: which host it counts against, and how many times
/// it was tried already.
struct Job {
    url: Url,
    host: usize,
    tries: u32,
}

/// What a fetch found.
struct Fetch {
    status: u16,
    links: Vec<Url>,
    /// The wait a `429` or `503` asked for, if it said.
    retry_after: Option<Duration>,
}

/// What the scheduler waits for: a fetcher's report (with the moment its
/// request started), or the alarm.
enum Event {
    Done(Job, Instant, Result<Fetch, String>),
    /// A host's delay may be over: look again.
    Wake,
}
// ANCHOR_END: messages

/// One fetcher: fetch each job's URL, extract its links, report. It ends
/// when the scheduler drops the job channel.
fn fetcher(client: Client, jobs: Receiver<Job>, events: Sender<Event>) {
    for job in jobs.iter() {
        let started = Instant::now();
        // A panic (a bug) is reported too: the scheduler waits for every
        // job it handed out.
        let result = catch_unwind(AssertUnwindSafe(|| fetch(&client, &job.url)))
            .unwrap_or_else(|_| Err("the fetcher panicked".into()));
        if events.send(Event::Done(job, started, result)).is_err() {
            return; // the scheduler is gone
        }
    }
}

fn fetch(client: &Client, url: &Url) -> Result<Fetch, String> {
    let page = client.get(url).map_err(|e| e.to_string())?;
    Ok(Fetch {
        status: page.status,
        links: links(&page),
        retry_after: page
            .header("retry-after")
            .and_then(|value| retry_after(value, SystemTime::now())),
    })
}

// ANCHOR: retry_after
/// The longest wait obeyed, from a `Retry-After` or the backoff: a server
/// asking for more gets this (and a real crawler would move on sooner).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A `Retry-After` value, delay-seconds or an HTTP date (RFC 9110
/// section 10.2.3), as a wait from `now`, capped; `None` if it is neither.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => http_date(value)?.duration_since(now).unwrap_or_default(),
    };
    Some(wait.min(MAX_WAIT))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the one date form
/// RFC 9110 lets servers send.
fn http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = value.split_once(", ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = fields[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [hours, minutes, seconds] = hms[..] else {
        return None;
    };
    // Days from 1970-01-01 to a Gregorian date (Howard Hinnant's
    // days_from_civil): count from March, so a leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let secs = days * 86_400 + hours * 3_600 + minutes * 60 + seconds;
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}
// ANCHOR_END: retry_after

/// A real site has no end: stop after this many fetches. (Step 8 makes the
/// limits flags and shows a link trap.)
const MAX_FETCHES: usize = 1_000;

/// What a crawl did: each URL fetched, with its status or why it failed.
#[derive(Debug, Default)]
struct Report {
    fetched: BTreeMap<String, Result<u16, String>>,
    /// Fetches answered `429` or `503` and queued again.
    retries: usize,
    elapsed: Duration,
}

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

// ANCHOR: host
/// How gently each host is treated.
#[derive(Debug, Clone, Copy)]
struct Politeness {
    /// Requests in flight to one host, at most.
    per_host: usize,
    /// From the start of one request to a host to the start of the next.
    delay: Duration,
}

/// The first wait after a `429` or `503` that gave no `Retry-After`; it
/// doubles each time the host says it again (up to `MAX_WAIT`).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// A URL answered `429` or `503` this many times is given up on.
const MAX_TRIES: u32 = 4;

/// One host: a scheme, name and port, which is what a server sees as one
/// client's visits (and, on the test site, one server per port).
struct Host {
    queue: VecDeque<Job>,
    in_flight: usize,
    /// The earliest start of this host's next request.
    next_allowed: Instant,
    /// The next wait after a `429` or `503` without `Retry-After`.
    backoff: Duration,
}

impl Host {
    /// Whether this host has work and may be sent a request at `now`.
    fn ready(&self, now: Instant, politeness: Politeness) -> bool {
        self.waiting(politeness) && self.next_allowed <= now
    }

    /// Whether this host has work and room for it: only its delay can hold it.
    fn waiting(&self, politeness: Politeness) -> bool {
        !self.queue.is_empty() && self.in_flight < politeness.per_host
    }
}
// ANCHOR_END: host

// ANCHOR: frontier
/// The URLs still to fetch, one queue per host, and the fingerprints of
/// every URL ever queued.
struct Frontier {
    hosts: Vec<Host>,
    by_origin: HashMap<String, usize>,
    /// Where the search for a ready host starts: round robin, so a host
    /// with a long queue does not starve the others.
    cursor: usize,
    seen: HashSet<u64>,
    /// The origins the crawl stays on: the seeds'.
    scope: Vec<url::Origin>,
    politeness: Politeness,
}

impl Frontier {
    fn new(seeds: &[Url], politeness: Politeness) -> Frontier {
        let mut frontier = Frontier {
            hosts: Vec::new(),
            by_origin: HashMap::new(),
            cursor: 0,
            seen: HashSet::new(),
            scope: seeds.iter().map(Url::origin).collect(),
            politeness,
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
            let host = self.host_of(&url);
            self.hosts[host].queue.push_back(Job {
                url,
                host,
                tries: 0,
            });
        }
        fresh
    }

    fn host_of(&mut self, url: &Url) -> usize {
        let hosts = &mut self.hosts;
        *self
            .by_origin
            .entry(url.origin().ascii_serialization())
            .or_insert_with(|| {
                hosts.push(Host {
                    queue: VecDeque::new(),
                    in_flight: 0,
                    next_allowed: Instant::now(),
                    backoff: FIRST_BACKOFF,
                });
                hosts.len() - 1
            })
    }

    /// A job whose host may be sent a request `now`, charged to its host;
    /// otherwise when the first waiting host will be ready (`None`: none
    /// waits for time, so only a fetch ending can change anything).
    fn next(&mut self, now: Instant) -> Result<Job, Option<Instant>> {
        let (count, politeness) = (self.hosts.len(), self.politeness);
        for i in (0..count).map(|k| (self.cursor + k) % count) {
            let host = &mut self.hosts[i];
            if host.ready(now, politeness) {
                host.in_flight += 1;
                host.next_allowed = now + politeness.delay;
                self.cursor = (i + 1) % count;
                return Ok(host.queue.pop_front().expect("a ready host has work"));
            }
        }
        let waiting = self.hosts.iter().filter(|h| h.waiting(politeness));
        Err(waiting.map(|h| h.next_allowed).min())
    }

    /// A job's fetch, which started at `started`, is over. Its host was
    /// charged the delay when the job was handed out; if a fetcher took
    /// the job late, the host's next start moves later too: the delay
    /// counts from the request's real start.
    fn done(&mut self, host: usize, started: Instant) {
        let host = &mut self.hosts[host];
        host.in_flight -= 1;
        host.next_allowed = host.next_allowed.max(started + self.politeness.delay);
    }

    /// The host said "not now" (`429`, `503`): `job` goes back to the head
    /// of its queue, and the host waits `wait` (or its backoff) from `now`.
    fn retry_later(&mut self, mut job: Job, wait: Option<Duration>, now: Instant) {
        let host = &mut self.hosts[job.host];
        let wait = wait.unwrap_or_else(|| {
            let backoff = host.backoff;
            host.backoff = (backoff * 2).min(MAX_WAIT);
            backoff
        });
        host.next_allowed = host.next_allowed.max(now + wait);
        job.tries += 1;
        host.queue.push_front(job);
    }
}
// ANCHOR_END: frontier

// ANCHOR: scheduler
/// Crawl from `seeds` with `max_concurrent` fetchers, staying on the seeds'
/// hosts and treating each as `politeness` says. This function is the
/// scheduler: only it touches the frontier and the report, so neither needs
/// a lock. It runs on a
/// coroutine of its own (`run`), parked on the event channel while
/// nothing is ready.
fn crawl(client: &Client, seeds: &[Url], max_concurrent: usize, politeness: Politeness) -> Report {
    let started = Instant::now();
    // At most `max_concurrent` jobs are handed out and not yet reported;
    // the one slot more is for the alarm's `Wake`.
    let (job_tx, job_rx) = bounded::channel(max_concurrent);
    let (event_tx, event_rx) = bounded::channel(max_concurrent + 1);
    let fetchers: Vec<_> = (0..max_concurrent)
        .map(|_| {
            let (client, jobs, events) = (client.clone(), job_rx.clone(), event_tx.clone());
            let builder = Builder::new().stack_size(FETCHER_STACK_BYTES / size_of::<usize>());
            go!(builder, move || fetcher(client, jobs, events)).expect("spawn never fails")
        })
        .collect();
    drop(job_rx);

    let mut frontier = Frontier::new(seeds, politeness);
    let mut report = Report::default();
    let (mut in_flight, mut handed_out) = (0, 0);
    // The alarm set for the first waiting host; dropping it cancels it.
    let mut wake: Option<(Instant, Call)> = None;
    loop {
        let now = Instant::now();
        let mut first_waiting = None;
        while in_flight < max_concurrent && handed_out < MAX_FETCHES {
            match frontier.next(now) {
                Ok(job) => {
                    job_tx.send(job).expect("the fetchers outlive the crawl");
                    in_flight += 1;
                    handed_out += 1;
                }
                Err(at) => {
                    first_waiting = at;
                    break;
                }
            }
        }
        if in_flight == 0 && first_waiting.is_none() {
            break; // nothing queued (or the limit reached) and nothing running
        }
        if let Some(at) = first_waiting {
            if wake
                .as_ref()
                .is_none_or(|(set, _)| *set <= now || at < *set)
            {
                let events = event_tx.clone();
                // A full channel holds events already, and handling them
                // looks at the hosts again: the wake-up is not needed.
                let call = alarm::shared().call_at(at, move || {
                    let _ = events.try_send(Event::Wake);
                });
                wake = Some((at, call));
            }
        }
        // This function holds a sender too (for the alarm): no end here.
        let Ok(event) = event_rx.recv() else { break };
        let Event::Done(job, started, result) = event else {
            continue; // Wake: look at the hosts again
        };
        in_flight -= 1;
        frontier.done(job.host, started);
        match result {
            Ok(fetch) if matches!(fetch.status, 429 | 503) && job.tries + 1 < MAX_TRIES => {
                report.retries += 1;
                frontier.retry_later(job, fetch.retry_after, Instant::now());
            }
            result => {
                for link in result.iter().flat_map(|fetch| &fetch.links) {
                    frontier.push(link.clone());
                }
                let status = result.map(|fetch| fetch.status);
                report.fetched.insert(job.url.to_string(), status);
            }
        }
    }
    drop((job_tx, wake)); // the fetchers see the end and return
    for fetcher in fetchers {
        fetcher.join().expect("a fetcher does not panic");
    }
    report.elapsed = started.elapsed();
    report
}

/// Run the scheduler on a coroutine of its own, with a stack measured for
/// it (see the tests).
fn run(client: Client, seeds: Vec<Url>, max_concurrent: usize, politeness: Politeness) -> Report {
    let builder = Builder::new().stack_size(SCHEDULER_STACK_BYTES / size_of::<usize>());
    go!(builder, move || crawl(
        &client,
        &seeds,
        max_concurrent,
        politeness
    ))
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
/// How many fetches run at once, in all.
const MAX_CONCURRENT: usize = 8;
/// The demo's politeness: two requests at once per host, 50 ms apart.
const POLITENESS: Politeness = Politeness {
    per_host: 2,
    delay: Duration::from_millis(50),
};

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds = match parse_seeds(&args) {
        Ok(seeds) => seeds,
        Err(reason) => {
            eprintln!("step4_politeness: {reason}");
            std::process::exit(2);
        }
    };
    // Keep the test site's servers alive while the crawl runs.
    let (servers, seeds) = if seeds.is_empty() {
        let mut spec = SiteSpec::small();
        spec.features.trap = false; // endless links wait for step 8's limits
        let (servers, _site) = SiteServer::start_all(&spec).expect("the test site starts");
        let seeds = servers
            .iter()
            .map(|s| Url::parse(&format!("http://{}/", s.addr)).unwrap())
            .collect();
        (servers, seeds)
    } else {
        (Vec::new(), seeds)
    };
    println!(
        "crawling {} seed(s), at most {MAX_CONCURRENT} fetches at once, {} per host, {:?} apart",
        seeds.len(),
        POLITENESS.per_host,
        POLITENESS.delay
    );
    let report = run(client(), seeds, MAX_CONCURRENT, POLITENESS);
    print_summary(&report);
    println!("  queued again after 429/503: {}", report.retries);
    for (i, server) in servers.iter().enumerate() {
        let log = server.requests();
        println!(
            "  h{i}: {} requests, at most ~{} at once, starts at least {:.1?} apart",
            log.len(),
            log.iter().map(|r| r.in_flight).max().unwrap_or(0),
            closest_starts(&log).unwrap_or_default()
        );
    }
}

/// The shortest time between two requests' arrivals in a server's log.
fn closest_starts(log: &[Logged]) -> Option<Duration> {
    let mut times: Vec<Instant> = log.iter().map(|r| r.at).collect();
    times.sort();
    times.windows(2).map(|w| w[1] - w[0]).min()
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

    fn site() -> (Vec<SiteServer>, Vec<Url>) {
        configure_for_tests();
        let mut spec = SiteSpec::small();
        spec.features.trap = false;
        let (servers, _site) = SiteServer::start_all(&spec).unwrap();
        let seeds = servers
            .iter()
            .map(|s| Url::parse(&format!("http://{}/", s.addr)).unwrap())
            .collect();
        (servers, seeds)
    }

    // ANCHOR: tests
    #[test]
    fn each_host_sees_its_delay_between_request_starts() {
        let (servers, seeds) = site();
        let delay = Duration::from_millis(100);
        let politeness = Politeness { per_host: 2, delay };
        let report = run(client(), seeds[..2].to_vec(), 8, politeness);
        assert!(report.fetched.len() > 10, "{:?}", report.fetched);
        for server in &servers[..2] {
            let log = server.requests();
            assert!(log.len() > 2, "{} requests", log.len());
            // Loose: the scheduler's clock starts a request a little before
            // the server's log sees it, and that lag varies.
            let closest = closest_starts(&log).unwrap();
            assert!(closest >= delay * 7 / 10, "{closest:?} apart");
        }
    }

    #[test]
    fn never_more_than_per_host_in_flight_to_one_host() {
        let (servers, seeds) = site();
        servers[0].set_delay("/p/", Duration::from_millis(40));
        let politeness = Politeness {
            per_host: 2,
            delay: Duration::ZERO,
        };
        run(client(), seeds[..1].to_vec(), 8, politeness);
        let most = servers[0].requests().iter().map(|r| r.in_flight).max();
        assert_eq!(most, Some(2), "8 fetchers, 2 per host");
    }
    // ANCHOR_END: tests

    #[test]
    fn a_503_with_retry_after_is_fetched_again_after_the_wait() {
        let (servers, seeds) = site();
        servers[0].fail("/p/1.html", 503, 1);
        let politeness = Politeness {
            per_host: 2,
            delay: Duration::from_millis(1),
        };
        let report = run(client(), seeds[..1].to_vec(), 4, politeness);
        let url = seeds[0].join("/p/1.html").unwrap().to_string();
        assert_eq!(report.fetched.get(&url), Some(&Ok(200)), "{report:?}");
        assert!(report.retries >= 1);
        let tries: Vec<Instant> = servers[0]
            .requests()
            .into_iter()
            .filter(|r| r.path == "/p/1.html")
            .map(|r| r.at)
            .collect();
        assert_eq!(tries.len(), 2);
        // Loose: the scripted answer asks for a second.
        assert!(tries[1] - tries[0] >= Duration::from_millis(900));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        let s = Duration::from_secs;
        assert_eq!(retry_after("5", now), Some(s(5)));
        assert_eq!(retry_after(" 120 ", now), Some(MAX_WAIT));
        // 784111777 is the RFC's own example date in Unix seconds.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(s(30))
        );
        let later = now + s(3600);
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(s(0))
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(UNIX_EPOCH + s(951_825_600))
        );
        for garbage in [
            "soon",
            "-1",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "",
        ] {
            assert_eq!(retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_host_that_keeps_refusing_is_given_up_on() {
        let (servers, seeds) = site();
        servers[0].fail("/", 429, 100);
        let politeness = Politeness {
            per_host: 1,
            delay: Duration::from_millis(1),
        };
        let report = run(client(), seeds[..1].to_vec(), 2, politeness);
        let root = seeds[0].to_string();
        assert_eq!(report.fetched.get(&root), Some(&Ok(429)));
        assert_eq!(report.retries, MAX_TRIES as usize - 1);
        assert_eq!(servers[0].requests().len(), MAX_TRIES as usize);
    }
}
