//! The head rewriting of plain HTTP through the proxy (RFC 9110 7.6,
//! RFC 9112 3.2.2): the absolute-form target (`GET http://host:port/path`)
//! parsed into where to connect and the origin-form path (`GET /path`);
//! the request head as the origin gets it, the answer's head as the client
//! gets it.
//!
//! What changes on the way: `Host` is set from the URL (a `Host` the
//! client sent is replaced, whatever it said); the hop-by-hop headers go
//! both ways, `Proxy-Authorization` with them; `Via` gets this hop both
//! ways; each body is framed again for the next hop. Requests always go
//! out as HTTP/1.1; an HTTP/1.0 client gets a body of unknown length raw,
//! then the connection closes (1.0 has no chunked).

use std::net::Ipv6Addr;

use may_patterns::http::{
    append_via, remove_hop_by_hop, set_framing, Framing, RequestHead, ResponseHead,
};

/// This hop's name in `Via`.
const VIA: &str = "proxy_server";

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
}
