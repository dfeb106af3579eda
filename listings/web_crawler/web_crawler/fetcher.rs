//! The fetchers: `--max-concurrent` coroutines, each taking one job at a
//! time from the scheduler, fetching it with the shared client, pulling
//! out its links while the body arrives, and sending the outcome back.
//!
//! A fetcher decides nothing about the crawl: whether to retry, where a
//! link goes and what is recorded are the scheduler's, which owns the
//! state. A fetcher only turns a URL into facts.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use may_patterns::http::client::{Client, FetchError, Fetched};
use url::Url;

use crate::extractor::{is_html, Extractor};
use crate::frontier::{normalise, Entry, Skip};
use crate::politeness::retry_after;
use crate::robots::{robots_url, Rules, MAX_ROBOTS_BYTES, MAX_ROBOTS_REDIRECTS};

/// Links kept per page: a page listing more is an index a crawler should
/// not take whole from one fetch (the rest are counted, not followed).
pub const MAX_LINKS: usize = 5_000;

/// The most memory lol_html may use for one page. Its stack of open
/// elements is most of it: with this extractor, 3,000 nested `div`s fit in
/// 1 MiB and 10,000 in 4 MiB, and 100,000 need 16 MiB (measured
/// 2026-12-02 by feeding such pages to `Extractor::new(10, limit)`). 4 MiB
/// takes real pages, however badly closed, and a page nested deeper is
/// recorded with an error instead of growing the crawler.
pub const MAX_PARSER_MEMORY: usize = 4 * 1024 * 1024;

// ANCHOR: job
/// What the scheduler hands a fetcher.
#[derive(Debug)]
pub enum Job {
    /// Fetch the robots.txt of this origin.
    Robots { origin: String, url: Url },
    /// Fetch a page.
    Page { origin: String, entry: Entry },
}

/// What a fetcher hands back, on the scheduler's one event channel.
#[derive(Debug)]
pub enum Done {
    Robots {
        origin: String,
        result: Result<RobotsAnswer, FetchError>,
    },
    Page(Box<Page>),
}

/// A robots.txt's answer: its status and what it allows.
#[derive(Debug)]
pub struct RobotsAnswer {
    pub status: u16,
    /// `Retry-After` of a 429 or 503, as a wait from when it came.
    pub retry_after: Option<Duration>,
    pub rules: Rules,
}

impl RobotsAnswer {
    /// A `5xx` or `429`: the server failed for now, and the file may be
    /// asked for again before the host is given up (RFC 9309 section
    /// 2.3.1.4).
    pub fn failed(&self) -> bool {
        self.status == 429 || self.status >= 500
    }
}

/// One page fetch, as it went.
#[derive(Debug)]
pub struct Page {
    pub origin: String,
    pub entry: Entry,
    /// When the fetch started, in Unix milliseconds (for the record).
    pub fetched_at_ms: u64,
    pub elapsed: Duration,
    pub result: Result<Answer, FetchError>,
}

/// A response, with what was read out of it.
#[derive(Debug, Default)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` of a 429 or 503, as a wait from when it came.
    pub retry_after: Option<Duration>,
    /// The redirect target of a 3xx: normalised, or why it is no URL.
    pub location: Option<Result<Url, Skip>>,
    pub title: Option<String>,
    /// Out-links, normalised, in page order (duplicates within the page
    /// removed).
    pub links: Vec<Url>,
    /// Hrefs that were no URL to crawl, by why.
    pub bad_links: Vec<Skip>,
    /// Body bytes, decoded.
    pub bytes: u64,
    /// Why the HTML could not be read to its end (the page is kept, its
    /// links are not followed).
    pub html_error: Option<String>,
    /// The exchange as bytes, when a WARC file is written.
    pub exchange: Option<Exchange>,
}

/// One exchange, owned, for the storage writer.
#[derive(Debug, Default)]
pub struct Exchange {
    pub request_head: Vec<u8>,
    pub response_head: Vec<u8>,
    pub body: Vec<u8>,
}
// ANCHOR_END: job

/// What every fetcher shares.
#[derive(Clone)]
pub struct Fetcher {
    pub client: Client,
    pub user_agent: String,
    /// Keep the body and heads for a WARC file.
    pub keep_exchange: bool,
}

impl Fetcher {
    // ANCHOR: run
    /// One fetcher's life: take jobs until the scheduler closes the queue,
    /// handing each outcome to `done` (which says whether anyone listens).
    pub fn run(&self, jobs: may_patterns::bounded::Receiver<Job>, done: impl Fn(Done) -> bool) {
        for job in jobs {
            let outcome = match job {
                Job::Robots { origin, url } => Done::Robots {
                    origin,
                    result: self.robots(url),
                },
                Job::Page { origin, entry } => Done::Page(Box::new(self.page(origin, entry))),
            };
            if !done(outcome) {
                return; // the scheduler is gone
            }
        }
    }
    // ANCHOR_END: run

    // ANCHOR: page
    /// Fetch one page, feeding its body to the extractor as it arrives.
    fn page(&self, origin: String, entry: Entry) -> Page {
        let started = Instant::now();
        let fetched_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The sink sees the body before the caller sees the head, so every
        // body is fed to lol_html; a non-HTML one's result is dropped below.
        let mut extractor = Some(Extractor::new(MAX_LINKS, MAX_PARSER_MEMORY));
        let mut html_error = None;
        let mut body = Vec::new();
        let mut bytes = 0u64;
        let mut sink = |chunk: &[u8]| -> io::Result<()> {
            bytes += chunk.len() as u64;
            if let Some(parser) = extractor.as_mut() {
                if let Err(e) = parser.feed(chunk) {
                    html_error = Some(e.to_string());
                    extractor = None;
                }
            }
            if self.keep_exchange {
                body.extend_from_slice(chunk);
            }
            Ok(())
        };
        let result = self.client.get_streaming(&entry.url, &[], &mut sink);
        let result = result.map(|fetched| {
            let mut answer = Answer {
                status: fetched.status,
                bytes,
                ..Answer::default()
            };
            if matches!(fetched.status, 429 | 503) {
                answer.retry_after = fetched
                    .header("retry-after")
                    .and_then(|v| retry_after(v, SystemTime::now()));
            }
            if (300..400).contains(&fetched.status) {
                answer.location = fetched.header("location").map(|l| normalise(l, &entry.url));
            } else if is_html(fetched.header("content-type")) {
                match extractor.take().map(Extractor::finish) {
                    Some(Ok(found)) => {
                        answer.title = found.title;
                        let base = found
                            .base
                            .and_then(|b| entry.url.join(&b).ok())
                            .unwrap_or_else(|| entry.url.clone());
                        let mut seen = std::collections::HashSet::new();
                        for href in &found.links {
                            match normalise(href, &base) {
                                Ok(url) if seen.insert(url.clone()) => answer.links.push(url),
                                Ok(_) => {}
                                Err(skip) => answer.bad_links.push(skip),
                            }
                        }
                    }
                    Some(Err(e)) => html_error = Some(e.to_string()),
                    None => {}
                }
                answer.html_error = html_error;
            }
            if self.keep_exchange {
                answer.exchange = Some(exchange(&fetched, &self.user_agent, body));
            }
            answer
        });
        Page {
            origin,
            entry,
            fetched_at_ms,
            elapsed: started.elapsed(),
            result,
        }
    }
    // ANCHOR_END: page

    // ANCHOR: robots
    /// Fetch `url`'s robots.txt, following up to five redirects (the
    /// client follows none for the crawler), and read its rules (a 2xx's
    /// body is parsed, any other status decides alone).
    fn robots(&self, mut url: Url) -> Result<RobotsAnswer, FetchError> {
        let mut hops = 0;
        loop {
            let mut body = Vec::new();
            let fetched = self.client.get_streaming(&url, &[], &mut |chunk| {
                let room = MAX_ROBOTS_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                Ok(())
            })?;
            let next = fetched
                .header("location")
                .filter(|_| (300..400).contains(&fetched.status))
                .and_then(|l| normalise(l, &url).ok());
            // Past five redirects the 3xx itself is the answer: unavailable.
            if let Some(next) = next.filter(|_| hops < MAX_ROBOTS_REDIRECTS) {
                (url, hops) = (next, hops + 1);
                continue;
            }
            let status = fetched.status;
            let retry_after = fetched
                .header("retry-after")
                .filter(|_| matches!(status, 429 | 503))
                .and_then(|v| retry_after(v, SystemTime::now()));
            let rules = match status {
                200..=299 => parse_off_the_workers(status, body, &self.user_agent),
                _ => Rules::from_response(status, &[], &self.user_agent),
            };
            return Ok(RobotsAnswer {
                status,
                retry_after,
                rules,
            });
        }
    }
    // ANCHOR_END: robots
}

/// Parse a robots.txt on the blocking pool's threads. texting_robots
/// compiles every rule into a pattern: 500 KiB of rules is tens of
/// milliseconds of CPU in a release build, several times that in a debug
/// one, which on a coroutine would hold a may worker (and every fetch it
/// serves) that long.
fn parse_off_the_workers(status: u16, body: Vec<u8>, user_agent: &str) -> Rules {
    let user_agent = user_agent.to_owned();
    may_patterns::blocking::run(move || Rules::from_response(status, &body, &user_agent))
        // The pool catches a panic of the parser; a file it cannot read
        // restricts nothing, as RFC 9309 reads a file with no valid rule.
        .unwrap_or(Rules::AllowAll)
}

/// The robots.txt of the origin `url` is on.
pub fn robots_job(origin: String, url: &Url) -> Job {
    Job::Robots {
        origin,
        url: robots_url(url),
    }
}

/// The exchange as a WARC file keeps it. The request head is written the
/// way the client writes it (`src/http/client/exchange.rs`); the response
/// head is the one received (`warc` replaces its framing fields, since the
/// body is stored decoded).
fn exchange(fetched: &Fetched, user_agent: &str, body: Vec<u8>) -> Exchange {
    let url = &fetched.url;
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept-Encoding: gzip\r\n\r\n"
    );
    let mut response = format!("HTTP/1.1 {} {}\r\n", fetched.status, fetched.reason);
    for (name, value) in &fetched.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    Exchange {
        request_head: request.into_bytes(),
        response_head: response.into_bytes(),
        body,
    }
}
