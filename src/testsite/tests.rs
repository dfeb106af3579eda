use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lol_html::{element, rewrite_str, RewriteStrSettings};
use url::Url;

use super::*;
use crate::http::{self, Limits};
use crate::runtime::configure_for_tests;

fn origins(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("http://127.0.0.1:{}", 8000 + i))
        .collect()
}

/// One GET over a plain std socket: these tests run on the test's own
/// thread, not on a may worker, so blocking here blocks nobody.
fn get(url: &Url, headers: &[(&str, &str)]) -> std::io::Result<http::Response> {
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut extra = vec![("Connection", "close")];
    extra.extend_from_slice(headers);
    http::write_request(
        &mut stream,
        "GET",
        &url[url::Position::BeforePath..],
        "site",
        &extra,
        b"",
    )?;
    http::read_response(&mut BufReader::new(stream), &Limits::default())
}

/// What a robots.txt answer means for a host (RFC 9309 section 2.3.1).
enum Rules {
    Parsed(texting_robots::Robot),
    AllowAll,
    DisallowAll,
}

/// A small breadth-first crawler written only from the standards (HTML
/// links by lol_html, robots.txt by texting_robots, URLs by the url crate),
/// knowing nothing of the generator: the URLs it fetches are what
/// `expected_urls` must predict.
fn reference_crawl(seed: &str, max_depth: usize) -> BTreeSet<String> {
    let mut robots: HashMap<String, Rules> = HashMap::new();
    let mut seen = BTreeSet::from([seed.to_owned()]);
    let mut fetched = BTreeSet::new();
    let mut queue = VecDeque::from([(Url::parse(seed).unwrap(), 0)]);
    while let Some((url, depth)) = queue.pop_front() {
        let origin = url.origin().ascii_serialization();
        let rules = robots.entry(origin.clone()).or_insert_with(|| {
            let robots_url = Url::parse(&format!("{origin}/robots.txt")).unwrap();
            match get(&robots_url, &[]) {
                Ok(r) if r.status < 300 => match texting_robots::Robot::new("testbot", &r.body) {
                    Ok(robot) => Rules::Parsed(robot),
                    Err(_) => Rules::AllowAll,
                },
                Ok(r) if r.status < 500 => Rules::AllowAll,
                _ => Rules::DisallowAll,
            }
        });
        let allowed = match rules {
            Rules::Parsed(robot) => robot.allowed(url.as_str()),
            Rules::AllowAll => true,
            Rules::DisallowAll => false,
        };
        if !allowed {
            continue;
        }
        fetched.insert(url.to_string());
        let Ok(response) = get(&url, &[]) else {
            continue; // the large page: past the 1 MiB body limit
        };
        let mut hrefs = Vec::new();
        if (300..400).contains(&response.status) {
            hrefs.extend(http::header(&response.headers, "location").map(str::to_owned));
        } else if http::header(&response.headers, "content-type") == Some("text/html") {
            let html = String::from_utf8_lossy(&response.body);
            let settings = RewriteStrSettings::new().append_element_content_handler(element!(
                "a[href]",
                |el| {
                    hrefs.push(el.get_attribute("href").unwrap_or_default());
                    Ok(())
                }
            ));
            rewrite_str(&html, settings).unwrap();
        }
        if depth == max_depth {
            continue;
        }
        for href in hrefs {
            let Ok(mut link) = url.join(&href) else {
                continue;
            };
            link.set_fragment(None);
            let ours =
                matches!(link.scheme(), "http" | "https") && link.host_str() == Some("127.0.0.1");
            if ours && seen.insert(link.to_string()) {
                queue.push_back((link, depth + 1));
            }
        }
    }
    fetched
}

#[test]
fn the_same_spec_makes_the_same_site_and_another_seed_another() {
    let spec = SiteSpec::small();
    let (a, b) = (
        Site::generate(&spec, &origins(4)),
        Site::generate(&spec, &origins(4)),
    );
    let reseeded = SiteSpec { seed: 15, ..spec };
    let c = Site::generate(&reseeded, &origins(4));
    for host in 0..4 {
        assert_eq!(a.resources(host), b.resources(host));
    }
    assert_ne!(
        a.resources(1).get("/p/3.html"),
        c.resources(1).get("/p/3.html")
    );
    assert_eq!(a.expected_urls(4), b.expected_urls(4));
}

#[test]
fn expected_urls_follow_robots_redirects_and_the_trap_up_to_the_depth() {
    let site = Site::generate(&SiteSpec::small(), &origins(4));
    let expected = site.expected_urls(3);
    let has = |url: &str| expected.contains(url);
    let h = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", 8000 + i);
    assert!(has(&h(0, "/")) && has(&h(0, "/p/0.html")) && has(&h(0, "/fixed.html")));
    assert!(has(&h(0, "/loop/a")) && has(&h(0, "/loop/b")) && has(&h(0, "/moved/1.html")));
    assert!(has(&h(1, "/moved/from-h0.html")) && has(&h(0, "/missing/1.html")));
    assert!(has(&h(0, "/big.html")) && has(&h(0, "/notes.txt")) && has(&h(0, "/fail/500.html")));
    // Depth 1, 2 and 3: the trap's first three months, and no more.
    assert!(has(&h(0, "/cal/2026/03.html")) && !has(&h(0, "/cal/2026/04.html")));
    // Disallowed on h0 and h1, allowed by h2's garbage robots.txt, h3 off limits.
    assert!(!has(&h(0, "/private/1.html")) && has(&h(2, "/private/1.html")));
    assert!(
        expected.iter().all(|u| !u.starts_with(&h(3, ""))),
        "{expected:#?}"
    );
    assert!(!has(&h(0, "/p/not-a-link.html")));
    assert!(expected.iter().all(|u| u.starts_with("http://127.0.0.1:")));
}

#[test]
fn texting_robots_reads_the_four_robots_files_as_the_site_says() {
    let site = Site::generate(&SiteSpec::small(), &origins(4));
    for host in 0..3 {
        let Some(Resource::Page { body, .. }) = site.resources(host).get("/robots.txt") else {
            panic!("h{host} has a robots.txt page");
        };
        let robot = texting_robots::Robot::new("testbot", body).unwrap();
        let private = format!("http://127.0.0.1:{}/private/1.html", 8000 + host);
        assert_eq!(
            robot.allowed(&private),
            site.disallowed_paths(host).is_empty()
        );
        assert_eq!(
            robot.delay.map(f64::from),
            site.crawl_delay(host).map(|d| d as f32 as f64)
        );
    }
    assert_eq!(
        site.resources(3).get("/robots.txt"),
        Some(&Resource::Status(503))
    );
    assert_eq!(site.disallowed_paths(3), ["/"]);
}

#[test]
fn a_crawler_written_from_the_standards_fetches_exactly_the_expected_urls() {
    configure_for_tests();
    let (servers, site) = SiteServer::start_all(&SiteSpec::small()).unwrap();
    for (depth, at_least) in [(2, 40), (5, 60)] {
        let crawled = reference_crawl(&site.seed_url(), depth);
        assert!(
            crawled.len() >= at_least,
            "depth {depth}: {}",
            crawled.len()
        );
        assert_eq!(crawled, site.expected_urls(depth), "depth {depth}");
    }
    // The scripted page answers 503 twice: once to each crawl.
    let failed: Vec<u16> = servers[0]
        .requests()
        .iter()
        .filter(|r| r.path == "/fail/1.html")
        .map(|r| r.status)
        .collect();
    assert_eq!(failed, [503, 503]);
}

#[test]
fn pages_are_gzipped_on_request_and_failures_and_delays_are_scripted() {
    configure_for_tests();
    let (servers, site) = SiteServer::start_all(&SiteSpec::small()).unwrap();
    let url = |path: &str| Url::parse(&format!("http://{}{path}", servers[1].addr)).unwrap();
    let zipped = get(&url("/p/2.html"), &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(
        http::header(&zipped.headers, "content-encoding"),
        Some("gzip")
    );
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    let Some(Resource::Page { body, .. }) = site.resources(1).get("/p/2.html") else {
        panic!("h1 has page 2");
    };
    assert_eq!(&plain, body);

    servers[1].fail("/p/2.html", 429, 1);
    let limited = get(&url("/p/2.html"), &[]).unwrap();
    assert_eq!(
        (
            limited.status,
            http::header(&limited.headers, "retry-after")
        ),
        (429, Some("1"))
    );
    assert_eq!(get(&url("/p/2.html"), &[]).unwrap().status, 200);

    servers[1].set_delay("/p/", Duration::from_millis(50));
    let started = Instant::now();
    assert_eq!(get(&url("/p/3.html"), &[]).unwrap().status, 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(get(&url("/nothing.html"), &[]).unwrap().status, 404);
    let log: Vec<(String, u16)> = servers[1]
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    let expect = [
        ("/p/2.html", 200),
        ("/p/2.html", 429),
        ("/p/2.html", 200),
        ("/p/3.html", 200),
        ("/nothing.html", 404),
    ];
    assert_eq!(log, expect.map(|(p, s)| (p.to_owned(), s)));
}

/// Stack for the TLS client coroutine below, in words: `tls`'s tests
/// measured a handshake at 7279 words (debug); this is twice that and more.
const TLS_CLIENT_STACK: usize = 0x4000;

#[test]
fn nginx_serves_the_site_answers_redirects_and_the_trap_and_logs_every_request() {
    configure_for_tests();
    let (nginx, site) = Nginx::start(&SiteSpec::small(), NginxOptions::default()).unwrap();
    let url =
        |host: usize, path: &str| Url::parse(&format!("{}{path}", nginx.origins[host])).unwrap();
    for host in 0..4 {
        let home = get(&url(host, "/"), &[]).unwrap();
        let Some(Resource::Page { body, .. }) = site.resources(host).get("/") else {
            panic!("h{host} has a home page");
        };
        assert_eq!((home.status, &home.body), (200, body), "h{host}");
        assert_eq!(
            http::header(&home.headers, "content-type"),
            Some("text/html")
        );
    }
    let moved = get(&url(0, "/go/away.html"), &[]).unwrap();
    let location = http::header(&moved.headers, "location").map(str::to_owned);
    assert_eq!(
        (moved.status, location),
        (302, Some(url(1, "/moved/from-h0.html").to_string()))
    );
    assert_eq!(get(&url(3, "/robots.txt"), &[]).unwrap().status, 503);
    assert_eq!(get(&url(0, "/missing/1.html"), &[]).unwrap().status, 404);
    let month = get(&url(0, "/cal/2400/12.html"), &[]).unwrap();
    assert!(String::from_utf8_lossy(&month.body).contains("href=\"/cal/2401/01.html\""));
    let zipped = get(&url(0, "/"), &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(
        http::header(&zipped.headers, "content-encoding"),
        Some("gzip")
    );
    assert_eq!(get(&url(0, "/fail/1.html"), &[]).unwrap().status, 503);

    let log = nginx.access_log().unwrap();
    let seen: Vec<(usize, &str, u16)> = log
        .iter()
        .map(|l| (l.host, l.path.as_str(), l.status))
        .collect();
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert_eq!(
        seen[..4],
        [(0, "/", 200), (1, "/", 200), (2, "/", 200), (3, "/", 200)]
    );
    assert_eq!(
        seen[6..],
        [
            (0, "/missing/1.html", 404),
            (0, "/cal/2400/12.html", 200),
            (0, "/", 200),
            (0, "/fail/1.html", 503)
        ][..]
    );
    // The month and the failure went through the backend, which logged them too.
    let backend: Vec<String> = nginx
        .backend(0)
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(backend, ["/cal/2400/12.html", "/fail/1.html"]);
    assert!(log.iter().all(|l| l.started() <= l.msec && l.msec > 1.7e9));
    let dir = nginx.dir().to_owned();
    drop(nginx);
    assert!(!dir.exists(), "the scratch directory is removed");
}

#[test]
fn nginx_serves_https_with_a_test_ca_and_adds_a_latency_to_every_page() {
    configure_for_tests();
    let ca = crate::tls::TestCa::new("test site CA");
    let options = NginxOptions {
        tls: Some(ca.issue(&["127.0.0.1"])),
        per_page_latency: Some(Duration::from_millis(40)),
    };
    let spec = SiteSpec::bench(2, 5);
    let (nginx, site) = Nginx::start(&spec, options).unwrap();
    assert!(site.seed_url().starts_with("https://127.0.0.1:"));
    let addr: std::net::SocketAddr = nginx.origins[1]
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let config = crate::tls::client_config(ca.roots());
    let builder = may::coroutine::Builder::new().stack_size(TLS_CLIENT_STACK);
    let started = Instant::now();
    let response = may::go!(builder, move || -> std::io::Result<http::Response> {
        let tcp = may::net::TcpStream::connect(addr)?;
        let mut tls = crate::tls::connect(&config, "127.0.0.1", tcp)?;
        http::write_request(
            &mut tls,
            "GET",
            "/p/2.html",
            "h1",
            &[("Connection", "close")],
            b"",
        )?;
        http::read_response(&mut BufReader::new(tls), &Limits::default())
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert_eq!(response.status, 200);
    let Some(Resource::Page { body, .. }) = site.resources(1).get("/p/2.html") else {
        panic!("h1 has page 2");
    };
    assert_eq!(&response.body, body);
    let log = nginx.access_log().unwrap();
    assert_eq!(
        (log.len(), log[0].host, log[0].path.as_str()),
        (1, 1, "/p/2.html")
    );
    assert!(log[0].request_time >= 0.039, "{:?}", log[0]);
}

/// Run `wget` with `args`, at most a minute; its exit status.
fn wget(args: &[&str]) -> std::process::ExitStatus {
    let mut child = std::process::Command::new("wget")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("wget is installed (Debian: apt-get install wget)");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wget ran for a minute");
        }
        std::thread::sleep(Duration::from_millis(20)); // the test's thread
    }
}

#[test]
fn wget_fetches_the_expected_urls_except_where_it_departs_from_the_standards() {
    configure_for_tests();
    let (nginx, site) = Nginx::start(&SiteSpec::small(), NginxOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let seed = site.seed_url();
    let args = [
        "--recursive",
        "--level",
        "3",
        "--tries",
        "1",
        "--timeout",
        "5",
        "--directory-prefix",
    ];
    let status = wget(&[&args[..], &[out.path().to_str().unwrap(), &seed]].concat());
    assert!(status.code().is_some(), "wget was killed: {status}"); // 8: some pages were errors
    let log = nginx.access_log().unwrap();
    let fetched: BTreeSet<String> = log
        .iter()
        .filter(|l| l.path != "/robots.txt")
        .map(|l| format!("{}{}", nginx.origins[l.host], l.path))
        .collect();
    let expected = site.expected_urls(3);
    let missing: Vec<&String> = expected.difference(&fetched).collect();
    assert!(missing.is_empty(), "wget did not fetch {missing:#?}");
    // wget crawls h3, whose robots.txt answers 503 (RFC 9309 2.3.1.4: then
    // nothing is allowed), and reads `<a href>` (no value) as a link to "href".
    let h3 = format!("{}/", nginx.origins[3]);
    let extra: Vec<&String> = fetched.difference(&expected).collect();
    assert!(extra.contains(&&h3), "{extra:#?}");
    let href = format!("{}/href", nginx.origins[0]);
    assert!(
        extra.iter().all(|u| u.starts_with(&h3) || **u == href),
        "{extra:#?}"
    );
}
