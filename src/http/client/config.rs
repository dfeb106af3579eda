//! What a [`Client`](super::Client) is told: its identity, its timeouts, its
//! caps and its pool's size, with defaults fit for crawling the open web.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http::Limits;
use crate::tls;

// ANCHOR: config
/// How a [`Client`](super::Client) behaves. `ClientConfig::default()` is a
/// client for real sites; tests change a field or two with struct update
/// syntax (`ClientConfig { max_body: 1024, ..Default::default() }`).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sent as `User-Agent` on every request.
    pub user_agent: String,
    /// Longest wait for a TCP connection to one address (default 5 s).
    pub connect_timeout: Duration,
    /// Longest wait with no byte received, from sending a request (or
    /// starting a TLS handshake) to the body's end (default 10 s). A TLS
    /// record counts when it is complete.
    pub read_timeout: Duration,
    /// Longest whole fetch, redirects and body included (default 30 s): a
    /// server that trickles a byte a second never trips the read timeout,
    /// and ends here. A name lookup under way is not cut short (a blocking
    /// `getaddrinfo` cannot be; it has its own timeouts); the deadline
    /// still bounds the connect and the exchange after it.
    pub total_timeout: Duration,
    /// Redirects followed; at 0 a 3xx is returned to the caller as it came
    /// (default 5).
    pub max_redirects: u32,
    /// Bytes of body accepted, counted both as received and as decoded, so
    /// a small gzip bomb ends at this size too (default 10 MiB).
    pub max_body: u64,
    /// Bounds on a response's head (its `body_bytes` is not used: the body
    /// is bounded by `max_body`).
    pub limits: Limits,
    /// Keep-alive connections kept idle per (scheme, host, port) (default 4).
    pub max_idle_per_host: usize,
    /// An idle connection older than this is closed, not reused (default
    /// 10 s, under the 15 s or more most servers keep one open).
    pub idle_timeout: Duration,
    /// Ask for `gzip` (`Accept-Encoding: gzip`). A gzip body is decoded
    /// whether asked for or not (default true).
    pub gzip: bool,
    /// The TLS client settings for `https` (default: the Mozilla roots of
    /// `webpki-roots`, [`tls::web_client_config`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// How host names become addresses (default [`Resolve::System`]).
    pub resolve: Resolve,
}

/// How host names become addresses. An IP literal in a URL is never looked
/// up.
#[derive(Clone, Debug)]
pub enum Resolve {
    /// `getaddrinfo`, run on [`crate::blocking`]'s threads, never on a may
    /// worker (it blocks the thread it runs on).
    System,
    /// A fixed table, `"host:port"` to address: tests give `a.test:443` the
    /// loopback address of their server. A name missing here is a DNS error.
    Static(HashMap<String, SocketAddr>),
}
// ANCHOR_END: config

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            user_agent: concat!("may-patterns/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_redirects: 5,
            max_body: 10 * 1024 * 1024,
            limits: Limits::default(),
            max_idle_per_host: 4,
            idle_timeout: Duration::from_secs(10),
            gzip: true,
            tls: tls::web_client_config(),
            resolve: Resolve::System,
        }
    }
}
