//! What to generate: how many hosts and pages, and which awkward corners
//! of the web the site has.

/// The shape of a generated site. The same spec and seed give the same
/// site, byte for byte, on every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// Hosts `h0..h{hosts-1}`, each on its own port of 127.0.0.1.
    pub hosts: usize,
    /// Plain pages `/p/0.html ..` on every host.
    pub pages_per_host: usize,
    /// Out-links on a plain page (one of them to the next page, so every
    /// page of a host is reachable from its `/`).
    pub links_per_page: usize,
    /// Decides which pages link where.
    pub seed: u64,
    pub features: Features,
}

/// The awkward corners a crawler meets on the web, each switchable. Where a
/// feature lives is described on [`Site`](super::Site).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `/robots.txt` on every host: `Disallow: /private/` (and linked pages
    /// under it), a `Crawl-delay` on one host, garbage on one, `503` on one.
    pub robots: bool,
    /// `301` to a page of the same host, `302` to another host, a redirect
    /// to `ftp://`.
    pub redirects: bool,
    /// `/loop/a` -> `/loop/b` -> `/loop/a`.
    pub redirect_loop: bool,
    /// Links to pages that answer `404`.
    pub not_found: bool,
    /// A calendar whose every month links to the next, without end.
    pub trap: bool,
    /// A PNG, a PDF and a `text/plain` file (whose text looks like a link).
    pub non_html: bool,
    /// One page of 1.5 MiB, past a 1 MiB body cap.
    pub large_page: bool,
    /// Unclosed tags, bad attributes, 10,000 unclosed `<div>`s, links that
    /// are not URLs (`http://[::1`, `javascript:`, `mailto:`).
    pub broken_html: bool,
    /// Compress HTML when the client accepts gzip.
    pub gzip: bool,
    /// Pages served by the scriptable backend: `/slow/1.html` (300 ms late),
    /// `/fail/1.html` (`503` with `Retry-After: 1` twice, then `200`) and
    /// `/fail/500.html` (always `500`).
    pub scripted: bool,
}

impl Features {
    /// Every feature on.
    pub fn all() -> Features {
        Features {
            robots: true,
            redirects: true,
            redirect_loop: true,
            not_found: true,
            trap: true,
            non_html: true,
            large_page: true,
            broken_html: true,
            gzip: true,
            scripted: true,
        }
    }

    /// Plain pages only.
    pub fn none() -> Features {
        Features {
            robots: false,
            redirects: false,
            redirect_loop: false,
            not_found: false,
            trap: false,
            non_html: false,
            large_page: false,
            broken_html: false,
            gzip: false,
            scripted: false,
        }
    }
}

impl SiteSpec {
    /// Four hosts of 12 pages with every feature: one host per robots.txt
    /// case (rules, `Crawl-delay`, garbage, `503`), small enough for a
    /// test to crawl in a second or two.
    pub fn small() -> SiteSpec {
        SiteSpec {
            hosts: 4,
            pages_per_host: 12,
            links_per_page: 4,
            seed: 14,
            features: Features::all(),
        }
    }

    /// Plain pages linking across hosts, for benchmarks.
    pub fn bench(hosts: usize, pages_per_host: usize) -> SiteSpec {
        SiteSpec {
            hosts,
            pages_per_host,
            links_per_page: 8,
            seed: 14,
            features: Features::none(),
        }
    }
}
