//! Plain HTTP through the proxy: an absolute-form request
//! (`GET http://host:port/path HTTP/1.1`) is checked, rewritten to origin
//! form (`GET /path`) and sent on a pooled keep-alive connection to the
//! origin; the answer comes back the same way. Both bodies stream through
//! the connection's one copy buffer, never read whole.
//!
//! What changes on the way (RFC 9110 7.6, RFC 9112 3.2.2): `Host` is set
//! from the URL (a `Host` the client sent is replaced, whatever it said);
//! the hop-by-hop headers go both ways, `Proxy-Authorization` with them;
//! `Via` gets this hop both ways; each body is framed again for the next
//! hop. Requests always go out as HTTP/1.1; an HTTP/1.0 client gets a body
//! of unknown length raw, then the connection closes (1.0 has no chunked).
//!
//! Errors before the answer has started are a short `text/plain` response
//! and a close (`502` cannot connect or a bad answer, `504` too slow, `400`
//! a bad request). Once the answer has started, a failure can only be
//! told by closing the client's connection.

use std::io::{self, BufRead, ErrorKind, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;

use may_patterns::http::{
    append_via, copy_body, read_response_head, remove_hop_by_hop, response_framing, set_framing,
    write_continue, write_head, Framing, Limits, RequestHead, ResponseHead,
};

use crate::handler::{
    connect_any, copy_buffer, destinations, refuse, Client, Refusal, Settings, Stats,
};
use crate::upstream::{Origin, Pool};

/// The connection's copy buffer: one body piece at a time, on the heap.
pub const COPY_BUF: usize = 16 * 1024;
/// This hop's name in `Via`.
const VIA: &str = "proxy_server";
/// An origin's answer head: twice the request's bound, since real sites
/// send long `Set-Cookie` and security headers.
const RESPONSE_LIMITS: Limits = Limits {
    head_bytes: 16 * 1024,
    headers: 64,
    body_bytes: 0, // bodies are streamed, never collected
};

/// Whether the client's connection can carry another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// What became of one request, for the access log and the loop.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// The status the client got; `None` if it got no answer (it left).
    pub status: Option<u16>,
    /// Response body bytes sent to the client.
    pub bytes_down: u64,
    pub next: Next,
}

/// Where an absolute-form `http://` target points, and the origin-form
/// path to send there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// As written: a name, an IPv4 literal, or `[v6]`.
    pub host: &'a str,
    pub port: u16,
    /// `host[:port]` as written: the `Host` header's value.
    pub authority: &'a str,
    /// The path and query (`/` if the URL has none).
    pub path: String,
}

/// Parse a request target as an absolute `http://` URL. The error is the
/// sentence the client gets with its `400`.
pub fn parse_target(target: &str) -> Result<Target<'_>, String> {
    if target.starts_with('/') || target == "*" {
        return Err("this is a proxy: ask for an absolute URL \
                    (GET http://host/path), not a path"
            .into());
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(format!("{target:?} is not an absolute http:// URL"));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err("https:// URLs go through a tunnel: send CONNECT host:443 \
                    (curl and browsers do this by themselves)"
            .into());
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("only http:// URLs are forwarded, not {scheme}://"));
    }
    if rest.contains('#') {
        return Err("a request target carries no #fragment".into());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("credentials in the URL (user@host) are not forwarded".into());
    }
    let (host, port) = host_and_port(authority)
        .ok_or_else(|| format!("{authority:?} is not a host with an optional port"))?;
    let path = match path.starts_with('?') || path.is_empty() {
        true => format!("/{path}"),
        false => path.to_owned(),
    };
    Ok(Target {
        host,
        port,
        authority,
        path,
    })
}

/// `name`, `name:port`, `[v6]`, `[v6]:port`; the port defaults to 80.
fn host_and_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let close = v6.find(']')?;
            v6[..close].parse::<Ipv6Addr>().ok()?;
            (&authority[..close + 2], &authority[close + 2..])
        }
        None => match authority.split_once(':') {
            Some((host, _)) => (host, &authority[host.len()..]),
            None => (authority, ""),
        },
    };
    let port = match port {
        "" | ":" => 80,
        _ => port.strip_prefix(':')?.parse().ok().filter(|p| *p != 0)?,
    };
    let name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
    name_ok.then_some((host, port))
}

/// The start line and headers to send to the origin for `head`, whose
/// body goes out framed as `framing`.
pub fn request_to_origin(
    head: &RequestHead,
    target: &Target,
    framing: Framing,
) -> (String, Vec<(String, String)>) {
    let mut headers = head.headers.clone();
    remove_hop_by_hop(&mut headers);
    // Host comes from the URL (RFC 9112 3.2.2). The proxy meets
    // `Expect: 100-continue` itself, so the origin never sees it.
    headers.retain(|(n, v)| {
        let host = n.eq_ignore_ascii_case("host");
        let expect =
            n.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue");
        !host && !expect
    });
    headers.insert(0, ("Host".to_owned(), target.authority.to_owned()));
    append_via(&mut headers, head.version, VIA);
    set_framing(&mut headers, framing);
    (format!("{} {} HTTP/1.1", head.method, target.path), headers)
}

/// The answer as the client gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    /// How the body is framed to the client.
    pub framing: Framing,
    /// Whether the client's connection stays open after it.
    pub keep_alive: bool,
}

/// Rewrite the origin's answer `response`, its body framed as `from`, for
/// a client that spoke HTTP/1.`client_version` and asked to keep the
/// connection (`client_keep_alive`).
pub fn response_to_client(
    response: &ResponseHead,
    from: Framing,
    client_version: u8,
    client_keep_alive: bool,
) -> ClientResponse {
    let mut headers = response.headers.clone();
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, response.version, VIA);
    let framing = match from {
        // No body (HEAD, 204, 304): the headers stay as they are, so a
        // HEAD answer keeps the Content-Length it describes.
        Framing::Empty => Framing::Empty,
        Framing::Length(n) => Framing::Length(n),
        Framing::Chunked | Framing::UntilClose if client_version >= 1 => Framing::Chunked,
        // HTTP/1.0 has no chunked: the body raw, ended by our close.
        Framing::Chunked | Framing::UntilClose => Framing::UntilClose,
    };
    match framing {
        Framing::Empty => {}
        Framing::UntilClose => set_framing(&mut headers, Framing::Empty),
        to => set_framing(&mut headers, to),
    }
    let keep_alive = client_keep_alive && framing != Framing::UntilClose;
    match (keep_alive, client_version) {
        (false, _) => headers.push(("Connection".to_owned(), "close".to_owned())),
        (true, 0) => headers.push(("Connection".to_owned(), "keep-alive".to_owned())),
        (true, _) => {}
    }
    let start_line = format!("HTTP/1.1 {} {}", response.status, response.reason);
    ClientResponse {
        start_line,
        headers,
        framing,
        keep_alive,
    }
}

/// Methods that may be sent twice (RFC 9110 9.2.2): only these are
/// retried when a reused connection turns out to be dead.
fn idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].contains(&method)
}

/// Where sending a request failed.
enum Failed {
    /// The origin side: a write, or the wait for its first byte.
    Origin(io::Error),
    /// The client's body is malformed (a bad chunk, too short).
    BadBody(io::Error),
    /// The client went away (or stalled past its timeout) mid-body.
    ClientGone,
}

/// A writer that remembers whether it failed, so that after a copy error
/// the caller knows which side broke.
struct Watched<'a, W: Write> {
    inner: &'a mut W,
    failed: bool,
}

impl<'a, W: Write> Watched<'a, W> {
    fn new(inner: &'a mut W) -> Self {
        Watched {
            inner,
            failed: false,
        }
    }
}

impl<W: Write> Write for Watched<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Forward one request (its head already read and the client allowed)
/// and its answer. Refusals are answered here and end with `Next::Close`.
/// An `Err` is a client connection to close without a word.
pub fn forward(
    head: &RequestHead,
    client: &mut Client,
    settings: &Settings,
    stats: &Stats,
    pool: &Pool,
) -> io::Result<Served> {
    let target = match parse_target(&head.target) {
        Ok(target) => target,
        Err(why) => return refused(client, stats, Refusal::new(400, why)),
    };
    if !settings.policy.port_allowed(target.port, false) {
        let why = format!("port {} is closed to plain HTTP (--deny-port)", target.port);
        return refused(client, stats, Refusal::new(403, why));
    }
    let framing = head.framing()?; // read_request_head checked it
    let addrs = match destinations(target.host, target.port, settings) {
        Ok(addrs) => addrs,
        Err(refusal) => return refused(client, stats, refusal),
    };
    let mut origin = match pool.take(&addrs) {
        Some(origin) => {
            stats.origin_reused.fetch_add(1, Ordering::Relaxed);
            origin
        }
        None => match fresh(&addrs, settings) {
            Ok(origin) => origin,
            Err(refusal) => return refused(client, stats, refusal),
        },
    };
    let (start_line, headers) = request_to_origin(head, &target, framing);
    // Only a request without a body can be sent again: its body is gone.
    let retryable = idempotent(&head.method) && framing == Framing::Empty;
    let bytes_up = loop {
        let sent = send(&mut origin, &start_line, &headers, framing, head, client);
        match sent {
            Ok(bytes_up) => break bytes_up,
            Err(Failed::Origin(_)) if origin.reused && retryable => {
                // A pooled connection the origin closed as we used it.
                stats.origin_retried.fetch_add(1, Ordering::Relaxed);
                origin = match fresh(&addrs, settings) {
                    Ok(origin) => origin,
                    Err(refusal) => return refused(client, stats, refusal),
                };
            }
            Err(Failed::Origin(e)) => {
                return refused(client, stats, origin_failure(&e, origin.addr, settings))
            }
            Err(Failed::BadBody(e)) => {
                let why = format!("the request body is malformed: {e}");
                return refused(client, stats, Refusal::new(400, why));
            }
            Err(Failed::ClientGone) => return Ok(client_gone(stats, origin, None)),
        }
    };
    let response = match read_response_head(&mut origin.reader, &RESPONSE_LIMITS) {
        Ok(response) if response.status == 101 => {
            let why = "the origin switched protocols, which this proxy does not relay";
            return refused(client, stats, Refusal::new(502, why));
        }
        Ok(response) => response,
        Err(e) => return refused(client, stats, origin_failure(&e, origin.addr, settings)),
    };
    let from = match response_framing(&head.method, response.status, &response.headers) {
        Ok(from) => from,
        Err(e) => {
            let why = format!("the answer from {} is malformed: {e}", origin.addr);
            return refused(client, stats, Refusal::new(502, why));
        }
    };
    let answer = response_to_client(&response, from, head.version, head.keep_alive());
    let status = Some(response.status);
    if write_head(&mut client.writer, &answer.start_line, &answer.headers).is_err() {
        return Ok(client_gone(stats, origin, status));
    }
    let mut to_client = Watched::new(&mut client.writer);
    let copied = copy_body(
        &mut origin.reader,
        from,
        &mut to_client,
        answer.framing,
        u64::MAX,
        &RESPONSE_LIMITS,
        copy_buffer(&mut client.buf),
    );
    let client_failed = to_client.failed;
    let bytes_down = match copied.and_then(|n| client.writer.flush().map(|()| n)) {
        Ok(n) => n,
        Err(_) if client_failed => return Ok(client_gone(stats, origin, status)),
        Err(e) => {
            // The answer has started: closing is all that is left to say.
            stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
            origin.close();
            return Err(e);
        }
    };
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    stats.bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
    stats.bytes_down.fetch_add(bytes_down, Ordering::Relaxed);
    // Reused only if the origin allows it and the body's end was its
    // framing's, not the origin's close.
    if response.keep_alive() && from != Framing::UntilClose {
        pool.put(origin);
    }
    Ok(Served {
        status,
        bytes_down,
        next: match answer.keep_alive {
            true => Next::KeepAlive,
            false => Next::Close,
        },
    })
}

/// Send the head and the body, then wait for the answer's first byte.
/// Returns the body bytes sent.
///
/// `Expect: 100-continue` is met here, not forwarded: once the request is
/// allowed and the origin connected, the proxy answers `100 Continue`
/// itself and streams the body. RFC 9110 10.1.1 lets a proxy do so, and
/// it is simpler than relaying the origin's interim answer (which would
/// mean reading from the origin while the client waits to send). A
/// request without a body gets no `100`: there is nothing to invite.
fn send(
    origin: &mut Origin,
    start_line: &str,
    headers: &[(String, String)],
    framing: Framing,
    head: &RequestHead,
    client: &mut Client,
) -> Result<u64, Failed> {
    write_head(&mut origin.writer, start_line, headers).map_err(Failed::Origin)?;
    let mut bytes_up = 0;
    if framing != Framing::Empty {
        if head.expects_continue() {
            write_continue(&mut client.writer).map_err(|_| Failed::ClientGone)?;
        }
        let mut to_origin = Watched::new(&mut origin.writer);
        let copied = copy_body(
            &mut client.reader,
            framing,
            &mut to_origin,
            framing,
            u64::MAX,
            &Limits::default(),
            copy_buffer(&mut client.buf),
        );
        bytes_up = match copied {
            Ok(n) => n,
            Err(e) if to_origin.failed => return Err(Failed::Origin(e)),
            Err(e) if e.kind() == ErrorKind::InvalidData => return Err(Failed::BadBody(e)),
            Err(_) => return Err(Failed::ClientGone),
        };
    }
    origin.writer.flush().map_err(Failed::Origin)?;
    match origin.reader.fill_buf() {
        Ok([]) => Err(Failed::Origin(io::Error::new(
            ErrorKind::UnexpectedEof,
            "the origin closed the connection without an answer",
        ))),
        Ok(_) => Ok(bytes_up),
        Err(e) => Err(Failed::Origin(e)),
    }
}

/// A fresh connection to the first of `addrs` that answers.
fn fresh(addrs: &[SocketAddr], settings: &Settings) -> Result<Origin, Refusal> {
    let (stream, addr) = connect_any(addrs, settings)?;
    Origin::new(stream, addr, settings.idle_timeout)
        .map_err(|e| Refusal::new(502, format!("cannot use the connection to {addr}: {e}")))
}

/// The answer to an origin that failed before its answer started.
fn origin_failure(e: &io::Error, addr: SocketAddr, settings: &Settings) -> Refusal {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Refusal::new(
            504,
            format!(
                "{addr} sent no answer within {} s",
                settings.idle_timeout.as_secs()
            ),
        ),
        _ => Refusal::new(502, format!("{addr} failed: {e}")),
    }
}

/// Answer `refusal` and close.
fn refused(client: &mut Client, stats: &Stats, refusal: Refusal) -> io::Result<Served> {
    stats.count_refusal(refusal.status);
    refuse(&mut client.writer, &refusal)?;
    Ok(Served {
        status: Some(refusal.status),
        bytes_down: 0,
        next: Next::Close,
    })
}

/// The client left mid-exchange: count it, drop the origin connection
/// (it is mid-message), and end.
fn client_gone(stats: &Stats, origin: Origin, status: Option<u16>) -> Served {
    stats.client_gone.fetch_add(1, Ordering::Relaxed);
    origin.close();
    Served {
        status,
        bytes_down: 0,
        next: Next::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, version: u8, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn absolute_urls_become_host_port_and_path() {
        let t = parse_target("http://example.com/a/b?c=d").unwrap();
        assert_eq!(
            (t.host, t.port, t.authority, t.path.as_str()),
            ("example.com", 80, "example.com", "/a/b?c=d")
        );
        let t = parse_target("HTTP://h.test:8080").unwrap();
        assert_eq!((t.host, t.port, t.path.as_str()), ("h.test", 8080, "/"));
        let t = parse_target("http://h?q").unwrap();
        assert_eq!(t.path, "/?q");
        let t = parse_target("http://[::1]:81/x").unwrap();
        assert_eq!((t.host, t.port, t.authority), ("[::1]", 81, "[::1]:81"));
        assert_eq!(parse_target("http://[::1]/").unwrap().port, 80);
        assert_eq!(parse_target("http://h:/").unwrap().port, 80);
    }

    #[test]
    fn other_targets_are_refused_with_a_reason() {
        let cases = [
            ("/index.html", "this is a proxy"),
            ("*", "this is a proxy"),
            ("https://example.com/", "CONNECT"),
            ("ftp://example.com/", "only http://"),
            ("example.com:80", "not an absolute"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://h:0/", "not a host"),
            ("http://h:99999/", "not a host"),
            ("http:///path", "not a host"),
            ("http://[::1/", "not a host"),
            ("http://[nope]/", "not a host"),
            ("http://a:1:2/", "not a host"),
            ("http://[::1]x80/", "not a host"),
            ("http://a b/", "not a host"),
            ("http://h/#frag", "fragment"),
        ];
        for (target, why) in cases {
            let e = parse_target(target).unwrap_err();
            assert!(e.contains(why), "{target}: {e}");
        }
    }

    #[test]
    fn the_request_head_is_rewritten_for_the_origin() {
        let h = head(
            "POST",
            "http://example.com:8080/up",
            1,
            &[
                ("Host", "evil.test"),
                ("Proxy-Authorization", "Basic eDp5"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Expect", "100-continue"),
                ("Transfer-Encoding", "chunked"),
                ("Accept", "*/*"),
                ("Via", "1.1 first"),
            ],
        );
        let target = parse_target(&h.target).unwrap();
        let (start, headers) = request_to_origin(&h, &target, Framing::Chunked);
        assert_eq!(start, "POST /up HTTP/1.1");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Host", "Accept", "Via", "Transfer-Encoding"]);
        assert_eq!(headers[0].1, "example.com:8080");
        assert_eq!(headers[2].1, "1.1 first, 1.1 proxy_server");
    }

    #[test]
    fn a_sized_request_keeps_its_length_and_a_1_0_one_says_so_in_via() {
        let h = head("PUT", "http://h/x", 0, &[("Content-Length", "5")]);
        let target = parse_target(&h.target).unwrap();
        let (start, headers) = request_to_origin(&h, &target, Framing::Length(5));
        assert_eq!(start, "PUT /x HTTP/1.1");
        assert!(headers.contains(&("Content-Length".into(), "5".into())));
        assert!(headers.contains(&("Via".into(), "1.0 proxy_server".into())));
    }

    fn response(version: u8, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            version,
            status: 200,
            reason: "OK".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn has(r: &ClientResponse, name: &str, value: &str) -> bool {
        r.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    }

    #[test]
    fn a_1_1_client_keeps_chunked_and_its_connection() {
        let origin = response(
            1,
            &[("Transfer-Encoding", "chunked"), ("Keep-Alive", "t=5")],
        );
        let r = response_to_client(&origin, Framing::Chunked, 1, true);
        assert_eq!(r.start_line, "HTTP/1.1 200 OK");
        assert_eq!(r.framing, Framing::Chunked);
        assert!(r.keep_alive);
        assert!(has(&r, "transfer-encoding", "chunked"));
        assert!(has(&r, "via", "1.1 proxy_server"));
        assert!(!r.headers.iter().any(|(n, _)| n == "Keep-Alive"));
        // Until-close from an old origin is chunked for a 1.1 client.
        let old = response(0, &[]);
        let r = response_to_client(&old, Framing::UntilClose, 1, true);
        assert_eq!((r.framing, r.keep_alive), (Framing::Chunked, true));
        assert!(has(&r, "via", "1.0 proxy_server"));
    }

    #[test]
    fn a_1_0_client_gets_an_unknown_length_raw_then_a_close() {
        let origin = response(1, &[("Transfer-Encoding", "chunked")]);
        let r = response_to_client(&origin, Framing::Chunked, 0, true);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        assert!(!r.headers.iter().any(|(n, _)| n == "Transfer-Encoding"));
        assert!(has(&r, "connection", "close"));
        // A sized body keeps a 1.0 client's keep-alive, and says so.
        let sized = response(1, &[("Content-Length", "3")]);
        let r = response_to_client(&sized, Framing::Length(3), 0, true);
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(3), true));
        assert!(has(&r, "connection", "keep-alive"));
        // A 1.0 client that did not ask for keep-alive is closed.
        let r = response_to_client(&sized, Framing::Length(3), 0, false);
        assert!(!r.keep_alive && has(&r, "connection", "close"));
    }

    #[test]
    fn a_head_answer_keeps_its_content_length() {
        let origin = response(1, &[("Content-Length", "1234")]);
        let r = response_to_client(&origin, Framing::Empty, 1, true);
        assert_eq!(r.framing, Framing::Empty);
        assert!(has(&r, "content-length", "1234"));
    }

    #[test]
    fn keep_alive_follows_the_client_request() {
        let cases = [
            (1, vec![], true),
            (1, vec![("Connection", "close")], false),
            (0, vec![], false),
            (0, vec![("Connection", "Keep-Alive")], true),
        ];
        for (version, headers, keep) in cases {
            let h = head("GET", "http://h/", version, &headers);
            assert_eq!(h.keep_alive(), keep, "1.{version} {headers:?}");
        }
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(idempotent(m));
        }
        for m in ["POST", "PATCH", "get"] {
            assert!(!idempotent(m));
        }
    }
}

/// The whole path on loopback: a client, the proxy's handler on
/// `server::run`, and an origin on `server::run` that echoes what it got.
#[cfg(test)]
mod loopback {
    use std::io::{BufReader, Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Duration;

    use clap::Parser;
    use may::net::TcpListener;
    use may_patterns::http::{header, read_request, read_response, write_response};
    use may_patterns::http::{ChunkedWriter, Limits};
    use may_patterns::runtime::configure_for_tests;
    use may_patterns::server::{self, Conn, Report};
    use may_patterns::shutdown::Shutdown;

    use crate::cli::Args;
    use crate::handler::{self, Settings, Stats};
    use crate::resolve::Resolver;

    /// What the origin sends to a `GET /chunked` without a body.
    fn page() -> Vec<u8> {
        (0..50_000u32).map(|i| (i % 251) as u8).collect()
    }

    /// Echo each request's body (`/chunked`: in chunks of 3000 bytes;
    /// otherwise with a Content-Length), with the Host and Via it saw.
    fn echo_origin(conn: Conn) {
        let limits = Limits {
            body_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut reader = BufReader::new(conn);
        while let Ok(Some(request)) = read_request(&mut reader, &limits) {
            let seen = |name| header(&request.headers, name).unwrap_or("-").to_owned();
            let (host, via, auth) = (seen("host"), seen("via"), seen("proxy-authorization"));
            let out = reader.get_mut();
            let body = match request.body.is_empty() {
                true => page(),
                false => request.body.clone(),
            };
            let extra = [
                ("X-Seen-Host", &*host),
                ("X-Seen-Via", &via),
                ("X-Seen-Auth", &auth),
            ];
            let sent = match request.target.as_str() {
                "/chunked" => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Seen-Host: {host}\r\n\r\n"
                    );
                    let mut chunked = ChunkedWriter::new(Vec::new());
                    body.chunks(3000)
                        .for_each(|c| chunked.write_all(c).unwrap());
                    let mut wire = head.into_bytes();
                    wire.extend(chunked.finish().unwrap());
                    out.write_all(&wire).and_then(|()| out.flush())
                }
                _ => write_response(out, 200, "OK", "application/octet-stream", &extra, &body),
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// Start `server::run` with `handler` on a thread.
    fn start(
        handler: impl Fn(Conn) + Send + Sync + 'static,
    ) -> (
        std::net::SocketAddr,
        Shutdown,
        std::thread::JoinHandle<std::io::Result<Report>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            server::run(listener, &stop, server::Config::default(), handler)
        });
        (addr, shutdown, thread)
    }

    fn settings() -> Settings {
        let args = Args::try_parse_from(["proxy_server", "--allow-dest", "127.0.0.1/32"]).unwrap();
        Settings {
            policy: args.policy(),
            users: None,
            connect_timeout: args.connect_timeout(),
            idle_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            resolver: Resolver::new(args.dns()),
            access_log: None,
        }
    }

    fn chunked_body(body: &[u8], piece: usize) -> Vec<u8> {
        let mut chunked = ChunkedWriter::new(Vec::new());
        body.chunks(piece)
            .for_each(|c| chunked.write_all(c).unwrap());
        chunked.finish().unwrap()
    }

    #[test]
    fn bodies_arrive_intact_and_the_origin_connection_is_reused() {
        configure_for_tests();
        let (origin, origin_stop, origin_thread) = start(echo_origin);
        let stats = std::sync::Arc::new(Stats::default());
        let counted = stats.clone();
        let proxy_settings = settings();
        let (proxy, proxy_stop, proxy_thread) =
            start(move |conn| handler::serve(conn, &proxy_settings, &counted));

        let mut client = StdStream::connect(proxy).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let up: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
        let mut wire = format!(
            "POST http://{origin}/chunked HTTP/1.1\r\nHost: wrong.test\r\n\
             Proxy-Authorization: Basic eDp5\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        wire.extend(chunked_body(&up, 7000));
        wire.extend(
            format!(
                "PUT http://{origin}/sized HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                up.len()
            )
            .into_bytes(),
        );
        wire.extend(&up);
        client.write_all(&wire).unwrap(); // two requests, pipelined
        let limits = Limits {
            body_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut answers = BufReader::new(client.try_clone().unwrap());
        let chunked = read_response(&mut answers, &limits).unwrap();
        assert_eq!(chunked.status, 200);
        assert_eq!(
            header(&chunked.headers, "transfer-encoding"),
            Some("chunked")
        );
        assert_eq!(
            header(&chunked.headers, "x-seen-host"),
            Some(&*origin.to_string())
        );
        assert!(chunked.body == up, "the chunked body is intact both ways");
        let sized = read_response(&mut answers, &limits).unwrap();
        let length = up.len().to_string();
        assert_eq!(header(&sized.headers, "content-length"), Some(&*length));
        assert_eq!(
            header(&sized.headers, "x-seen-via"),
            Some("1.1 proxy_server")
        );
        assert_eq!(header(&sized.headers, "x-seen-auth"), Some("-"));
        assert!(sized.body == up, "the sized body is intact both ways");

        // An HTTP/1.0 client, on a new connection: the chunked answer comes
        // raw and ends with the close; the origin connection is reused.
        let mut old = StdStream::connect(proxy).unwrap();
        old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(old, "GET http://{origin}/chunked HTTP/1.0\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        old.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&raw[..split]);
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "{head}"
        );
        assert!(raw[split..] == page(), "the body raw, to the close");

        drop((client, answers));
        proxy_stop.trigger();
        proxy_thread.join().unwrap().unwrap();
        origin_stop.trigger();
        let origin_report = origin_thread.join().unwrap().unwrap();
        assert_eq!(origin_report.accepted, 1, "one origin connection for all");
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((n(&stats.forwarded), n(&stats.origin_reused)), (3, 2));
    }

    /// Answer the first request on each connection; read the next and
    /// close without a word, as an origin does that drops an idle
    /// keep-alive connection just as the proxy reuses it.
    fn one_answer_origin(conn: Conn) {
        let mut reader = BufReader::new(conn);
        let limits = Limits::default();
        if let Ok(Some(_)) = read_request(&mut reader, &limits) {
            let out = reader.get_mut();
            if write_response(out, 200, "OK", "text/plain", &[], b"answered").is_err() {
                return;
            }
        }
        let _ = read_request(&mut reader, &limits);
    }

    #[test]
    fn a_dead_pooled_connection_is_retried_only_for_an_idempotent_request() {
        configure_for_tests();
        let (origin, origin_stop, origin_thread) = start(one_answer_origin);
        let stats = std::sync::Arc::new(Stats::default());
        let counted = stats.clone();
        let proxy_settings = settings();
        let (proxy, proxy_stop, proxy_thread) =
            start(move |conn| handler::serve(conn, &proxy_settings, &counted));

        // One client connection, so each request starts after the one
        // before has put its origin connection back in the pool.
        let mut client = StdStream::connect(proxy).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            client,
            "GET http://{origin}/a HTTP/1.1\r\n\r\n\
             GET http://{origin}/b HTTP/1.1\r\n\r\n\
             POST http://{origin}/c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        )
        .unwrap();
        let mut answers = BufReader::new(client.try_clone().unwrap());
        let limits = Limits::default();
        let first = read_response(&mut answers, &limits).unwrap();
        assert_eq!((first.status, &first.body[..]), (200, &b"answered"[..]));
        let retried = read_response(&mut answers, &limits).unwrap();
        assert_eq!(
            (retried.status, &retried.body[..]),
            (200, &b"answered"[..]),
            "the GET went again on a fresh connection"
        );
        let post = read_response(&mut answers, &limits).unwrap();
        let body = String::from_utf8_lossy(&post.body);
        assert_eq!(post.status, 502, "a POST is never sent twice: {body}");
        assert!(body.contains("without an answer"), "{body}");

        drop((client, answers));
        proxy_stop.trigger();
        proxy_thread.join().unwrap().unwrap();
        origin_stop.trigger();
        let origin_report = origin_thread.join().unwrap().unwrap();
        assert_eq!(origin_report.accepted, 2, "the first, and the retry's");
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((n(&stats.origin_reused), n(&stats.origin_retried)), (2, 1));
    }

    #[test]
    fn a_quiet_keep_alive_client_is_closed_after_the_idle_timeout() {
        configure_for_tests();
        let (origin, origin_stop, origin_thread) = start(echo_origin);
        let idle = Duration::from_secs(1);
        let proxy_settings = Settings {
            idle_timeout: idle,
            ..settings()
        };
        let stats = Stats::default();
        let (proxy, proxy_stop, proxy_thread) =
            start(move |conn| handler::serve(conn, &proxy_settings, &stats));

        let mut client = StdStream::connect(proxy).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            client,
            "PUT http://{origin}/sized HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        )
        .unwrap();
        let mut answers = BufReader::new(client.try_clone().unwrap());
        let answer = read_response(&mut answers, &Limits::default()).unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"hi"[..]));
        let answered = std::time::Instant::now();
        let mut rest = Vec::new();
        answers.read_to_end(&mut rest).unwrap(); // until the proxy closes
        let waited = answered.elapsed();
        assert!(rest.is_empty(), "nothing more was sent");
        assert!(
            waited >= idle * 9 / 10 && waited < idle * 5,
            "closed {waited:?} after the answer, for an idle timeout of {idle:?}"
        );

        proxy_stop.trigger();
        proxy_thread.join().unwrap().unwrap();
        origin_stop.trigger();
        origin_thread.join().unwrap().unwrap();
    }
}
