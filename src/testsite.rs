//! A generated multi-host web site for testing crawlers: robots.txt in
//! every RFC 9309 case, redirects (one a loop, one to `ftp://`), `404`s, a
//! calendar link trap, non-HTML files, a page past the body cap, broken
//! HTML, gzip, and slow and failing pages (the web-crawler chapter).
//!
//! One generator ([`Site::generate`]) and two ways to serve it:
//! [`SiteServer`], coroutines in the test's own process (the chapter's
//! steps and unit tests), and the nginx harness (end-to-end tests and
//! benchmarks: a real web server, whose own access log is the evidence
//! of how polite a crawler was).

mod generate;
mod log;
mod nginx;
mod server;
mod spec;
#[cfg(test)]
mod tests;

pub use generate::{Resource, Site, CRAWL_DELAY_SECONDS, LARGE_PAGE_BYTES, TRAP_START};
pub use log::{max_concurrency_per_host, min_gap_per_host, AccessLine};
pub use nginx::{Nginx, NginxOptions};
pub use server::{Logged, SiteServer, SLOW_PAGE_DELAY};
pub use spec::{Features, SiteSpec};
