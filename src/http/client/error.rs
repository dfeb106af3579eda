//! Why a fetch failed, in kinds a crawler can act on: retry the transient
//! ones later, record the others with their reason.

use std::fmt;

// ANCHOR: error
/// What went wrong, coarse enough to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// The URL has no host, or a request header holds a line break.
    InvalidUrl,
    /// Not `http` or `https` (a redirect to `ftp:` ends here too).
    UnsupportedScheme,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection (refused, unreachable).
    Connect,
    /// The TLS handshake failed (unknown issuer, wrong name, bad record).
    Tls,
    /// A deadline passed.
    Timeout(TimeoutPhase),
    /// The server broke HTTP: a malformed head, a bad chunk, bad gzip, an
    /// unknown content coding; or the caller's sink refused the body.
    Protocol,
    /// The body was longer than `max_body`, as received or as decoded.
    BodyTooLarge,
    /// More redirects than `max_redirects`.
    TooManyRedirects,
    /// A redirect led back to a URL already visited in this fetch.
    RedirectLoop,
    /// The connection failed mid-exchange (reset, closed early).
    Io,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Connecting to the server's address.
    Connect,
    /// No byte arrived for `read_timeout`.
    Read,
    /// The whole fetch took `total_timeout`.
    Total,
}

/// A failed fetch: what kind, on which URL (the redirect hop that failed,
/// for a redirect chain), and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub kind: FetchErrorKind,
    pub url: String,
    pub reason: String,
}

impl FetchError {
    /// Whether trying again later may succeed: a name server, a connection
    /// or a deadline can fail once and work the next time; a malformed
    /// answer, a cap or a redirect loop will fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            FetchErrorKind::Dns
                | FetchErrorKind::Connect
                | FetchErrorKind::Timeout(_)
                | FetchErrorKind::Io
        )
    }
}
// ANCHOR_END: error

impl FetchError {
    pub(super) fn new(kind: FetchErrorKind, url: &str, reason: impl Into<String>) -> FetchError {
        FetchError {
            kind,
            url: url.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FetchErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FetchErrorKind::InvalidUrl => "invalid URL",
            FetchErrorKind::UnsupportedScheme => "unsupported scheme",
            FetchErrorKind::Dns => "DNS",
            FetchErrorKind::Connect => "connect",
            FetchErrorKind::Tls => "TLS",
            FetchErrorKind::Timeout(TimeoutPhase::Connect) => "connect timeout",
            FetchErrorKind::Timeout(TimeoutPhase::Read) => "read timeout",
            FetchErrorKind::Timeout(TimeoutPhase::Total) => "total timeout",
            FetchErrorKind::Protocol => "protocol",
            FetchErrorKind::BodyTooLarge => "body too large",
            FetchErrorKind::TooManyRedirects => "too many redirects",
            FetchErrorKind::RedirectLoop => "redirect loop",
            FetchErrorKind::Io => "I/O",
        })
    }
}

/// `<url>: <kind>: <reason>`, e.g. `http://127.0.0.1:1/: connect: Connection
/// refused (os error 111)`.
impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.url, self.kind, self.reason)
    }
}

impl std::error::Error for FetchError {}
