//! The generator: every host's files, the links each page holds, and the
//! set of URLs a correct crawler fetches.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::spec::SiteSpec;

/// What a host answers for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `200` with this body.
    Page {
        body: Vec<u8>,
        content_type: &'static str,
    },
    /// A redirect (`301`, `302`) to an absolute `location`.
    Redirect { status: u16, location: String },
    /// A bodiless answer with this status (the `503` robots.txt, the `500` page).
    Status(u16),
}

/// Which robots.txt a host has (with [`Features::robots`](super::Features)):
/// host `i` gets case `i % 4`, so four hosts cover every RFC 9309 case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Robots {
    /// `Disallow: /private/`.
    Rules,
    /// The same rules and `Crawl-delay: 0.2`.
    CrawlDelay,
    /// Bytes that hold no rule at all: everything is allowed.
    Garbage,
    /// `503`: RFC 9309 section 2.3.1.4, the whole host is disallowed.
    Unavailable,
}

/// The `Crawl-delay` one host's robots.txt asks for, in seconds.
pub const CRAWL_DELAY_SECONDS: f64 = 0.2;

/// Size of the large page: past the crawler's default 1 MiB body cap.
pub const LARGE_PAGE_BYTES: usize = 1536 * 1024;

/// The trap's first month; every month links to the next one, up to year 9999.
pub const TRAP_START: &str = "/cal/2026/01.html";

/// One host's files, the links of each HTML page, and its gzip copies.
#[derive(Debug, Clone)]
struct Host {
    resources: BTreeMap<String, Resource>,
    /// Page path -> the absolute URLs a correct extractor finds in it.
    links: BTreeMap<String, Vec<String>>,
    gzipped: BTreeMap<String, Vec<u8>>,
    robots: Option<Robots>,
}

/// A generated multi-host site: hosts `h0..`, each with its own origin
/// (`http://127.0.0.1:PORT`).
///
/// Every host has `/` and plain pages `/p/<n>.html`: `/` links to the first
/// pages (and, on `h0`, to every other host's `/`); page `n` links to page
/// `n + 1` and to pages chosen by the seed, a quarter of them on other
/// hosts, written as absolute paths, relative paths (`../p/3.html`,
/// `4.html`), full URLs and with a fragment. With features on:
///
/// - robots: every host links `/private/1.html` (which links
///   `/private/2.html`); host `i`'s robots.txt is case `i % 4`: rules,
///   rules with `Crawl-delay: 0.2`, garbage (so `/private/` is allowed
///   there), `503` (the host is off limits).
/// - on `h0` only, linked from its `/`: `/old/1.html` (`301` to
///   `/moved/1.html`), `/go/away.html` (`302` to `h1`'s `/moved/from-h0.html`),
///   `/ftp.html` (`301` to `ftp://`), `/loop/a` and `/loop/b` (`302` to each
///   other), `/missing/1.html` (`404`), the trap [`TRAP_START`], `/img/logo.png`,
///   `/doc/manual.pdf`, `/notes.txt`, `/big.html` ([`LARGE_PAGE_BYTES`]),
///   `/broken.html` (whose one real link is `/fixed.html`), `/slow/1.html`,
///   `/fail/1.html`, `/fail/500.html`.
///
/// The trap is generated on request, not stored: any month from 2026 to
/// 9999 exists, so to a crawler it is unbounded (about 95,000 pages deep);
/// only a depth or page limit ends it.
#[derive(Debug, Clone)]
pub struct Site {
    spec: SiteSpec,
    origins: Vec<String>,
    hosts: Vec<Host>,
}

/// SplitMix64: a small generator whose sequence is fixed by its seed, here
/// and in every later Rust or crate release.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An HTML page with a title and links; each link is `(href as written,
/// absolute URL a correct extractor makes of it, if any)`.
struct PageBuilder {
    title: String,
    html: String,
    links: Vec<String>,
}

impl PageBuilder {
    fn new(title: &str) -> PageBuilder {
        PageBuilder {
            title: title.to_owned(),
            html: String::new(),
            links: Vec::new(),
        }
    }

    fn link(&mut self, href: &str, absolute: &str) -> &mut Self {
        self.html
            .push_str(&format!("<li><a href=\"{href}\">{absolute}</a></li>\n"));
        self.links.push(absolute.to_owned());
        self
    }

    fn raw(&mut self, html: &str) -> &mut Self {
        self.html.push_str(html);
        self
    }

    fn finish(&self) -> (Resource, Vec<String>) {
        let body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n\
             <body><h1>{t}</h1>\n<ul>\n{}</ul>\n</body></html>\n",
            self.html,
            t = self.title
        );
        let page = Resource::Page {
            body: body.into_bytes(),
            content_type: "text/html",
        };
        (page, self.links.clone())
    }
}

impl Site {
    /// Generate the site for `spec`, host `i` being reachable at
    /// `origins[i]` (`http://127.0.0.1:PORT` or `https://...`, no trailing
    /// slash). Panics if `origins` does not have one entry per host: that
    /// is a bug in the caller, not input.
    pub fn generate(spec: &SiteSpec, origins: &[String]) -> Site {
        assert_eq!(origins.len(), spec.hosts, "one origin per host");
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        let hosts = (0..spec.hosts)
            .map(|i| generate_host(spec, &origins, i))
            .collect();
        Site {
            spec: spec.clone(),
            origins,
            hosts,
        }
    }

    /// The spec this site was made from.
    pub fn spec(&self) -> &SiteSpec {
        &self.spec
    }

    /// Host `i`'s origin, as given to [`Site::generate`].
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// The seed URL: `h0`'s `/`.
    pub fn seed_url(&self) -> String {
        format!("{}/", self.origins[0])
    }

    /// Host `host`'s stored files by path (`/`, `/robots.txt`,
    /// `/p/3.html`, ...). The trap's months are not among them: see
    /// [`Site::get`].
    pub fn resources(&self, host: usize) -> &BTreeMap<String, Resource> {
        &self.hosts[host].resources
    }

    /// What host `host` answers for `path` (no query): a stored resource or
    /// a month of the trap; `None` is a `404`.
    pub fn get(&self, host: usize, path: &str) -> Option<Cow<'_, Resource>> {
        if let Some(resource) = self.hosts[host].resources.get(path) {
            return Some(Cow::Borrowed(resource));
        }
        self.trap_month(host, path)
            .map(|(year, month)| Cow::Owned(trap_page(year, month).0))
    }

    /// The gzip-compressed body of `path`, if the site compresses it.
    pub fn gzipped(&self, host: usize, path: &str) -> Option<&[u8]> {
        self.hosts[host].gzipped.get(path).map(Vec::as_slice)
    }

    /// The absolute URLs in the HTML page at `path` that a correct link
    /// extractor finds (resolved against the page, fragments dropped), in
    /// document order; empty for anything that is not an HTML page.
    pub fn links(&self, host: usize, path: &str) -> Vec<String> {
        if let Some(links) = self.hosts[host].links.get(path) {
            return links.clone();
        }
        match self.trap_month(host, path) {
            Some((year, month)) => trap_page(year, month)
                .1
                .iter()
                .map(|p| format!("{}{p}", self.origins[host]))
                .collect(),
            None => Vec::new(),
        }
    }

    /// `(year, month)` if `path` is a month of the trap on this host.
    fn trap_month(&self, host: usize, path: &str) -> Option<(u32, u32)> {
        if !(self.spec.features.trap && host == 0) {
            return None;
        }
        let rest = path.strip_prefix("/cal/")?.strip_suffix(".html")?;
        let (year, month) = rest.split_once('/')?;
        let ok = year.len() == 4 && month.len() == 2;
        let (year, month) = (year.parse().ok()?, month.parse().ok()?);
        (ok && (2026..=9999).contains(&year) && (1..=12).contains(&month)).then_some((year, month))
    }

    /// Path prefixes robots.txt forbids on `host` (`["/"]`: all of it,
    /// for the host whose robots.txt answers `503`).
    pub fn disallowed_paths(&self, host: usize) -> Vec<String> {
        match self.hosts[host].robots {
            Some(Robots::Rules | Robots::CrawlDelay) => vec!["/private/".to_owned()],
            Some(Robots::Unavailable) => vec!["/".to_owned()],
            Some(Robots::Garbage) | None => Vec::new(),
        }
    }

    /// The `Crawl-delay` host `host`'s robots.txt asks for, in seconds.
    pub fn crawl_delay(&self, host: usize) -> Option<f64> {
        (self.hosts[host].robots == Some(Robots::CrawlDelay)).then_some(CRAWL_DELAY_SECONDS)
    }

    /// Which host an absolute URL belongs to, and its path, if it is on
    /// this site (query and fragment cut off).
    pub fn locate<'u>(&self, url: &'u str) -> Option<(usize, &'u str)> {
        self.origins.iter().enumerate().find_map(|(i, origin)| {
            let path = url.strip_prefix(origin.as_str())?;
            let path = path.split(['?', '#']).next().unwrap_or("");
            path.starts_with('/').then_some((i, path))
        })
    }

    // ANCHOR: expected_urls
    /// The page URLs a correct polite crawler requests from the seed `h0`
    /// `/` with robots.txt honoured, following links up to `max_depth`
    /// (the seed is depth 0; a page's links and a redirect's `Location`
    /// are one deeper). Each URL counts at the smallest depth it is
    /// reachable at (breadth first), so a crawler whose frontier is not
    /// breadth first should be run with a depth beyond the site's reach.
    /// Not included: each host's `/robots.txt` (fetched once per host
    /// reached), URLs off the site (`ftp://`) and disallowed paths.
    pub fn expected_urls(&self, max_depth: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([(self.seed_url(), 0usize)]);
        seen.insert(self.seed_url());
        while let Some((url, depth)) = queue.pop_front() {
            if depth == max_depth {
                continue;
            }
            let (host, path) = self.locate(&url).expect("only site URLs are queued");
            let next: Vec<String> = match self.get(host, path).as_deref() {
                Some(Resource::Redirect { location, .. }) => vec![location.clone()],
                _ => self.links(host, path),
            };
            for link in next {
                let Some((to_host, to_path)) = self.locate(&link) else {
                    continue; // off the site: not fetched
                };
                let allowed = !self
                    .disallowed_paths(to_host)
                    .iter()
                    .any(|p| to_path.starts_with(p.as_str()));
                if allowed && seen.insert(link.clone()) {
                    queue.push_back((link, depth + 1));
                }
            }
        }
        seen
    }

    // ANCHOR_END: expected_urls

    /// Write every stored page as a file for nginx: `dir/h<i>/index.html`
    /// for `/`, `dir/h<i>/p/3.html` for `/p/3.html`. Redirects, bare
    /// statuses and the trap are not files: the nginx harness answers them
    /// from its config and its backend.
    pub fn write_to(&self, dir: &Path) -> io::Result<()> {
        for (i, host) in self.hosts.iter().enumerate() {
            for (path, resource) in &host.resources {
                let Resource::Page { body, .. } = resource else {
                    continue;
                };
                let relative = match path.as_str() {
                    "/" => "index.html",
                    other => other.trim_start_matches('/'),
                };
                let file = dir.join(format!("h{i}")).join(relative);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(file, body)?;
            }
        }
        Ok(())
    }
}

/// A month of the trap: its page and the paths it links to.
fn trap_page(year: u32, month: u32) -> (Resource, Vec<String>) {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let next = format!("/cal/{next_year}/{next_month:02}.html");
    let mut page = PageBuilder::new(&format!("Calendar {year}-{month:02}"));
    page.link(&next, &next);
    let (resource, _) = page.finish();
    (resource, vec![next])
}

fn robots_case(spec: &SiteSpec, host: usize) -> Option<Robots> {
    spec.features.robots.then_some(match host % 4 {
        0 => Robots::Rules,
        1 => Robots::CrawlDelay,
        2 => Robots::Garbage,
        _ => Robots::Unavailable,
    })
}

fn robots_txt(case: Robots) -> Resource {
    let text: &[u8] = match case {
        Robots::Rules => b"User-agent: *\nDisallow: /private/\n",
        Robots::CrawlDelay => b"User-agent: *\nCrawl-delay: 0.2\nDisallow: /private/\n",
        // No line here is a rule: a parser that guesses would be wrong.
        Robots::Garbage => b"<html><body>{{ this is not a robots.txt }}\n\x00\xff\xfe\n;;;\n",
        Robots::Unavailable => return Resource::Status(503),
    };
    Resource::Page {
        body: text.to_vec(),
        content_type: "text/plain",
    }
}

fn generate_host(spec: &SiteSpec, origins: &[String], i: usize) -> Host {
    let origin = &origins[i];
    let n = spec.pages_per_host.max(1);
    let mut mix = Mix(spec.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut host = Host {
        resources: BTreeMap::new(),
        links: BTreeMap::new(),
        gzipped: BTreeMap::new(),
        robots: robots_case(spec, i),
    };
    let add_page = |host: &mut Host, path: &str, page: &PageBuilder| {
        let (resource, links) = page.finish();
        host.resources.insert(path.to_owned(), resource);
        host.links.insert(path.to_owned(), links);
    };

    // `/`
    let mut home = PageBuilder::new(&format!("h{i}"));
    for k in 0..spec.links_per_page.min(n) {
        home.link(&format!("/p/{k}.html"), &format!("{origin}/p/{k}.html"));
    }
    if i == 0 {
        for other in &origins[1..] {
            home.link(&format!("{other}/"), &format!("{other}/"));
        }
    }
    if let Some(case) = host.robots {
        host.resources
            .insert("/robots.txt".into(), robots_txt(case));
        home.link("private/1.html", &format!("{origin}/private/1.html"));
        let mut first = PageBuilder::new(&format!("h{i} private 1"));
        first.link("2.html", &format!("{origin}/private/2.html"));
        add_page(&mut host, "/private/1.html", &first);
        let mut second = PageBuilder::new(&format!("h{i} private 2"));
        second.link("/", &format!("{origin}/"));
        add_page(&mut host, "/private/2.html", &second);
    }
    if i == 0 {
        add_features(spec, origins, &mut host, &mut home);
    }
    // Where `h0`'s `/go/away.html` points: `h1`, or `h0` itself if alone.
    if spec.features.redirects && i == usize::from(spec.hosts > 1) {
        let mut moved = PageBuilder::new("moved from h0");
        moved.link("/", &format!("{origin}/"));
        add_page(&mut host, "/moved/from-h0.html", &moved);
    }
    add_page(&mut host, "/", &home);

    // `/p/<k>.html`
    for k in 0..n {
        let mut page = PageBuilder::new(&format!("h{i} page {k}"));
        let next = (k + 1) % n;
        page.link(&format!("{next}.html"), &format!("{origin}/p/{next}.html"));
        for j in 1..spec.links_per_page {
            let target = mix.below(n);
            if spec.hosts > 1 && mix.below(4) == 0 {
                let other = (i + 1 + mix.below(spec.hosts - 1)) % spec.hosts;
                let url = format!("{}/p/{target}.html", origins[other]);
                page.link(&url, &url);
            } else {
                let absolute = format!("{origin}/p/{target}.html");
                match j % 3 {
                    0 => page.link(&format!("/p/{target}.html"), &absolute),
                    1 => page.link(&format!("../p/{target}.html"), &absolute),
                    _ => page.link(&format!("/p/{target}.html#part-{j}"), &absolute),
                };
            }
        }
        add_page(&mut host, &format!("/p/{k}.html"), &page);
    }

    if spec.features.gzip {
        for (path, resource) in &host.resources {
            if let Resource::Page {
                body,
                content_type: "text/html",
            } = resource
            {
                host.gzipped.insert(path.clone(), gzip(body));
            }
        }
    }
    host
}

/// `h0`'s special pages, each linked from `home`.
fn add_features(spec: &SiteSpec, origins: &[String], host: &mut Host, home: &mut PageBuilder) {
    let origin = &origins[0];
    let f = spec.features;
    let page = |host: &mut Host, path: &str, title: &str, links: &[&str]| {
        let mut builder = PageBuilder::new(title);
        for link in links {
            builder.link(link, &format!("{origin}{link}"));
        }
        let (resource, links) = builder.finish();
        host.resources.insert(path.to_owned(), resource);
        host.links.insert(path.to_owned(), links);
    };
    let redirect = |host: &mut Host, home: &mut PageBuilder, path: &str, status, to: String| {
        home.link(path, &format!("{origin}{path}"));
        let location = to;
        host.resources
            .insert(path.to_owned(), Resource::Redirect { status, location });
    };
    if f.redirects {
        redirect(
            host,
            home,
            "/old/1.html",
            301,
            format!("{origin}/moved/1.html"),
        );
        page(host, "/moved/1.html", "moved here", &["/"]);
        let away = origins.get(1).unwrap_or(origin);
        redirect(
            host,
            home,
            "/go/away.html",
            302,
            format!("{away}/moved/from-h0.html"),
        );
        redirect(
            host,
            home,
            "/ftp.html",
            301,
            "ftp://127.0.0.1/pub/file.txt".into(),
        );
    }
    if f.redirect_loop {
        redirect(host, home, "/loop/a", 302, format!("{origin}/loop/b"));
        host.resources.insert(
            "/loop/b".into(),
            Resource::Redirect {
                status: 302,
                location: format!("{origin}/loop/a"),
            },
        );
    }
    if f.not_found {
        home.link("/missing/1.html", &format!("{origin}/missing/1.html"));
    }
    if f.trap {
        home.link(TRAP_START, &format!("{origin}{TRAP_START}"));
    }
    if f.non_html {
        let png =
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
        let pdf =
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
        // Looks like a link, but a text/plain body is not HTML.
        let text = b"See <a href=\"/p/not-a-link.html\">this</a>: plain text, not HTML.\n";
        for (path, body, content_type) in [
            ("/img/logo.png", &png[..], "image/png"),
            ("/doc/manual.pdf", &pdf[..], "application/pdf"),
            ("/notes.txt", &text[..], "text/plain"),
        ] {
            home.link(path, &format!("{origin}{path}"));
            let body = body.to_vec();
            host.resources
                .insert(path.into(), Resource::Page { body, content_type });
        }
    }
    if f.large_page {
        home.link("/big.html", &format!("{origin}/big.html"));
        let mut body = b"<!DOCTYPE html>\n<html><head><title>big</title></head><body>\n".to_vec();
        let line = b"<p>All work and no play makes a crawler a dull program.</p>\n";
        while body.len() + line.len() < LARGE_PAGE_BYTES - 16 {
            body.extend_from_slice(line);
        }
        body.extend_from_slice(b"</body></html>\n");
        body.resize(LARGE_PAGE_BYTES, b'\n');
        let content_type = "text/html";
        host.resources
            .insert("/big.html".into(), Resource::Page { body, content_type });
    }
    if f.broken_html {
        home.link("/broken.html", &format!("{origin}/broken.html"));
        let mut broken = PageBuilder::new("broken <b>title");
        broken
            .raw("<p>unclosed <b><i><table><tr><td>cell\n")
            .raw("<a href=\"http://[::1\">not a URL</a>\n")
            .raw("<a href=\"javascript:alert(1)\">script</a>\n")
            .raw("<a href=\"mailto:crawler@example.com\">mail</a>\n")
            .raw("<a href>no value</a> <a hre=\"/p/typo.html\">typo</a>\n")
            .raw("<a href=\"\" \"odd\"=attr =>empty</a>\n")
            .raw(&"<div>".repeat(10_000))
            .link("/fixed.html", &format!("{origin}/fixed.html"))
            .raw("<p attr=\"unterminated>\n");
        let (resource, _) = broken.finish();
        host.resources.insert("/broken.html".into(), resource);
        // "" resolves to the page itself, already seen: not a new URL.
        host.links.insert(
            "/broken.html".into(),
            vec![
                format!("{origin}/broken.html"),
                format!("{origin}/fixed.html"),
            ],
        );
        page(host, "/fixed.html", "after the broken page", &["/"]);
    }
    if f.scripted {
        for path in ["/slow/1.html", "/fail/1.html"] {
            home.link(path, &format!("{origin}{path}"));
            page(host, path, path, &["/"]);
        }
        home.link("/fail/500.html", &format!("{origin}/fail/500.html"));
        host.resources
            .insert("/fail/500.html".into(), Resource::Status(500));
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .expect("gzip into memory cannot fail")
}
