//! An HTTP/1.1 client for coroutines: `GET` over `http` and `https`, with
//! keep-alive connections pooled per host, bodies read through a fixed
//! buffer under a cap, `gzip` decoded, redirects followed within a bound,
//! and connect, read and total timeouts that no server can outwait.
//!
//! Everything blocking is a may socket call (the coroutine parks, its
//! worker runs others) or runs elsewhere: host names are resolved on
//! [`crate::blocking`]'s threads, the read and total deadlines are kept by
//! the [`alarm`](crate::alarm) thread (may 0.3.51's short socket timers
//! race its event loop), and the pool's lock is held only to push or pop.
//!
//! ```no_run
//! use may_patterns::http::client::{Client, ClientConfig, STACK_SIZE};
//!
//! let client = Client::new(ClientConfig::default());
//! let url = url::Url::parse("https://example.com/").unwrap();
//! let words = STACK_SIZE / std::mem::size_of::<usize>();
//! let fetch = may::coroutine::Builder::new().stack_size(words);
//! let page = may::go!(fetch, move || client.get(&url)).unwrap().join().unwrap();
//! match page {
//!     Ok(page) => println!("{} {} bytes", page.status, page.body.len()),
//!     Err(e) => println!("{e} (worth a retry: {})", e.is_transient()),
//! }
//! ```
//!
//! Every coroutine that calls the client needs [`STACK_SIZE`] bytes of
//! stack: a TLS handshake and the gzip decoder are deep.

mod config;
mod connect;
mod error;
mod exchange;
mod gzip;
mod hop;
mod pool;
mod resolve;
mod watchdog;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

pub use config::{ClientConfig, Resolve};
pub use error::{FetchError, FetchErrorKind, TimeoutPhase};

use crate::http::{header, ResponseHead};
use gzip::Inflaters;
use pool::Pool;

// ANCHOR: stack_size
/// Bytes of coroutine stack a fetch needs (may's `Builder::stack_size`
/// takes words: divide by `size_of::<usize>()`).
///
/// Measured with an odd stack size (may then prints a coroutine's use when
/// it ends) by the ignored test `stack_use_of_the_deepest_fetch`: a refused
/// TLS handshake, then a TLS 1.3 handshake (ECDSA P-256), a redirect and a
/// chunked gzip body, on one coroutine: 9642 words (77 KB) in a debug
/// build, 2837 words (23 KB) in a release build. A one-off run of a TLS 1.2
/// handshake with an RSA-2048 chain used 8726 / 2737 words. The handshake
/// is the deepest part. gzip adds little because its 43 KiB inflate state
/// is built off the coroutine (see `gzip.rs`); with `flate2::read::GzDecoder`,
/// which builds it on the caller's stack, the same fetch used 15513 words
/// (124 KB) in debug and 7683 words (61 KB) in release. 128 KiB, 1.7 times
/// the debug figure, leaves room for paths not measured; a coroutine only
/// makes resident the pages it touches, so the margin costs address space,
/// not memory. `tests/nesting.rs` fetches on a stack of exactly this size
/// in both builds.
pub const STACK_SIZE: usize = 128 * 1024;
// ANCHOR_END: stack_size

/// A shared HTTP client: clone it freely (an `Arc` inside), one per
/// program, so every fetch shares one pool of connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What every clone of a [`Client`] shares.
struct Inner {
    config: ClientConfig,
    pool: Pool,
    inflaters: Inflaters,
    opened: AtomicU64,
    reused: AtomicU64,
    retried: AtomicU64,
}

/// A response read to its end.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL that answered, after the redirects followed.
    pub url: Url,
    /// The URLs redirected to, in order (the last is `url`).
    pub redirects: Vec<Url>,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The body, decoded (empty from [`Client::get_streaming`]).
    pub body: Vec<u8>,
    /// Body bytes as received, before gzip decoding.
    pub wire_bytes: u64,
    /// From the call to the body's end, redirects included.
    pub elapsed: Duration,
    /// Whether the last response came on a connection used before.
    pub reused_connection: bool,
}

impl Fetched {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// How the client's connections have been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// New TCP connections made.
    pub connections_opened: u64,
    /// Requests sent on a pooled connection.
    pub connections_reused: u64,
    /// Pooled connections found closed by the server, and replaced.
    pub stale_retried: u64,
    /// Connections idle in the pool now.
    pub idle_now: usize,
}

impl Client {
    /// A client with `config`; it opens no connection until the first fetch.
    pub fn new(config: ClientConfig) -> Client {
        let pool = Pool::new(config.max_idle_per_host, config.idle_timeout);
        let inner = Inner {
            config,
            pool,
            inflaters: Inflaters::new(),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        };
        Client {
            inner: Arc::new(inner),
        }
    }

    /// `GET url`, with the whole decoded body (at most `max_body` bytes).
    /// Any status is a `Fetched`, 404 and 500 included; an error is a fetch
    /// that got no complete response.
    pub fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        let mut body = Vec::new();
        let mut fetched = self.get_streaming(url, &[], &mut |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })?;
        fetched.body = body;
        Ok(fetched)
    }

    // ANCHOR: get_streaming
    /// `GET url` with `headers` added, handing the decoded body to `sink`
    /// chunk by chunk as it arrives (a streaming parser reads it without
    /// the page ever being whole in memory). The `Fetched` has an empty
    /// `body`. A redirect's own body is read and dropped, not sunk; an
    /// error from `sink` ends the fetch as a `Protocol` error.
    pub fn get_streaming(
        &self,
        url: &Url,
        headers: &[(&str, &str)],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<Fetched, FetchError> {
        let config = &self.inner.config;
        let started = Instant::now();
        let deadline = started + config.total_timeout;
        let follow = |head: &ResponseHead| {
            config.max_redirects > 0 && redirect_status(head.status) && location(head).is_some()
        };
        let mut current = url.clone();
        let mut redirects = Vec::new();
        let mut visited = HashSet::from([url.clone()]);
        loop {
            let answer = hop::hop(&self.inner, &current, headers, deadline, &follow, sink)?;
            if !follow(&answer.head) {
                let head = answer.head;
                return Ok(Fetched {
                    url: current,
                    redirects,
                    status: head.status,
                    reason: head.reason,
                    headers: head.headers,
                    body: Vec::new(),
                    wire_bytes: answer.wire_bytes,
                    elapsed: started.elapsed(),
                    reused_connection: answer.reused,
                });
            }
            let next = redirect_target(&current, &answer.head, config.max_redirects, &redirects)?;
            if !visited.insert(next.clone()) {
                let why = format!("{next} was visited before in this chain");
                return Err(FetchError::new(
                    FetchErrorKind::RedirectLoop,
                    current.as_str(),
                    why,
                ));
            }
            redirects.push(next.clone());
            current = next;
        }
    }
    // ANCHOR_END: get_streaming

    /// How connections have been used so far, by every clone.
    pub fn stats(&self) -> ClientStats {
        let inner = &self.inner;
        ClientStats {
            connections_opened: inner.opened.load(Ordering::Relaxed),
            connections_reused: inner.reused.load(Ordering::Relaxed),
            stale_retried: inner.retried.load(Ordering::Relaxed),
            idle_now: inner.pool.idle_now(),
        }
    }
}

/// The statuses that send a client elsewhere (RFC 9110 15.4; 300 and 304
/// do not).
fn redirect_status(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn location(head: &ResponseHead) -> Option<&str> {
    header(&head.headers, "location")
}

// ANCHOR: redirect
/// Where the redirect `head` (an answer to `current`) leads: its
/// `Location` resolved against `current`, if the chain may grow and the
/// target is `http` or `https`.
fn redirect_target(
    current: &Url,
    head: &ResponseHead,
    max_redirects: u32,
    followed: &[Url],
) -> Result<Url, FetchError> {
    let fail = |kind, url: &str, why: String| Err(FetchError::new(kind, url, why));
    if followed.len() >= max_redirects as usize {
        let why = format!("more than {max_redirects} redirects");
        return fail(FetchErrorKind::TooManyRedirects, current.as_str(), why);
    }
    let location = location(head).unwrap_or_default();
    let next = match current.join(location) {
        Ok(next) => next,
        Err(e) => {
            let why = format!("Location {location:?}: {e}");
            return fail(FetchErrorKind::InvalidUrl, current.as_str(), why);
        }
    };
    match next.scheme() {
        "http" | "https" => Ok(next),
        other => {
            let why = format!("redirected to {other}:, not http or https");
            fail(FetchErrorKind::UnsupportedScheme, next.as_str(), why)
        }
    }
}
// ANCHOR_END: redirect
