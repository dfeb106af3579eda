//! Step 6: a resolver cache and an access log. Names are still resolved
//! on `may_patterns::blocking`'s threads, now behind a cache that keeps an
//! answer for `DNS_TTL` (the system resolver does not say how long a
//! record lives) and at most `DNS_ENTRIES` names, so a burst of requests
//! to one host costs one lookup. Every request ends as one line of an
//! access log in the combined format, written by one OS thread fed
//! through a bounded queue: a request never waits for the log, and a line
//! that finds the queue full is dropped and counted.
//!
//! The demo sends three requests to `localhost`, then prints the lookups
//! and the log, with the clock fixed so its lines do not change.

#[path = "steps_access.rs"]
mod steps_access;
#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_pool.rs"]
mod steps_pool;
#[path = "steps_request.rs"]
mod steps_request;
#[path = "steps_streaming.rs"]
mod steps_streaming;
#[path = "steps_tunnel.rs"]
mod steps_tunnel;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use may_patterns::bounded;
use may_patterns::http::{header, write_error, RequestHead};
use may_patterns::server::Conn;
use steps_access::{admit, resolve, Cidr, Policy};
use steps_common::{show, start_origin, Client, Service, BUF};
use steps_pool::{connect_first, Pool};
use steps_request::{client_halves, next_head, Target};
use steps_streaming::{forward, refuse, Failure, Io};
use steps_tunnel::open_tunnel;

/// This hop's name in `Via`.
const VIA: &str = "step6";

// ANCHOR: handle
/// One client connection, as in step 5; each request ends as a log line.
fn handle(conn: Conn, proxy: &Shared) -> io::Result<()> {
    let peer = conn.peer().ip();
    let (mut client_in, mut client_out) = client_halves(conn)?;
    let mut buf = vec![0u8; BUF];
    while let Some(head) = next_head(&mut client_in, &mut client_out)? {
        let line = LogLine::new(peer, &head, (proxy.clock)());
        let policy = &proxy.policy;
        if !policy.client_allowed(peer) {
            let why = format!("{peer} may not use this proxy");
            proxy.log.record(line.done(403, why.len() as u64));
            return write_error(&mut client_out, 403, "Forbidden", &[], &why, true);
        }
        if !policy.authorized(header(&head.headers, "proxy-authorization")) {
            proxy.log.record(line.done(407, 0));
            let challenge = [("Proxy-Authenticate", "Basic realm=\"step6\"")];
            let (status, reason) = (407, "Proxy Authentication Required");
            return write_error(&mut client_out, status, reason, &challenge, "", true);
        }
        let tunnel = head.method.eq_ignore_ascii_case("CONNECT");
        let resolve = |host: &str, port| proxy.resolver.resolve(host, port);
        let admitted = match tunnel {
            true => Target::parse_authority(&head.target),
            false => Target::parse(&head.target),
        }
        .ok_or_else(|| Failure::Refuse(400, "Bad Request", "not a target".to_owned()))
        .and_then(|target| admit(&target, policy, resolve).map(|addrs| (target, addrs)));
        let (target, addrs) = match admitted {
            Ok(admitted) => admitted,
            Err(failure) => return log_and_refuse(&mut client_out, failure, line, &proxy.log),
        };
        if tunnel {
            let origin = match connect_first(&addrs) {
                Ok((_, origin)) => origin,
                Err(e) => {
                    let failure = Failure::Upstream(e);
                    return log_and_refuse(&mut client_out, failure, line, &proxy.log);
                }
            };
            // Logged when the tunnel ends, with the bytes that came back.
            let down = open_tunnel(origin, client_in, client_out);
            proxy
                .log
                .record(line.done(200, *down.as_ref().unwrap_or(&0)));
            return down.map(drop);
        }
        let io = Io {
            client_in: &mut client_in,
            client_out: &mut client_out,
            buf: &mut buf,
        };
        match forward(head, &target, &addrs, io, &proxy.pool) {
            Ok((keep_alive, status, bytes)) => {
                proxy.log.record(line.done(status, bytes));
                if !keep_alive {
                    break;
                }
            }
            Err(failure) => return log_and_refuse(&mut client_out, failure, line, &proxy.log),
        }
    }
    Ok(())
}
// ANCHOR_END: handle

/// Log a request that failed before its answer began, then refuse it as
/// step 5 does. One whose answer broke off half-way is not logged: its
/// status was sent but the client may not have seen it.
fn log_and_refuse(
    client: &mut impl Write,
    failure: Failure,
    line: LogLine,
    log: &AccessLog,
) -> io::Result<()> {
    let (status, reason, why) = failure.answer()?;
    log.record(line.done(status, why.len() as u64));
    refuse(client, Failure::Refuse(status, reason, why))
}

// ANCHOR: resolver
/// How long a resolved name is kept, and how many names at most.
const DNS_TTL: Duration = Duration::from_secs(30);
const DNS_ENTRIES: usize = 1024;

/// The system resolver behind a cache. Two requests that miss at once
/// both look up; the second answer replaces the first.
#[derive(Default)]
struct Resolver {
    /// Name -> (when it was resolved, its addresses). A std `Mutex`, never
    /// held across the lookup, which parks.
    cache: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
    /// Lookups that went to the system resolver.
    lookups: AtomicU64,
}

impl Resolver {
    /// `host`'s addresses with `port`: an IP literal as it is; a name from
    /// the cache, or looked up as in step 5, on a thread of the blocking
    /// pool.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = host.to_ascii_lowercase();
        let cached = self.cache.lock().unwrap().get(&name).cloned();
        let ips = match cached {
            Some((at, ips)) if at.elapsed() < DNS_TTL => ips,
            _ => self.look_up(name)?,
        };
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    fn look_up(&self, name: String) -> io::Result<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let ips: Vec<IpAddr> = resolve(&name, 0)?.iter().map(SocketAddr::ip).collect();
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= DNS_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < DNS_TTL);
        }
        if cache.len() < DNS_ENTRIES {
            cache.insert(name, (Instant::now(), ips.clone()));
        }
        Ok(ips)
    }
}
// ANCHOR_END: resolver

// ANCHOR: log
/// Lines waiting for the log's thread; past this, lines are dropped.
const LOG_QUEUE: usize = 1024;

/// The access log: one OS thread writes, requests only queue a line.
struct AccessLog {
    queue: bounded::Sender<String>,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
}

impl AccessLog {
    /// Start the thread writing to `out`; it gives `out` back (flushed)
    /// once every sender is gone and the queue is empty.
    fn start<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
    ) -> io::Result<(AccessLog, std::thread::JoinHandle<io::Result<W>>)> {
        let (queue, lines) = bounded::channel::<String>(capacity);
        let writer = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut out = io::BufWriter::new(out);
                for line in lines.iter() {
                    writeln!(out, "{line}")?;
                    // Written in batches while lines wait, at once when
                    // the queue runs dry, so a quiet proxy's lines show.
                    if lines.is_empty() {
                        out.flush()?;
                    }
                }
                out.into_inner().map_err(|e| e.into_error())
            })?;
        let dropped = AtomicU64::new(0);
        Ok((AccessLog { queue, dropped }, writer))
    }

    /// Queue `line` if there is room; never waits.
    fn record(&self, line: String) {
        if self.queue.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The parts of a line known when the request head arrives.
struct LogLine {
    client: IpAddr,
    user: String,
    time: SystemTime,
    request: String,
    referer: String,
    agent: String,
}

impl LogLine {
    fn new(client: IpAddr, head: &RequestHead, time: SystemTime) -> LogLine {
        let quoted = |name| header(&head.headers, name).map_or("-".to_owned(), escape);
        LogLine {
            client,
            user: basic_user(header(&head.headers, "proxy-authorization")),
            time,
            request: escape(&format!(
                "{} {} HTTP/1.{}",
                head.method, head.target, head.version
            )),
            referer: quoted("referer"),
            agent: quoted("user-agent"),
        }
    }

    /// The combined format: `host - user [time] "request" status bytes
    /// "referer" "user-agent"`, `-` for an empty field.
    fn done(self, status: u16, bytes: u64) -> String {
        let bytes = match bytes {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        format!(
            "{} - {} [{}] \"{}\" {status} {bytes} \"{}\" \"{}\"",
            self.client,
            self.user,
            clf_time(self.time),
            self.request,
            self.referer,
            self.agent
        )
    }
}

/// The user a `Basic` header names (whether or not its password is right).
fn basic_user(credentials: Option<&str>) -> String {
    credentials
        .and_then(|c| c.strip_prefix("Basic "))
        .and_then(|b| BASE64.decode(b.trim()).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| d.split_once(':').map(|(user, _)| escape(user)))
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// A client's text as it may appear in a line: no quote, backslash or
/// control character, so one request cannot forge a second line.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => format!("\\x{:02x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// `03/Dec/2026:10:00:00 +0000`, in UTC.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let month = MONTHS[month as usize - 1];
    format!("{day:02}/{month}/{year}:{h:02}:{m:02}:{s:02} +0000")
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's
/// `civil_from_days`, in eras of 400 years.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
// ANCHOR_END: log

/// What every connection of the proxy shares.
struct Shared {
    policy: Policy,
    pool: Pool,
    resolver: Resolver,
    log: AccessLog,
    /// The log's clock: the system's, or a fixed one in the demo.
    clock: fn() -> SystemTime,
}

fn start_proxy(addr: &str, shared: Shared) -> io::Result<(Service, Arc<Shared>)> {
    let shared = Arc::new(shared);
    let proxy = shared.clone();
    let service = Service::start(addr, move |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn, &proxy) {
            eprintln!("{peer}: {e}");
        }
    })?;
    Ok((service, shared))
}

const USER: &str = "alice:wonderland";

/// The demo's clock: 3 December 2026, 10:00 UTC, for lines that do not change.
fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_292_000)
}

// ANCHOR: demo
/// Three requests to `localhost` on one connection, and what they cost:
/// lookups, log lines, drops.
fn demo() -> io::Result<Vec<String>> {
    let web = start_origin()?;
    let port = web.addr().port();
    let loopback = Cidr::parse("127.0.0.1/32").expect("a range");
    let (log, writer) = AccessLog::start(Vec::new(), LOG_QUEUE)?;
    let shared = Shared {
        policy: Policy {
            ports: vec![port],
            exceptions: vec![(loopback, port)],
            users: vec![USER.to_owned()],
            ..Policy::default()
        },
        pool: Pool::default(),
        resolver: Resolver::default(),
        log,
        clock: fixed_clock,
    };
    let (service, shared) = start_proxy("127.0.0.1:0", shared)?;
    let mut client = Client::connect(service.addr)?;
    let auth = BASE64.encode(USER);
    for path in ["/a", "/b", "/c"] {
        let request = format!(
            "GET http://localhost:{port}{path} HTTP/1.1\r\nHost: localhost:{port}\r\n\
             Proxy-Authorization: Basic {auth}\r\nUser-Agent: demo\r\n\r\n"
        );
        client.exchange("GET", &request)?;
    }
    drop(client);
    let lookups = shared.resolver.lookups.load(Ordering::Relaxed);
    let dropped = shared.log.dropped.load(Ordering::Relaxed);
    // Stopping the proxy drops the last sender: the log's thread ends.
    drop((service, shared));
    let written = writer
        .join()
        .map_err(|_| io::Error::other("the log thread panicked"))??;
    let mut lines = vec![format!("3 requests to localhost, {lookups} lookup(s)")];
    lines.push(format!("the access log ({dropped} line(s) dropped):"));
    lines.extend(
        String::from_utf8_lossy(&written)
            .lines()
            .map(|l| format!("  {l}")),
    );
    Ok(lines)
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step6_resolver_and_log",
        || show("the demo", &demo().expect("the demo runs")),
        |addr| {
            let (log, _writer) = AccessLog::start(io::stdout(), LOG_QUEUE)?;
            let shared = Shared {
                policy: Policy::default(),
                pool: Pool::default(),
                resolver: Resolver::default(),
                log,
                clock: SystemTime::now,
            };
            start_proxy(addr, shared).map(|(service, _)| service)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn three_requests_to_one_name_cost_one_lookup_and_three_lines() {
        configure_for_tests();
        let lines = demo().unwrap();
        assert_eq!(lines[0], "3 requests to localhost, 1 lookup(s)");
        assert_eq!(lines[1], "the access log (0 line(s) dropped):");
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(
            lines[2].starts_with(
                "  127.0.0.1 - alice [03/Dec/2026:10:00:00 +0000] \"GET http://localhost:"
            ),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].ends_with("/a HTTP/1.1\" 200 22 \"-\" \"demo\""),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn an_expired_name_is_looked_up_again() {
        configure_for_tests();
        let resolver = Resolver::default();
        let stale = Instant::now().checked_sub(DNS_TTL).expect("the clock runs");
        let fake = vec![IpAddr::from([192, 0, 2, 1])];
        resolver
            .cache
            .lock()
            .unwrap()
            .insert("localhost".to_owned(), (stale, fake));
        let addrs = resolver.resolve("localhost", 80).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert_eq!(resolver.lookups.load(Ordering::Relaxed), 1);
        resolver.resolve("LocalHost", 80).unwrap();
        assert_eq!(resolver.lookups.load(Ordering::Relaxed), 1);
    }

    /// A writer that says when a write starts, then waits to be released.
    struct Gate {
        started: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Write for Gate {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let _ = self.started.send(());
            let _ = self.release.recv(); // Err once released: no more waits
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (started, writing) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let gate = Gate {
            started,
            release: released,
        };
        // A line longer than the thread's BufWriter goes straight to the
        // writer, so the first one holds the thread in the gate.
        let (log, writer) = AccessLog::start(gate, 2).unwrap();
        log.record("x".repeat(10_000)); // taken by the thread, which blocks
        writing
            .recv_timeout(steps_common::WAIT)
            .expect("the thread writes");
        for _ in 0..4 {
            log.record("y".repeat(10_000));
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 2); // two queued
        drop(release);
        drop(log);
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn times_and_fields_are_written_as_the_combined_format_says() {
        assert_eq!(clf_time(fixed_clock()), "03/Dec/2026:10:00:00 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(clf_time(leap), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\x0ad");
        let basic = format!("Basic {}", BASE64.encode("bob:secret"));
        assert_eq!(basic_user(Some(&basic)), "bob");
        assert_eq!(basic_user(None), "-");
    }
}
