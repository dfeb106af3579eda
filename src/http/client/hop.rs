//! One hop of a fetch: a URL to a response, on a pooled connection or a
//! new one, under the watchdog's deadlines.

use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use url::{Host, Url};

use super::connect::{self, Conn};
use super::error::{FetchError, FetchErrorKind as Kind, TimeoutPhase};
use super::exchange::{self, BodyFailure, HeadFailure};
use super::pool::{Connection, Key};
use super::resolve;
use super::watchdog::{Progress, Watchdog};
use super::Inner;
use crate::http::ResponseHead;

/// Bytes of the buffer each connection's responses are read through.
const READ_BUFFER: usize = 8 * 1024;

/// A response whose body has been read: the head, and how it came.
pub(super) struct Answer {
    pub(super) head: ResponseHead,
    pub(super) wire_bytes: u64,
    pub(super) reused: bool,
}

// ANCHOR: hop
/// Fetch `url` once, no redirect followed. The body goes to `sink`, or is
/// read and dropped if `discard(head)` says so (a redirect to follow).
/// A pooled connection that the server had closed while it was idle is
/// replaced by a new one, once: a `GET` is safe to send again.
pub(super) fn hop(
    inner: &Inner,
    url: &Url,
    extra: &[(&str, &str)],
    deadline: Instant,
    discard: &dyn Fn(&ResponseHead) -> bool,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Answer, FetchError> {
    let config = &inner.config;
    let fail = |kind, why: String| FetchError::new(kind, url.as_str(), why);
    let key = key_of(url)?;
    let request = exchange::request_head(url, &config.user_agent, config.gzip, extra)
        .map_err(|why| fail(Kind::InvalidUrl, why))?;
    let mut pooled = inner.pool.take(&key);
    loop {
        let reused = pooled.is_some();
        let (mut connection, watchdog) = match pooled.take() {
            Some(connection) => {
                inner.reused.fetch_add(1, Ordering::Relaxed);
                let progress = connection.get_ref().progress().clone();
                let watchdog = watch(connection.get_ref(), progress, inner, url, deadline)?;
                (connection, watchdog)
            }
            None => open(inner, &key, url, deadline)?,
        };
        let head = match exchange::send(&mut connection, &request, &config.limits) {
            Ok(head) => head,
            Err(HeadFailure::Closed(_)) if reused => match watchdog.finish() {
                Some(phase) => return Err(timed_out(inner, url, phase)),
                None => {
                    // Closed while idle: try again, on a new connection.
                    inner.retried.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
            Err(HeadFailure::Closed(e) | HeadFailure::Failed(e)) => {
                return Err(match watchdog.finish() {
                    Some(phase) => timed_out(inner, url, phase),
                    None => head_error(url, e),
                })
            }
        };
        let (max, limits, gzip) = (config.max_body, &config.limits, &inner.inflaters);
        let mut dropped = |_: &[u8]| Ok(());
        let sink: &mut dyn FnMut(&[u8]) -> io::Result<()> = match discard(&head) {
            true => &mut dropped,
            false => &mut *sink,
        };
        let body = exchange::read_body(&mut connection, &head, max, limits, gzip, sink);
        // A deadline that passed wins over whatever the read returned: a
        // socket shut by the watchdog looks like the peer closing it.
        if let Some(phase) = watchdog.finish() {
            return Err(timed_out(inner, url, phase));
        }
        let body = body.map_err(|failure| body_error(url, max, failure))?;
        if body.reusable {
            inner.pool.put(key, connection);
        }
        return Ok(Answer {
            head,
            wire_bytes: body.wire_bytes,
            reused,
        });
    }
}
// ANCHOR_END: hop

/// Where a connection for `url` goes; only `http` and `https` have one.
fn key_of(url: &Url) -> Result<Key, FetchError> {
    let fail = |kind, why: &str| FetchError::new(kind, url.as_str(), why);
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            let why = format!("{other}: is not http or https");
            return Err(fail(Kind::UnsupportedScheme, &why));
        }
    };
    let host = match url.host() {
        Some(Host::Domain(name)) => name.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(fail(Kind::InvalidUrl, "the URL has no host")),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    Ok(Key { https, host, port })
}

// ANCHOR: open
/// A new connection to `key`: addresses, TCP, then TLS for `https`. Its
/// watchdog starts before the handshake, so a server that never finishes
/// one is a timeout, too.
fn open(
    inner: &Inner,
    key: &Key,
    url: &Url,
    deadline: Instant,
) -> Result<(Connection, Watchdog), FetchError> {
    let config = &inner.config;
    let fail = |kind, why: String| FetchError::new(kind, url.as_str(), why);
    let host = url.host().expect("key_of checked the host");
    let addrs =
        resolve::addresses(&host, key.port, &config.resolve).map_err(|why| fail(Kind::Dns, why))?;
    let tcp = connect::tcp(&addrs, config.connect_timeout, deadline, url.as_str())?;
    inner.opened.fetch_add(1, Ordering::Relaxed);
    let progress = Arc::new(Progress::default());
    let watchdog = watch(&tcp, progress.clone(), inner, url, deadline)?;
    let tls = key.https.then_some((&config.tls, key.host.as_str()));
    match Conn::new(tcp, progress, tls) {
        Ok(conn) => Ok((Connection::with_capacity(READ_BUFFER, conn), watchdog)),
        Err(e) => Err(match watchdog.finish() {
            Some(phase) => timed_out(inner, url, phase),
            None => fail(Kind::Tls, e.to_string()),
        }),
    }
}
// ANCHOR_END: open

/// A watchdog on `socket` for one exchange.
fn watch(
    socket: &impl AsRawFd,
    progress: Arc<Progress>,
    inner: &Inner,
    url: &Url,
    deadline: Instant,
) -> Result<Watchdog, FetchError> {
    Watchdog::start(socket, progress, inner.config.read_timeout, deadline)
        .map_err(|e| FetchError::new(Kind::Io, url.as_str(), e.to_string()))
}

fn timed_out(inner: &Inner, url: &Url, phase: TimeoutPhase) -> FetchError {
    let config = &inner.config;
    let why = match phase {
        TimeoutPhase::Read => format!("no byte received for {:?}", config.read_timeout),
        _ => format!("not done within {:?}", config.total_timeout),
    };
    FetchError::new(Kind::Timeout(phase), url.as_str(), why)
}

fn head_error(url: &Url, e: io::Error) -> FetchError {
    let kind = match e.kind() {
        ErrorKind::InvalidData => Kind::Protocol,
        _ => Kind::Io,
    };
    FetchError::new(kind, url.as_str(), e.to_string())
}

fn body_error(url: &Url, max_body: u64, failure: BodyFailure) -> FetchError {
    let (kind, why) = match failure {
        BodyFailure::TooLarge => (Kind::BodyTooLarge, format!("over {max_body} bytes")),
        BodyFailure::Protocol(why) => (Kind::Protocol, why),
        BodyFailure::Sink(e) => (Kind::Protocol, format!("the body's reader refused it: {e}")),
        BodyFailure::Io(e) => (Kind::Io, e.to_string()),
    };
    FetchError::new(kind, url.as_str(), why)
}
