//! The small forward proxy both exercises start from, built from the
//! pieces of `may_patterns::http`: it reads an absolute-form request
//! (`GET http://host/path HTTP/1.1`), asks a [`Rule`] whether to forward
//! it, and if so sends it to the origin in origin form and streams the
//! answer back. An exercise writes only the rule.
//!
//! Names are looked up in a fixed table ([`Origins`]) rather than in DNS,
//! so the demos need no network and the proxy reaches only the origins the
//! demo started. Each request gets its own origin connection. A refusal
//! closes the client's connection, so a body the proxy did not read can
//! never be taken for the next request.

#[path = "loopback_server.rs"]
mod loopback_server;

use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use may_patterns::http::{
    self, append_via, copy_body, read_request_head, read_response, read_response_head,
    remove_hop_by_hop, response_framing, set_framing, write_continue, write_error, write_head,
    write_response, BodyReader, Framing, Limits, RequestHead, Response,
};
use may_patterns::server::{self, Conn};

use loopback_server::{start, Running};

/// A peer that sends nothing for this long is cut off.
const IDLE: Duration = Duration::from_secs(10);
/// The largest body passed either way.
const BODY_CAP: u64 = 16 * 1024 * 1024;
/// Each connection's buffer for bodies, on the heap.
const COPY_BUFFER: usize = 16 * 1024;
/// How this proxy names itself in `Via`.
const PSEUDONYM: &str = "exercise-proxy";

// ANCHOR: rule
/// Why a request is refused: the answer the client gets instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    /// Extra headers, such as `Retry-After`.
    pub headers: Vec<(String, String)>,
    /// Says which rule refused, for the person reading it.
    pub body: String,
}

/// What an exercise writes: asked once per request, before anything is
/// forwarded, with the client's address and the host it asked for (as
/// sent: any case, maybe a trailing dot).
pub trait Rule: Send + Sync + 'static {
    fn check(&self, client: IpAddr, host: &str) -> Result<(), Refusal>;
}
// ANCHOR_END: rule

/// The names the demo's origins answer to, each with the address its
/// port 80 stands for: the proxy's DNS.
pub struct Origins(Vec<(String, SocketAddr)>);

impl Origins {
    /// Every name in `names` at `addr`.
    pub fn all_at(names: &[&str], addr: SocketAddr) -> Origins {
        Origins(names.iter().map(|n| (n.to_string(), addr)).collect())
    }

    /// The address of `host`. DNS names are case-insensitive, and a
    /// trailing dot (the absolute form, `example.com.`) names the same host.
    pub fn lookup(&self, host: &str) -> Option<SocketAddr> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let found = self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(host));
        found.map(|(_, addr)| *addr)
    }
}

/// Host, port and origin-form path of an absolute `http://` target.
fn absolute_target(target: &str) -> Option<(&str, u16, String)> {
    let scheme = target.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &target[7..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = match path.starts_with('/') {
        true => path.to_owned(),
        false => format!("/{path}"),
    };
    // userinfo (`user@host`) is not allowed in an http URI (RFC 9110 4.2.4).
    if authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok().filter(|&p| p != 0)?),
        None => (authority, 80),
    };
    match host.is_empty() || host.contains(':') {
        true => None,
        false => Some((host, port, path)),
    }
}

/// Refuse, and close: what follows the head is not read.
fn refuse(out: &mut impl Write, refusal: &Refusal) -> io::Result<()> {
    let headers: Vec<(&str, &str)> = refusal
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let Refusal {
        status,
        reason,
        body,
        ..
    } = refusal;
    write_error(out, *status, reason, &headers, body, true)
}

fn plain(status: u16, reason: &'static str, body: &str) -> Refusal {
    Refusal {
        status,
        reason,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

/// One client connection: requests, one after another, until it closes,
/// one is refused, or one cannot be kept alive.
fn serve(conn: Conn, rule: &dyn Rule, origins: &Origins) -> io::Result<()> {
    let client = conn.peer().ip();
    conn.set_idle_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let (input, output) = conn.split()?;
    let mut input = BufReader::new(input);
    let mut output = BufWriter::with_capacity(COPY_BUFFER, output);
    let limits = Limits::default();
    let mut buf = vec![0; COPY_BUFFER];
    loop {
        let head = match read_request_head(&mut input, &limits) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return refuse(&mut output, &plain(400, "Bad Request", &e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let Some((host, port, path)) = absolute_target(&head.target) else {
            let why = "this proxy forwards absolute http:// URLs only";
            return refuse(&mut output, &plain(400, "Bad Request", why));
        };
        if let Err(refusal) = rule.check(client, host) {
            return refuse(&mut output, &refusal);
        }
        let Some(origin) = origins.lookup(host).filter(|_| port == 80) else {
            let why = "no such host here (the demo's origins serve port 80 only)";
            return refuse(&mut output, &plain(502, "Bad Gateway", why));
        };
        let keep = forward(
            &head,
            host,
            &path,
            origin,
            &mut input,
            &mut output,
            &mut buf,
        )?;
        if !keep {
            return Ok(());
        }
    }
}

/// Forward one request and its answer. `Ok(true)`: the client's
/// connection may carry the next request.
fn forward(
    head: &RequestHead,
    host: &str,
    path: &str,
    origin: SocketAddr,
    input: &mut BufReader<server::ReadHalf>,
    output: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<bool> {
    let limits = Limits::default();
    let upstream = match may_patterns::net::connect_timeout(&origin, IDLE) {
        Ok(upstream) => upstream,
        Err(_) => {
            refuse(
                output,
                &plain(502, "Bad Gateway", "the origin did not answer"),
            )?;
            return Ok(false);
        }
    };
    upstream.set_read_timeout(Some(IDLE))?;
    upstream.set_write_timeout(Some(IDLE))?;
    let mut from = BufReader::new(upstream.try_clone()?);
    let mut to = BufWriter::with_capacity(COPY_BUFFER, upstream);
    let framing = head.framing()?;
    let mut headers = head.headers.clone();
    remove_hop_by_hop(&mut headers);
    // Allowed and connected: the proxy meets `Expect: 100-continue` itself.
    if head.expects_continue() {
        write_continue(output)?;
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
    }
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
    headers.insert(0, ("Host".to_owned(), host.to_owned()));
    append_via(&mut headers, head.version, PSEUDONYM);
    set_framing(&mut headers, framing);
    headers.push(("Connection".to_owned(), "close".to_owned()));
    write_head(
        &mut to,
        &format!("{} {path} HTTP/1.1", head.method),
        &headers,
    )?;
    copy_body(input, framing, &mut to, framing, BODY_CAP, &limits, buf)?;
    to.flush()?; // an empty body wrote nothing, so nothing flushed the head

    let mut answer = read_response_head(&mut from, &limits)?;
    let from_framing = response_framing(&head.method, answer.status, &answer.headers)?;
    // HTTP/1.0 knows no chunked: a body of unknown length goes raw, then close.
    let to_framing = match from_framing {
        Framing::Chunked | Framing::UntilClose if head.version == 0 => Framing::UntilClose,
        Framing::UntilClose => Framing::Chunked,
        other => other,
    };
    let keep = head.keep_alive() && to_framing != Framing::UntilClose;
    remove_hop_by_hop(&mut answer.headers);
    if from_framing != Framing::Empty {
        set_framing(&mut answer.headers, to_framing);
    }
    if to_framing == Framing::UntilClose {
        answer
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("transfer-encoding"));
    }
    append_via(&mut answer.headers, answer.version, PSEUDONYM);
    if !keep {
        answer
            .headers
            .push(("Connection".to_owned(), "close".to_owned()));
    }
    let status_line = format!("HTTP/1.1 {} {}", answer.status, answer.reason);
    write_head(output, &status_line, &answer.headers)?;
    copy_body(
        &mut from,
        from_framing,
        output,
        to_framing,
        BODY_CAP,
        &limits,
        buf,
    )?;
    output.flush()?;
    Ok(keep)
}

/// A peer that left is no failure worth a line on stderr.
const PEER_LEFT: &[ErrorKind] = &[ErrorKind::UnexpectedEof];

/// The proxy, deciding by `rule`, reaching the names in `origins`.
pub fn start_proxy(rule: impl Rule, origins: Origins) -> io::Result<Running> {
    let (rule, origins) = (Arc::new(rule), Arc::new(origins));
    start("proxy:", PEER_LEFT, move |conn| {
        serve(conn, &*rule, &origins)
    })
}

/// An origin that answers every request with `hello from <Host><path>`.
pub fn start_origin() -> io::Result<Running> {
    start("origin:", PEER_LEFT, |conn| {
        conn.set_idle_timeout(Some(IDLE))?;
        conn.set_write_timeout(Some(IDLE))?;
        let (input, mut output) = conn.split()?;
        let mut input = BufReader::new(input);
        let limits = Limits::default();
        while let Some(head) = read_request_head(&mut input, &limits)? {
            let mut body = BodyReader::new(&mut input, head.framing()?, BODY_CAP, &limits);
            io::copy(&mut body, &mut io::sink())?;
            let host = http::header(&head.headers, "host").unwrap_or_default();
            let text = format!("hello from {host}{}", head.target);
            write_response(&mut output, 200, "OK", "text/plain", &[], text.as_bytes())?;
            if !head.keep_alive() {
                break;
            }
        }
        Ok(())
    })
}

/// `GET url` through the proxy at `proxy`, on a connection of its own.
pub fn get(proxy: SocketAddr, url: &str) -> io::Result<Response> {
    let mut stream = may_patterns::net::connect(proxy)?;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let request = format!("GET {url} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let answer = read_response(&mut reader, &Limits::default())?;
    // A refusal closes the connection; nothing may follow the answer.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    match rest.is_empty() {
        true => Ok(answer),
        false => Err(io::Error::new(
            ErrorKind::InvalidData,
            "bytes after the answer",
        )),
    }
}

#[cfg(test)]
mod forwarder_tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn absolute_targets_are_split_into_host_port_and_path() {
        let path = |p: &str| p.to_owned();
        assert_eq!(
            absolute_target("http://a.example/x?y"),
            Some(("a.example", 80, path("/x?y")))
        );
        assert_eq!(
            absolute_target("HTTP://a.example:8080"),
            Some(("a.example", 8080, path("/")))
        );
        assert_eq!(
            absolute_target("http://a.example?q"),
            Some(("a.example", 80, path("/?q")))
        );
        for bad in [
            "/x",
            "https://a/",
            "http://",
            "http://u@a/",
            "http://a:0/",
            "http://a:x/",
        ] {
            assert_eq!(absolute_target(bad), None, "{bad}");
        }
    }

    struct Anyone;

    impl Rule for Anyone {
        fn check(&self, _client: IpAddr, _host: &str) -> Result<(), Refusal> {
            Ok(())
        }
    }

    #[test]
    fn a_request_goes_out_in_origin_form_and_other_targets_are_refused() {
        may_patterns::runtime::configure_for_tests();
        let origin = start_origin().unwrap();
        let origins = Origins::all_at(&["a.example"], origin.addr);
        let proxy = start_proxy(Anyone, origins).unwrap();
        let ok = get(proxy.addr, "http://a.example/x?y").unwrap();
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, &b"hello from a.example/x?y"[..])
        );
        assert_eq!(http::header(&ok.headers, "via"), Some("1.1 exercise-proxy"));
        assert_eq!(get(proxy.addr, "/x").unwrap().status, 400);
        assert_eq!(get(proxy.addr, "http://b.example/").unwrap().status, 502);
        assert_eq!(
            get(proxy.addr, "http://a.example:8080/").unwrap().status,
            502
        );
        proxy.stop().unwrap();
        origin.stop().unwrap();
    }

    #[test]
    fn the_proxy_answers_expect_100_continue_then_forwards_the_body() {
        may_patterns::runtime::configure_for_tests();
        let origin = start_origin().unwrap();
        let origins = Origins::all_at(&["a.example"], origin.addr);
        let proxy = start_proxy(Anyone, origins).unwrap();
        let mut upload = may_patterns::net::connect(proxy.addr).unwrap();
        upload.set_read_timeout(Some(IDLE)).unwrap();
        let head = "POST http://a.example/up HTTP/1.1\r\nHost: a.example\r\n\
                    Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
        upload.write_all(head.as_bytes()).unwrap();
        let mut answers = BufReader::new(upload.try_clone().unwrap());
        let mut interim = String::new();
        while !interim.ends_with("\r\n\r\n") {
            assert_ne!(answers.read_line(&mut interim).unwrap(), 0, "{interim:?}");
        }
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        upload.write_all(b"hello").unwrap();
        let done = read_response(&mut answers, &Limits::default()).unwrap();
        assert_eq!(done.body, b"hello from a.example/up");
        proxy.stop().unwrap();
        origin.stop().unwrap();
    }

    #[test]
    fn names_are_looked_up_case_insensitively_without_a_trailing_dot() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let origins = Origins::all_at(&["a.example"], addr);
        assert_eq!(origins.lookup("A.Example."), Some(addr));
        assert_eq!(origins.lookup("b.example"), None);
    }
}
