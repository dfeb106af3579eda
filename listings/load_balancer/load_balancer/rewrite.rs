//! What this hop changes in the messages it forwards (RFC 9110 7.6): the
//! request's target and headers on the way to a backend, the answer's
//! framing on the way back.

use std::io;
use std::net::SocketAddr;

use may_patterns::http::{
    append_via, header, remove_hop_by_hop, set_framing, write_head, Framing, RequestHead,
};

/// The pseudonym this hop adds to `Via`.
pub const VIA: &str = "load_balancer";

/// The request as it goes to every backend tried.
pub struct Outgoing<'a> {
    pub head: &'a RequestHead,
    /// The start line and headers, ready to write.
    pub bytes: Vec<u8>,
    pub framing: Framing,
}

impl<'a> Outgoing<'a> {
    /// `head` rewritten for a backend: origin-form `target`, hop-by-hop
    /// headers removed (with `Expect`, which this hop answers), `Via` and
    /// `X-Forwarded-For` (`client`'s address) appended, `Host` added if
    /// the client sent none (HTTP/1.0) as `local`, where it reached us.
    pub fn new(
        head: &'a RequestHead,
        target: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> io::Result<Self> {
        let framing = head.framing()?;
        let mut headers = head.headers.clone();
        remove_hop_by_hop(&mut headers);
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
        append_via(&mut headers, head.version, VIA);
        append_forwarded_for(&mut headers, client);
        if header(&headers, "host").is_none() {
            headers.push(("Host".to_owned(), local.to_string()));
        }
        set_framing(&mut headers, framing);
        let mut bytes = Vec::with_capacity(512);
        write_head(
            &mut bytes,
            &format!("{} {target} HTTP/1.1", head.method),
            &headers,
        )?;
        Ok(Outgoing {
            head,
            bytes,
            framing,
        })
    }

    pub fn has_body(&self) -> bool {
        self.framing != Framing::Empty
    }
}

/// Add the client's address to the last `X-Forwarded-For`, or add one.
fn append_forwarded_for(headers: &mut Vec<(String, String)>, client: SocketAddr) {
    let ip = client.ip().to_canonical().to_string();
    match headers
        .iter_mut()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
    {
        Some((_, value)) => *value = format!("{value}, {ip}"),
        None => headers.push(("X-Forwarded-For".to_owned(), ip)),
    }
}

/// How the answer's body goes to the client, its headers set to match:
/// as it came with a length or none at all; chunked for an HTTP/1.1 client
/// otherwise; raw until close for an HTTP/1.0 one, which knows no chunks.
pub fn client_framing(from: Framing, version: u8, headers: &mut Vec<(String, String)>) -> Framing {
    match from {
        // A HEAD or 304 answer keeps its Content-Length: it describes the
        // body a GET would get.
        Framing::Empty => Framing::Empty,
        Framing::Length(n) => {
            set_framing(headers, from);
            Framing::Length(n)
        }
        Framing::Chunked | Framing::UntilClose if version >= 1 => {
            set_framing(headers, Framing::Chunked);
            Framing::Chunked
        }
        Framing::Chunked | Framing::UntilClose => {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
            Framing::UntilClose
        }
    }
}

/// The request target as the backend gets it: origin-form (`/path?q`).
/// An absolute-form target (`http://host/path`, RFC 9112 3.2.2) becomes
/// its path; `*` is kept for `OPTIONS`. `None`: not something to forward.
pub fn origin_form(method: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_owned());
    }
    if target == "*" && method.eq_ignore_ascii_case("OPTIONS") {
        return Some(target.to_owned());
    }
    let lower = target.get(..8).map(str::to_ascii_lowercase)?;
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return None;
    };
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_at == 0 {
        return None; // no authority
    }
    Some(match &rest[path_at..] {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::LIMITS;

    #[test]
    fn targets_become_origin_form() {
        assert_eq!(origin_form("GET", "/a?b=1").as_deref(), Some("/a?b=1"));
        assert_eq!(
            origin_form("GET", "http://h:8/x/y").as_deref(),
            Some("/x/y")
        );
        assert_eq!(origin_form("GET", "HTTP://h").as_deref(), Some("/"));
        assert_eq!(origin_form("GET", "http://h?q").as_deref(), Some("/?q"));
        assert_eq!(origin_form("OPTIONS", "*").as_deref(), Some("*"));
        assert_eq!(origin_form("GET", "*"), None);
        assert_eq!(origin_form("CONNECT", "h:443"), None);
        assert_eq!(origin_form("GET", "http:///x"), None);
    }

    fn head(text: &str) -> RequestHead {
        may_patterns::http::read_request_head(&mut text.as_bytes(), &LIMITS)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_outgoing_head_drops_hop_by_hop_and_adds_via_and_forwarded_for() {
        let h = head(
            "POST /u HTTP/1.1\r\nHost: site\r\nConnection: close, X-Trace\r\nX-Trace: 1\r\n\
             X-Forwarded-For: 10.0.0.9\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        let (client, local) = (
            "10.1.2.3:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let out = Outgoing::new(&h, "/u", client, local).unwrap();
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.starts_with("POST /u HTTP/1.1\r\n"), "{text}");
        for gone in ["Connection", "X-Trace", "Expect"] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
        for kept in [
            "Host: site\r\n",
            "Via: 1.1 load_balancer\r\n",
            "X-Forwarded-For: 10.0.0.9, 10.1.2.3\r\n",
            "Content-Length: 3\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} missing from {text}");
        }
        assert_eq!(out.framing, Framing::Length(3));
        let old = head("GET / HTTP/1.0\r\n\r\n");
        let out = Outgoing::new(&old, "/", client, local).unwrap();
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.contains("Host: 127.0.0.1:80\r\n") && text.contains("Via: 1.0 "));
    }

    #[test]
    fn answers_are_reframed_for_the_client() {
        let mut h = vec![("Transfer-Encoding".to_owned(), "chunked".to_owned())];
        assert_eq!(
            client_framing(Framing::Chunked, 1, &mut h),
            Framing::Chunked
        );
        let mut h = vec![];
        assert_eq!(
            client_framing(Framing::UntilClose, 1, &mut h),
            Framing::Chunked
        );
        assert_eq!(h, [("Transfer-Encoding".to_owned(), "chunked".to_owned())]);
        let mut h = vec![];
        assert_eq!(
            client_framing(Framing::Chunked, 0, &mut h),
            Framing::UntilClose
        );
        assert!(h.is_empty(), "an HTTP/1.0 client is sent no chunks");
        let mut h = vec![("Content-Length".to_owned(), "10".to_owned())];
        assert_eq!(client_framing(Framing::Empty, 1, &mut h), Framing::Empty);
        assert_eq!(h.len(), 1, "a HEAD answer keeps its length");
    }
}
