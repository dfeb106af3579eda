//! Step 1: a sequential crawl of one site. Fetch a URL with the book's
//! client, pull the links out of the page, keep those on the seed's host
//! that were never seen before, and fetch the next one: one URL at a time.
//!
//! With no arguments it crawls a generated test site served in this process;
//! with URLs as arguments it crawls from those instead.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::go;
use may_patterns::http::client::{self, Client, ClientConfig};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::testsite::{SiteServer, SiteSpec};
use url::Url;

// ANCHOR: links
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
// ANCHOR_END: links

// ANCHOR: crawl
/// A real site has no end: stop after this many fetches. (Step 8 makes the
/// limits flags and shows a link trap.)
const MAX_FETCHES: usize = 1_000;

/// What a crawl did: each URL fetched, with its status or why it failed.
#[derive(Debug, Default)]
struct Report {
    fetched: BTreeMap<String, Result<u16, String>>,
    elapsed: Duration,
}

/// Crawl from `seeds`, one URL at a time, staying on the seeds' hosts.
fn crawl(client: &Client, seeds: &[Url]) -> Report {
    let started = Instant::now();
    let in_scope = |url: &Url| seeds.iter().any(|seed| seed.origin() == url.origin());
    let mut seen: HashSet<String> = seeds.iter().map(|s| s.to_string()).collect();
    let mut queue: VecDeque<Url> = seeds.iter().cloned().collect();
    let mut report = Report::default();
    while let Some(url) = queue.pop_front() {
        if report.fetched.len() == MAX_FETCHES {
            break;
        }
        let result = client.get(&url);
        report.fetched.insert(
            url.to_string(),
            result.as_ref().map(|p| p.status).map_err(|e| e.to_string()),
        );
        let Ok(page) = result else { continue };
        for link in links(&page) {
            if in_scope(&link) && seen.insert(link.to_string()) {
                queue.push_back(link);
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}
// ANCHOR_END: crawl

// ANCHOR: main
/// The crawl's coroutine runs the client and the link scan: it gets the
/// client's measured stack plus a margin for the scan (see the tests).
const CRAWL_STACK_BYTES: usize = client::STACK_SIZE + SCAN_STACK_BYTES;
/// What `links` needs on top of the client: twice what a page of 20,000
/// links takes in a debug build, which takes more than a release build
/// (`measure_the_scan_stack` shows it; a test runs that page on half).
const SCAN_STACK_BYTES: usize = 24 * 1024;

fn client() -> Client {
    Client::new(ClientConfig {
        user_agent: "may-patterns-crawler/0.1".into(),
        max_redirects: 0, // a redirect is a link, see `links`
        ..ClientConfig::default()
    })
}

/// Run `crawl` on a coroutine with the stack it needs.
fn crawl_on_coroutine(seeds: Vec<Url>) -> Report {
    let client = client();
    let builder = Builder::new().stack_size(CRAWL_STACK_BYTES / size_of::<usize>());
    go!(builder, move || crawl(&client, &seeds))
        .expect("may's Builder::spawn never returns an error")
        .join()
        .expect("the crawl does not panic")
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

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds = match parse_seeds(&args) {
        Ok(seeds) => seeds,
        Err(reason) => {
            eprintln!("step1_sequential_crawl: {reason}");
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
    println!("crawling {} seed(s), one URL at a time", seeds.len());
    let report = crawl_on_coroutine(seeds);
    print_summary(&report);
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
// ANCHOR_END: main

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

    #[test]
    fn the_naive_scan_finds_double_quoted_hrefs_only() {
        let html = r#"<a href="/a">a</a> <a href='/b'>b</a> <A HREF="/c">c</A> <a href=/d>"#;
        assert_eq!(naive_hrefs(html), vec!["/a"]);
    }

    #[test]
    fn the_crawl_stays_on_the_seed_host_and_fetches_each_url_once() {
        let (servers, seed) = site();
        let report = crawl_on_coroutine(vec![seed.clone()]);
        assert!(report.fetched.len() > 5, "{:?}", report.fetched);
        for url in report.fetched.keys() {
            assert_eq!(Url::parse(url).unwrap().origin(), seed.origin(), "{url}");
        }
        // One request per URL: the seen-set holds. (A page linked with and
        // without a `#fragment` is two URLs here, so two requests: step 3
        // normalises URLs before comparing them.)
        assert_eq!(servers[0].requests().len(), report.fetched.len());
        for other in &servers[1..] {
            assert!(other.requests().is_empty(), "left the seed's host");
        }
    }

    #[test]
    fn a_redirect_is_followed_as_a_link() {
        let (_servers, seed) = site();
        let report = crawl_on_coroutine(vec![seed]);
        assert!(
            report
                .fetched
                .values()
                .any(|r| matches!(r, Ok(301 | 302 | 307 | 308))),
            "the small site has redirects: {:?}",
            report.fetched
        );
    }

    #[test]
    fn a_bad_seed_is_refused_with_a_reason() {
        let refused = parse_seeds(&["ftp://x/".into()]).unwrap_err();
        assert_eq!(refused, "ftp://x/: not an http(s) URL (ftp)");
        let refused = parse_seeds(&["no url".into()]).unwrap_err();
        assert!(refused.starts_with("no url: not a URL"), "{refused}");
    }

    /// What `SCAN_STACK_BYTES` is sized from: may prints a coroutine's stack
    /// use when it ends if its stack size (in words) is odd.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn measure_the_scan_stack() {
        // 1 MiB and one word: far more than the scan needs, and odd.
        println!("{} links", scan_on_stack((1 << 17) + 1));
        // may prints its report just after `join` returns: wait for it.
        std::thread::sleep(Duration::from_millis(100));
    }

    #[test]
    fn the_scan_of_a_large_page_runs_on_half_its_stack() {
        assert_eq!(scan_on_stack(SCAN_STACK_BYTES / 8 / 2), 20_000);
    }

    /// Scan a page of 20,000 links on a coroutine of `words`.
    fn scan_on_stack(words: usize) -> usize {
        configure_for_tests();
        let body: String = (0..20_000)
            .map(|i| format!("<a href=\"../p/{i}.html?x=%7e#top\">{i}</a>\n"))
            .collect();
        let page = client::Fetched {
            url: Url::parse("http://127.0.0.1:1/dir/index.html").unwrap(),
            redirects: Vec::new(),
            status: 200,
            reason: "OK".into(),
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: body.into_bytes(),
            wire_bytes: 0,
            elapsed: Duration::ZERO,
            reused_connection: false,
        };
        let builder = Builder::new().stack_size(words);
        go!(builder, move || links(&page).len())
            .unwrap()
            .join()
            .unwrap()
    }
}
