//! ureq 3 run over may's sockets through its transport hook: a `Connector`
//! whose `Transport` is a may `TcpStream` (reads and writes park the
//! coroutine, not the worker), and a `Resolver` that runs getaddrinfo on
//! `may_patterns::blocking`'s threads. The question it answers: could the
//! crawler use ureq instead of the book's own client? The bench
//! `web_crawler_client` measures both on the same site.
//!
//! With no arguments it fetches every page of a generated test site served
//! in this process, with 4 coroutines sharing one ureq `Agent`; with URLs as
//! arguments it fetches those. Plain http only: ureq's TLS connectors need
//! its `rustls` feature, which this book does not enable (the book's client
//! does TLS itself, src/tls.rs).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::net::TcpStream;
use may_patterns::alarm;
use may_patterns::blocking;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::testsite::{SiteServer, SiteSpec};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};
use ureq::{Agent, Timeout};

// ANCHOR: connector
/// Opens may `TcpStream`s for ureq, and counts them (ureq does not say how
/// many connections its pool opened).
#[derive(Debug, Default)]
pub struct MayConnector {
    opened: Arc<AtomicUsize>,
}

impl Connector<()> for MayConnector {
    type Out = MayTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<MayTransport>, ureq::Error> {
        if details.needs_tls() {
            return Err(ureq::Error::BadUri(
                "https: this transport is plain TCP".into(),
            ));
        }
        let mut last = None;
        for &addr in details.addrs.iter() {
            // std's connect on a blocking thread, then the socket is handed
            // to may, as the book's client does: may 0.3.51's own connect
            // can read its state after another worker dropped it (the
            // Pitfalls reference, "Known may 0.3.51 bugs").
            let wait = details.timeout.not_zero().map(|t| *t);
            let attempt = blocking::run(move || match wait {
                Some(t) => std::net::TcpStream::connect_timeout(&addr, t),
                None => std::net::TcpStream::connect(addr),
            })
            .map_err(io::Error::from)
            .and_then(|r| r)
            // Safety: `into_raw_fd` hands the descriptor over; nothing else
            // owns it.
            .map(|socket| unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) });
            match attempt {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    let config = details.config;
                    let buffers =
                        LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
                    return Ok(Some(MayTransport { stream, buffers }));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    last = Some(ureq::Error::Timeout(Timeout::Connect))
                }
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or(ureq::Error::HostNotFound))
    }
}
// ANCHOR_END: connector

// ANCHOR: transport
/// One connection. ureq hands every read and write its own deadline (the
/// time left of the call's budget, `NextTimeout`); ureq's own TCP transport
/// turns it into a socket timeout before each read (`transport/tcp.rs`,
/// `maybe_update_timeout`). On may a socket timeout arms a may timer on
/// every parked read, the short-timer race of the Pitfalls chapter, so this
/// transport puts each read's deadline on `may_patterns::alarm` instead:
/// the alarm thread shuts the socket's reading side if the read is late.
#[derive(Debug)]
pub struct MayTransport {
    stream: TcpStream,
    buffers: LazyBuffers,
}

/// Reads that waited under a deadline, over the whole process.
static TIMED_READS: AtomicUsize = AtomicUsize::new(0);

impl Transport for MayTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    /// A request head fits the socket's send buffer, so the write does not
    /// wait and no write deadline is armed (a large upload would need one).
    fn transmit_output(&mut self, amount: usize, _timeout: NextTimeout) -> Result<(), ureq::Error> {
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let ring = match timeout.not_zero() {
            Some(left) => {
                TIMED_READS.fetch_add(1, Ordering::Relaxed);
                Some(alarm::shared().shutdown_read_at(&self.stream, Instant::now() + *left)?)
            }
            None => None,
        };
        let input = self.buffers.input_append_buf();
        let read = self.stream.read(input);
        // A shut reading side reads as end-of-file: the ring tells it apart
        // from the server closing.
        if ring.is_some_and(|r| r.fired()) {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let amount = read?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    /// ureq probes a pooled connection before reusing it, while it holds
    /// its pool's std Mutex (`pool.rs`, `Pool::get`): the probe must not
    /// park. may's sockets are non-blocking underneath, so a `peek` on the
    /// std socket returns at once: `WouldBlock` means open and quiet.
    fn is_open(&mut self) -> bool {
        match self.stream.inner().peek(&mut [0]) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false, // closed (0) or unasked-for bytes: do not reuse
        }
    }
}
// ANCHOR_END: transport

// ANCHOR: resolver
/// Names to addresses: a literal IP needs no lookup; anything else is a
/// getaddrinfo call, which blocks, so it runs on the blocking pool's threads
/// while the coroutine parks. (ureq's default resolver calls it on the
/// calling thread, or on a new thread per lookup when a timeout is set.)
#[derive(Debug, Default)]
pub struct MayResolver;

impl Resolver for MayResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = match (uri.port_u16(), uri.scheme_str()) {
            (Some(port), _) => port,
            (None, Some("https")) => 443,
            (None, _) => 80,
        };
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => blocking::run(move || (host.as_str(), port).to_socket_addrs())
                .map_err(|e| ureq::Error::Io(io::Error::other(format!("{e:?}"))))??
                .collect(),
        };
        let mut resolved = self.empty();
        // ureq keeps at most 16 addresses, as its default resolver does.
        for addr in addrs.into_iter().take(16) {
            resolved.push(addr);
        }
        match resolved.is_empty() {
            true => Err(ureq::Error::HostNotFound),
            false => Ok(resolved),
        }
    }
}
// ANCHOR_END: resolver

// ANCHOR: agent
/// The largest body read, as the book's client's default `max_body`.
const MAX_BODY: u64 = 10 * 1024 * 1024;

/// The budget of one call, as the book's client's `total_timeout`.
pub const CALL_BUDGET: Duration = Duration::from_secs(30);

/// An agent configured like the crawler's client: no redirects followed (a
/// 3xx is the caller's), statuses are answers not errors, `budget` per call
/// (`None`: no deadline at all), up to `idle_per_host` pooled connections
/// per host. ureq's buffers keep their defaults (128 KiB in, 128 KiB out,
/// per connection).
pub fn agent(idle_per_host: usize, budget: Option<Duration>) -> (Agent, Arc<AtomicUsize>) {
    let config = Agent::config_builder()
        .user_agent("may-patterns-crawler/0.1")
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(budget)
        .max_idle_connections_per_host(idle_per_host)
        .max_idle_connections(idle_per_host * 64)
        .build();
    let connector = MayConnector::default();
    let opened = connector.opened.clone();
    (Agent::with_parts(config, connector, MayResolver), opened)
}

/// GET `url`: the status and the decoded body, or why it failed.
pub fn fetch(agent: &Agent, url: &str) -> Result<(u16, Vec<u8>), String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}
// ANCHOR_END: agent

// ANCHOR: main
// ANCHOR: stack
/// A ureq fetch's stack, in bytes. Measured with may's odd-stack report,
/// `cargo test [--release] --example ureq_over_may measure -- --ignored
/// --nocapture` (`used size`, in words), over every kind of page of the
/// test site, gzip included: 14,741 words (115 KiB) in a debug build,
/// 7,151 words (56 KiB) in a release build (rustc 1.95, x86_64 Linux,
/// 2026-12-02). 256 KiB holds the debug figure twice; a test runs the same
/// fetches on half of it.
pub const FETCH_STACK_BYTES: usize = 256 * 1024;
// ANCHOR_END: stack

/// What fetching a list of URLs did.
struct Report {
    statuses: BTreeMap<u16, usize>,
    failed: Vec<String>,
    bytes: usize,
    elapsed: Duration,
}

/// Fetch `urls` with `coroutines` coroutines taking them in turn from a
/// shared index, all through one agent.
fn fetch_all(agent: &Agent, urls: &[String], coroutines: usize) -> Report {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results = may::coroutine::scope(|scope| {
        let handles: Vec<_> = (0..coroutines)
            .map(|_| {
                let builder = Builder::new().stack_size(FETCH_STACK_BYTES / size_of::<usize>());
                let (agent, next) = (agent, &next);
                // Safety: the closure uses no thread-locals and its stack is
                // sized from the measurement above.
                unsafe {
                    scope.spawn_with_builder(
                        move || {
                            let mut mine = Vec::new();
                            while let Some(url) = urls.get(next.fetch_add(1, Ordering::Relaxed)) {
                                mine.push((url.clone(), fetch(agent, url)));
                            }
                            mine
                        },
                        builder,
                    )
                }
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join())
            .collect::<Vec<_>>()
    });
    let mut report = Report {
        statuses: BTreeMap::new(),
        failed: Vec::new(),
        bytes: 0,
        elapsed: started.elapsed(),
    };
    for (url, result) in results {
        match result {
            Ok((status, body)) => {
                *report.statuses.entry(status).or_default() += 1;
                report.bytes += body.len();
            }
            Err(why) => report.failed.push(format!("{url}: {why}")),
        }
    }
    report.failed.sort();
    report
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Keep the test site's servers alive while the fetches run.
    let (_servers, urls) = if args.is_empty() {
        let (servers, site) =
            SiteServer::start_all(&SiteSpec::bench(3, 20)).expect("the test site starts");
        (
            servers,
            site.expected_urls(usize::MAX).into_iter().collect(),
        )
    } else {
        (Vec::new(), args)
    };
    let coroutines = 4;
    let (agent, opened) = agent(coroutines, Some(CALL_BUDGET));
    println!(
        "fetching {} URLs with ureq over may, {coroutines} coroutines",
        urls.len()
    );
    let report = fetch_all(&agent, &urls, coroutines);
    println!(
        "fetched {} URLs, {} bytes of bodies in {:.1?}",
        report.statuses.values().sum::<usize>(),
        report.bytes,
        report.elapsed
    );
    for (status, count) in &report.statuses {
        println!("  HTTP {status}: {count}");
    }
    for failure in &report.failed {
        println!("  failed: {failure}");
    }
    println!(
        "connections opened: ~{}, reads under an alarm deadline: ~{}",
        opened.load(Ordering::Relaxed),
        TIMED_READS.load(Ordering::Relaxed)
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may::go;
    use may_patterns::runtime::configure_for_tests;

    /// Run `f` on a coroutine with `stack_words` of stack.
    fn on_coroutine<T: Send + 'static>(
        stack_words: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        configure_for_tests();
        let builder = Builder::new().stack_size(stack_words);
        go!(builder, f).unwrap().join().unwrap()
    }

    #[test]
    fn every_page_of_the_site_arrives_intact_over_reused_connections() {
        configure_for_tests();
        let (_servers, site) = SiteServer::start_all(&SiteSpec::bench(2, 10)).unwrap();
        let urls: Vec<String> = site.expected_urls(usize::MAX).into_iter().collect();
        let (agent, opened) = agent(2, Some(CALL_BUDGET));
        let report = fetch_all(&agent, &urls, 2);
        assert_eq!(report.failed, Vec::<String>::new());
        assert_eq!(report.statuses.get(&200), Some(&urls.len()));
        let expected: usize = urls
            .iter()
            .map(|url| {
                let (host, path) = site.locate(url).unwrap();
                match site.get(host, path).as_deref() {
                    Some(may_patterns::testsite::Resource::Page { body, .. }) => body.len(),
                    other => panic!("{url}: {other:?}"),
                }
            })
            .sum();
        assert_eq!(report.bytes, expected);
        let opened = opened.load(Ordering::Relaxed);
        assert!(opened < urls.len() / 2, "keep-alive: {opened} connections");
    }

    #[test]
    fn a_silent_server_times_out_on_the_alarm() {
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let silent = go!(move || listener.accept().map(|(stream, _)| stream));
        let outcome = on_coroutine(FETCH_STACK_BYTES / size_of::<usize>(), move || {
            let config = Agent::config_builder()
                .timeout_global(Some(Duration::from_millis(300)))
                .build();
            let agent = Agent::with_parts(config, MayConnector::default(), MayResolver);
            let started = Instant::now();
            (fetch(&agent, &url), started.elapsed())
        });
        let (result, took) = outcome;
        let why = result.unwrap_err();
        assert!(why.contains("timeout"), "{why}");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(5),
            "{took:?}"
        );
        drop(silent.join());
    }

    #[test]
    fn a_name_is_resolved_off_the_worker_and_an_unknown_one_fails() {
        let (_servers, site) = on_coroutine(0x1000, || {
            SiteServer::start_all(&SiteSpec::bench(1, 1)).unwrap()
        });
        let port = site.origins()[0].rsplit(':').next().unwrap().to_owned();
        let outcome = on_coroutine(FETCH_STACK_BYTES / size_of::<usize>(), move || {
            let (agent, _) = agent(1, Some(CALL_BUDGET));
            let localhost = fetch(&agent, &format!("http://localhost:{port}/"));
            let unknown = fetch(&agent, "http://no-such-host.invalid/");
            (localhost.map(|(status, _)| status), unknown)
        });
        assert_eq!(outcome.0, Ok(200));
        assert!(outcome.1.is_err());
    }

    /// The small test site's URLs: gzip, large, broken HTML, redirects,
    /// 404s and 5xx (its link trap left out, as it never ends).
    fn every_kind_of_page() -> (Vec<SiteServer>, Vec<String>) {
        let mut spec = SiteSpec::small();
        spec.features.trap = false;
        let (servers, site) = SiteServer::start_all(&spec).unwrap();
        (
            servers,
            site.expected_urls(usize::MAX).into_iter().collect(),
        )
    }

    /// What `FETCH_STACK_BYTES` is sized from: may prints a coroutine's
    /// stack use when it ends if its stack size is odd.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn measure_the_fetch_stack() {
        configure_for_tests();
        let (_servers, urls) = every_kind_of_page();
        let statuses = on_coroutine((FETCH_STACK_BYTES / size_of::<usize>()) | 1, move || {
            let (agent, _) = agent(1, Some(CALL_BUDGET));
            urls.iter()
                .map(|u| fetch(&agent, u).map(|(s, _)| s))
                .collect::<Vec<_>>()
        });
        println!("{statuses:?}");
    }

    #[test]
    fn every_kind_of_page_is_fetched_on_half_the_stack() {
        configure_for_tests();
        let (_servers, urls) = every_kind_of_page();
        let count = urls.len();
        let answered = on_coroutine(FETCH_STACK_BYTES / size_of::<usize>() / 2, move || {
            let (agent, _) = agent(1, Some(CALL_BUDGET));
            urls.iter().filter(|u| fetch(&agent, u).is_ok()).count()
        });
        assert_eq!(answered, count);
    }
}
