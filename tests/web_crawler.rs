//! End-to-end: the finished `web_crawler` run as a user runs it, against
//! nginx serving the generated test site (`may_patterns::testsite`) and
//! against a server of bad answers written here. What the crawler did is
//! read from nginx's own access log, not from the crawler's word.
//!
//! Needs nginx, wget and Python's warcio (`.ci/run` installs them: Debian
//! packages `nginx`, `wget`, and `python3 -m pip install warcio`); a test
//! whose tool is missing fails and says so.

#[path = "support/mod.rs"]
mod support;

#[path = "web_crawler/bad_server.rs"]
mod bad_server;
#[path = "web_crawler/run.rs"]
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use may_patterns::testsite::{
    max_concurrency_per_host, min_gap_per_host, AccessLine, Nginx, NginxOptions, Site, SiteSpec,
};

use bad_server::{BadServer, BODY_CAP, INVALID_LINKS};

/// Errors a record may carry for a failed fetch; the reason is free text,
/// so the checks look for the words that name the cause.
fn error_of(record: Option<&serde_json::Value>) -> Option<String> {
    record?["error"].as_str().map(str::to_owned)
}

fn mentions(text: &str, words: &[&str]) -> bool {
    let text = text.to_ascii_lowercase();
    words.iter().any(|w| text.contains(w))
}

/// Every bad input the issue lists, on one site: each ends as a record
/// with an error that names its cause, the program exits 0, no panic.
#[test]
fn bad_input_is_recorded_as_errors_with_reasons_and_nothing_panics() {
    let server = BadServer::start();
    let origin = server.origin();
    let dir = tempfile::tempdir().unwrap();
    let cap = BODY_CAP.to_string();
    let crawl = run::crawl(
        dir.path(),
        &[
            &format!("{origin}/"),
            "--timeout",
            "3s",
            "--max-bytes",
            &cap,
            "--delay",
            "1ms",
            "--per-host",
            "4",
            "--depth",
            "3",
        ],
        Duration::from_secs(90),
    );
    crawl.assert_clean();
    let mut wrong = Vec::new();
    let url = |path: &str| format!("{origin}{path}");

    // The seed was fetched past a robots.txt of garbage.
    if crawl.record(&url("/")).and_then(|r| r["status"].as_u64()) != Some(200) {
        wrong.push(
            "the seed was not fetched (a garbage robots.txt must not stop the crawl)".to_owned(),
        );
    }
    // Malformed HTML is a page like any other, and a link after 5,000
    // unclosed elements is still found.
    match crawl.record(&url("/broken.html")) {
        Some(r) if r["status"] == 200 && r["error"].is_null() => {}
        other => wrong.push(format!(
            "/broken.html: want status 200, no error; got {other:?}"
        )),
    }
    if crawl.record(&url("/ok.html")).is_none() {
        wrong.push("/ok.html, linked after the broken markup, was not fetched".to_owned());
    }
    // The trickling server: a timeout, well inside the run's bound.
    match error_of(crawl.record(&url("/trickle"))) {
        Some(e) if mentions(&e, &["timeout", "timed out"]) => {}
        other => wrong.push(format!("/trickle: want a timeout error, got {other:?}")),
    }
    // A body past the cap.
    match error_of(crawl.record(&url("/big"))) {
        Some(e) if mentions(&e, &[&cap, "too large", "longer than", "cap"]) => {}
        other => wrong.push(format!("/big: want a body-too-large error, got {other:?}")),
    }
    // A redirect to a scheme that is not HTTP: the redirect is recorded
    // (a 3xx is a page whose one link is its Location), and that link is
    // counted as skipped, not fetched. Two of them: ftp: and mailto:.
    for path in ["/to-ftp", "/to-mailto"] {
        if crawl.record(&url(path)).and_then(|r| r["status"].as_u64()) != Some(302) {
            wrong.push(format!("{path}: want its 302 recorded"));
        }
    }
    if crawl.counted("skipped", "not_http") < 2 {
        wrong.push("want the ftp: and mailto: Locations counted as skipped (not_http)".to_owned());
    }
    // Links that are not URLs: counted as skipped, none fetched.
    if crawl.counted("skipped", "invalid_url") < INVALID_LINKS.len() as u64 {
        wrong.push(format!(
            "want the {} invalid links counted as skipped (invalid_url)",
            INVALID_LINKS.len()
        ));
    }
    // Nothing but the bad site's own pages was asked for.
    for record in &crawl.records {
        if !record["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&origin))
        {
            wrong.push(format!("a record off the site: {record}"));
        }
    }
    // Every fetcher came back: the trickle ended at its timeout, not at
    // the server's minute.
    if crawl.elapsed > Duration::from_secs(45) {
        wrong.push(format!("the crawl took {:?}", crawl.elapsed));
    }
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        crawl.describe()
    );
}

// ------------------------------------------------------------- nginx --

/// nginx serving `spec`'s site, or a failure that says what is missing.
fn serve(spec: &SiteSpec, options: NginxOptions) -> (Nginx, Site) {
    Nginx::start(spec, options)
        .unwrap_or_else(|e| panic!("nginx did not start ({e}); .ci/run installs Debian's nginx"))
}

/// (host, path) of every request but robots.txt, with how many times.
fn requested(log: &[AccessLine]) -> BTreeMap<(usize, String), usize> {
    let mut seen = BTreeMap::new();
    for line in log.iter().filter(|l| l.path != "/robots.txt") {
        *seen.entry((line.host, line.path.clone())).or_default() += 1;
    }
    seen
}

/// nginx logs to the millisecond: two starts 200 ms apart may read 199.
const LOG_RESOLUTION: Duration = Duration::from_millis(2);

/// How much later than the crawler sent it nginx may see a request start:
/// `$request_time` counts from when nginx's event loop reads the request,
/// and on two busy cores (the crawler, nginx, its backends and other tests
/// share them) that read can lag the send by a few milliseconds, so one
/// start seen late makes the next gap look short. Measured: 196 ms for a
/// 200 ms delay with three CPU hogs beside the test. A crawler that ignores
/// the delay shows gaps near zero, far below this.
const OBSERVER_LAG: Duration = Duration::from_millis(10);

/// The politeness the flags promise, read from nginx's access log: every
/// page made 600 ms late, so that without the per-host bound three
/// requests to a host would overlap (one starts every 200 ms).
#[test]
fn nginx_sees_the_delay_the_per_host_bound_and_robots_obeyed() {
    const DELAY: Duration = Duration::from_millis(200);
    const PER_HOST: usize = 2;
    let late = NginxOptions {
        per_page_latency: Some(Duration::from_millis(600)),
        ..NginxOptions::default()
    };
    let (nginx, site) = serve(&SiteSpec::small(), late);
    let dir = tempfile::tempdir().unwrap();
    let crawl = run::crawl(
        dir.path(),
        &[
            &site.seed_url(),
            "--per-host",
            &PER_HOST.to_string(),
            "--delay",
            "200ms",
            "--max-concurrent",
            "8",
            "--depth",
            "4",
            "--timeout",
            "10s",
        ],
        Duration::from_secs(180),
    );
    crawl.assert_clean();
    let log = nginx.access_log().expect("nginx's access log");
    let mut wrong = Vec::new();

    // One request per delay per host, counted from the starts; a
    // Crawl-delay longer than --delay wins.
    for (host, gap) in min_gap_per_host(&log).into_iter().enumerate() {
        let asked = site
            .crawl_delay(host)
            .map_or(DELAY, |s| DELAY.max(Duration::from_secs_f64(s)));
        if let Some(gap) = gap {
            if gap + LOG_RESOLUTION + OBSERVER_LAG < asked {
                wrong.push(format!("h{host}: two starts {gap:?} apart, want {asked:?}"));
            }
        }
    }
    let most = max_concurrency_per_host(&log);
    for (host, &most) in most.iter().enumerate() {
        if most > PER_HOST {
            wrong.push(format!(
                "h{host}: {most} requests at once, want at most {PER_HOST}"
            ));
        }
    }
    // The latency made the bound matter: some host had K at once.
    if !most.contains(&PER_HOST) {
        wrong.push(format!(
            "no host reached {PER_HOST} at once ({most:?}): the bound went untested"
        ));
    }
    println!(
        "most at once per host: {most:?}; smallest gaps: {:?}",
        min_gap_per_host(&log)
    );
    for host in 0..site.origins().len() {
        let lines: Vec<&AccessLine> = log.iter().filter(|l| l.host == host).collect();
        // robots.txt first, answered before any page was asked for.
        let Some(robots) = lines.iter().find(|l| l.path == "/robots.txt") else {
            if !lines.is_empty() {
                wrong.push(format!("h{host}: pages fetched, robots.txt never"));
            }
            continue;
        };
        let first_page = lines
            .iter()
            .filter(|l| l.path != "/robots.txt")
            .map(|l| l.started())
            .fold(f64::INFINITY, f64::min);
        if first_page + LOG_RESOLUTION.as_secs_f64() < robots.msec {
            wrong.push(format!(
                "h{host}: a page was asked for before robots.txt was answered"
            ));
        }
        // Nothing robots.txt forbids.
        let forbidden = site.disallowed_paths(host);
        for line in lines.iter().filter(|l| l.path != "/robots.txt") {
            if forbidden.iter().any(|p| line.path.starts_with(p.as_str())) {
                wrong.push(format!("h{host}: fetched {} (disallowed)", line.path));
            }
        }
    }
    // And it did crawl: pages on the hosts robots.txt opens.
    let pages = requested(&log).len();
    if pages < 20 {
        wrong.push(format!("only {pages} pages requested"));
    }
    assert!(
        wrong.is_empty(),
        "{}\naccess log:\n{}",
        wrong.join("\n"),
        log.iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// How deep both tools go: past every plain page of the small site, so
/// only the link trap is cut off by it, at the same month for both.
const PARITY_DEPTH: &str = "8";

/// wget as the chapter runs it: recursive from the seed, robots.txt on,
/// `<a>` and `<area>` links only (what the crawler extracts), one try per URL. wget
/// follows links to other ports of 127.0.0.1 without `--span-hosts`: it
/// compares host names, not ports.
fn wget(seed: &str, dir: &std::path::Path) -> std::process::Output {
    let mut command = std::process::Command::new("wget");
    command
        .args(["--recursive", "-e", "robots=on", "--follow-tags=a,area"])
        .arg(format!("--level={PARITY_DEPTH}"))
        .args(["--tries=1", "--timeout=10", "--no-verbose"])
        .arg("--directory-prefix")
        .arg(dir)
        .arg(seed);
    let found = std::process::Command::new("wget").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "wget is missing (Debian package wget; .ci/run installs it)"
    );
    let out = support::output_bounded(&mut command, Duration::from_secs(180));
    // 4: a network failure (the site's redirect to ftp://, where nothing
    // listens); 8: a page answered an error status (404s, 500, 503).
    assert!(
        matches!(out.status.code(), Some(0 | 4 | 8)),
        "wget failed: {out:?}"
    );
    out
}

/// The crawler and wget on two nginx instances serving the same site: the
/// same (host, path) requested, apart from two places where wget 1.21
/// parts from the standards: a robots.txt answering 5xx, and an `href`
/// without a value.
#[test]
fn the_crawler_requests_what_wget_requests() {
    let spec = SiteSpec::small();
    let (theirs, site) = serve(&spec, NginxOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    wget(&site.seed_url(), dir.path());
    println!("wget took {:?}", started.elapsed());
    let wget_log = theirs.access_log().expect("nginx's access log");

    let (ours, site) = serve(&spec, NginxOptions::default());
    let crawl = run::crawl(
        dir.path(),
        &[
            &site.seed_url(),
            "--depth",
            PARITY_DEPTH,
            "--delay",
            "1ms",
            "--per-host",
            "4",
            "--timeout",
            "10s",
        ],
        Duration::from_secs(180),
    );
    println!("the crawler took {:?}", crawl.elapsed);
    crawl.assert_clean();
    let our_log = ours.access_log().expect("nginx's access log");

    // A robots.txt that answers 5xx: RFC 9309 2.3.1.4 disallows the whole
    // host; wget 1.21 treats any robots.txt it cannot get as no rules.
    let off_limits: Vec<usize> = (0..spec.hosts)
        .filter(|&h| site.disallowed_paths(h).iter().any(|p| p == "/"))
        .collect();
    let keep = |log: &[AccessLine]| -> BTreeSet<(usize, String)> {
        requested(log)
            .into_keys()
            .filter(|(host, _)| !off_limits.contains(host))
            .collect()
    };
    let (mut wget_set, our_set) = (keep(&wget_log), keep(&our_log));
    // broken.html has `<a href>`, an attribute without a value. HTML gives
    // it the empty string (the page itself, already seen); wget 1.21's own
    // parser takes the attribute's name as its value and asks for /href.
    assert!(
        wget_set.remove(&(0, "/href".to_owned())),
        "wget no longer asks for /href: drop this exception"
    );
    let only_wget: Vec<_> = wget_set.difference(&our_set).collect();
    let only_ours: Vec<_> = our_set.difference(&wget_set).collect();
    assert!(
        only_wget.is_empty() && only_ours.is_empty(),
        "wget only: {only_wget:?}\ncrawler only: {only_ours:?}\n{}",
        crawl.describe()
    );
    assert!(our_set.len() > 30, "too little crawled: {our_set:?}");
    for host in &off_limits {
        let pages: Vec<_> = requested(&our_log)
            .into_keys()
            .filter(|(h, _)| h == host)
            .collect();
        assert!(
            pages.is_empty(),
            "h{host}'s robots.txt answers 5xx: {pages:?}"
        );
    }
}

/// `--warc` read back by warcio: every record parses, every digest
/// matches, and there is one response record per page in the JSON Lines.
#[test]
fn warcio_reads_back_every_record_of_the_warc_file() {
    let (_nginx, site) = serve(&SiteSpec::small(), NginxOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let warc = dir.path().join("crawl.warc");
    let crawl = run::crawl(
        dir.path(),
        &[
            &site.seed_url(),
            "--warc",
            warc.to_str().unwrap(),
            "--depth",
            "3",
            "--delay",
            "1ms",
            "--timeout",
            "10s",
        ],
        Duration::from_secs(120),
    );
    crawl.assert_clean();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/web_crawler/read_warc.py"
    );
    let out = support::output_bounded(
        std::process::Command::new("python3").arg(script).arg(&warc),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "python3 with warcio must be installed (.ci/run: python3 -m pip install warcio): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["problems"], serde_json::json!([]), "{read}");
    // The pages that got an answer (not those that failed before one).
    let answered: BTreeSet<String> = crawl
        .records
        .iter()
        .filter(|r| r["status"].as_u64().is_some_and(|s| s > 0))
        .map(|r| r["url"].as_str().unwrap().to_owned())
        .collect();
    let in_warc: BTreeSet<String> = read["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap().to_owned())
        .filter(|uri| !uri.ends_with("/robots.txt"))
        .collect();
    assert_eq!(in_warc, answered, "{read}\n{}", crawl.describe());
    assert!(answered.len() > 10, "{}", crawl.describe());
    assert_eq!(
        read["counts"]["request"], read["counts"]["response"],
        "{read}"
    );
}

/// Ctrl-C in the middle of a crawl, then `--resume`: nginx's log shows no
/// page asked for twice (a `503` that is retried is asked for again, by
/// design), and the two runs together fetch what one whole crawl fetches.
#[test]
fn ctrl_c_then_resume_fetches_no_page_twice() {
    let spec = SiteSpec::small();
    let flags = [
        "--depth",
        PARITY_DEPTH,
        "--delay",
        "100ms",
        "--per-host",
        "1",
        "--timeout",
        "10s",
    ];
    let (nginx, site) = serve(&spec, NginxOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let seed = site.seed_url();
    let mut first = run::command(dir.path(), &[&[seed.as_str()][..], &flags].concat());
    let (mut child, _stdout, _stderr) = support::spawn_with_lines(&mut first);
    // Interrupt once a few pages are in, long before the end.
    let started = std::time::Instant::now();
    while requested(&nginx.access_log().unwrap()).len() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the crawl did not get going"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the crawl ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling nginx's log, a file
    }
    support::interrupt(&child);
    let status = support::wait_bounded(&mut child, Duration::from_secs(30));
    assert!(
        status.success(),
        "Ctrl-C must checkpoint and exit 0: {status:?}"
    );
    let before = requested(&nginx.access_log().unwrap());

    let resumed = run::crawl(
        dir.path(),
        &[&["--resume"][..], &flags].concat(),
        Duration::from_secs(180),
    );
    resumed.assert_clean();
    let log = nginx.access_log().unwrap();

    // Asked for twice: only pages that answered 503 (retried) before.
    let mut twice = Vec::new();
    for ((host, path), times) in requested(&log) {
        let answers: Vec<u16> = log
            .iter()
            .filter(|l| l.host == host && l.path == path)
            .map(|l| l.status)
            .collect();
        let final_answers = answers.iter().filter(|&&s| s != 503 && s != 429).count();
        if times > 1 && final_answers > 1 {
            twice.push(format!("h{host}{path}: {answers:?}"));
        }
    }
    assert!(
        twice.is_empty(),
        "asked for twice: {twice:?}\n{}",
        resumed.describe()
    );
    // The records of both runs name each page once.
    let urls = resumed.urls();
    let distinct: BTreeSet<&String> = urls.iter().collect();
    assert_eq!(
        distinct.len(),
        urls.len(),
        "a page recorded twice:\n{}",
        resumed.describe()
    );
    // Nothing lost: a whole crawl of a fresh copy of the site asks for the same.
    let (whole, whole_site) = serve(&spec, NginxOptions::default());
    let other = tempfile::tempdir().unwrap();
    let once = run::crawl(
        other.path(),
        &[&[whole_site.seed_url().as_str()][..], &flags].concat(),
        Duration::from_secs(180),
    );
    once.assert_clean();
    let all: BTreeSet<_> = requested(&whole.access_log().unwrap())
        .into_keys()
        .collect();
    let both: BTreeSet<_> = requested(&log).into_keys().collect();
    assert!(
        before.len() < both.len(),
        "the first run was not interrupted early"
    );
    assert_eq!(both, all, "interrupted and resumed vs one whole crawl");
}
