//! Tests of the server side a proxy uses: request heads, forwarding
//! headers, body copies.

use std::io::{self, BufReader, ErrorKind, Write};

use super::*;

fn head(text: &str) -> io::Result<Option<RequestHead>> {
    read_request_head(&mut BufReader::new(text.as_bytes()), &Limits::default())
}

fn refused(text: &str) -> String {
    let e = head(text).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{text:?}: {e}");
    e.to_string()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Copy `wire` framed as `from` to a Vec framed as `to`, reading through a
/// `BufReader` of `capacity` bytes and a copy buffer of `buf` bytes.
fn copy(
    wire: &str,
    from: Framing,
    to: Framing,
    cap: u64,
    capacity: usize,
    buf: usize,
) -> io::Result<(u64, Vec<u8>)> {
    let mut reader = BufReader::with_capacity(capacity, wire.as_bytes());
    let mut out = Vec::new();
    let mut buf = vec![0; buf];
    let n = copy_body(
        &mut reader,
        from,
        &mut out,
        to,
        cap,
        &Limits::default(),
        &mut buf,
    )?;
    Ok((n, out))
}

#[test]
fn a_request_head_is_read_and_the_body_left_in_the_reader() {
    let wire = "POST http://h/a?b HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
    let mut reader = BufReader::new(wire.as_bytes());
    let h = read_request_head(&mut reader, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.method.as_str(), h.target.as_str(), h.version),
        ("POST", "http://h/a?b", 0)
    );
    assert_eq!(h.framing().unwrap(), Framing::Length(2));
    let mut rest = String::new();
    io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert_eq!(rest, "hi");
    assert_eq!(head("").unwrap(), None);
    let eof = head("GET / HTTP/1.1\r\nHost:").unwrap_err();
    assert_eq!(eof.kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn keep_alive_and_expect_follow_the_version() {
    let parse = |text: &str| head(text).unwrap().unwrap();
    assert!(parse("GET / HTTP/1.1\r\n\r\n").keep_alive());
    assert!(!parse("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").keep_alive());
    assert!(!parse("GET / HTTP/1.0\r\n\r\n").keep_alive());
    assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    assert!(parse("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expects_continue());
    assert!(!parse("PUT / HTTP/1.1\r\n\r\n").expects_continue());
    assert!(!parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue());
}

#[test]
fn every_smuggling_defence_holds_at_the_head() {
    let cases = [
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "disagree",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "bad Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "gzip is not supported",
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        // A space before the colon: some servers drop it, others the header.
        (
            "POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
            "malformed request",
        ),
        (
            "POST / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
            "obsolete line folding",
        ),
        (
            "POST / HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n",
            "obsolete line folding",
        ),
    ];
    for (text, why) in cases {
        let e = refused(text);
        assert!(e.contains(why), "{text:?}: {e}");
    }
    let same = head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(same.framing().unwrap(), Framing::Length(5));
}

#[test]
fn bad_chunks_are_refused_while_copying() {
    let overflow = format!("{}\r\n", "f".repeat(17));
    let cases: [(&str, &str); 4] = [
        (&overflow, "overflows"),
        ("zz\r\n", "bad chunk size line"),
        ("-1\r\nx\r\n0\r\n\r\n", "bad chunk size line"),
        ("3\r\nabcX\r\n0\r\n\r\n", "not followed by CRLF"),
    ];
    for (wire, why) in cases {
        let e = copy(wire, Framing::Chunked, Framing::Chunked, 100, 7, 7).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData, "{wire:?}");
        assert!(e.to_string().contains(why), "{wire:?}: {e}");
    }
}

#[test]
fn the_head_limits_hold() {
    let limits = Limits {
        head_bytes: 64,
        headers: 2,
        body_bytes: 4,
    };
    let read = |text: &str| read_request_head(&mut BufReader::new(text.as_bytes()), &limits);
    let fits = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(39));
    assert_eq!(fits.len(), 64);
    assert!(read(&fits).unwrap().is_some());
    let over = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(40));
    let e = read(&over).unwrap_err();
    assert!(e.to_string().contains("longer than 64"), "{e}");
    assert!(read("GET / HTTP/1.1\r\na: 1\r\nb: 2\r\n\r\n")
        .unwrap()
        .is_some());
    let e = read("GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n").unwrap_err();
    assert!(e.to_string().contains("more than 2 headers"), "{e}");
}

#[test]
fn hop_by_hop_headers_go_including_those_connection_names() {
    let mut headers = pairs(&[
        ("Host", "h"),
        ("Connection", "keep-alive, X-Secret"),
        ("connection", "x-other"),
        ("X-Secret", "1"),
        ("X-Other", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic eA=="),
        ("Proxy-Authenticate", "Basic"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("Content-Length", "3"),
        ("X-Kept", "3"),
    ]);
    remove_hop_by_hop(&mut headers);
    assert_eq!(
        headers,
        pairs(&[("Host", "h"), ("Content-Length", "3"), ("X-Kept", "3")])
    );
}

#[test]
fn via_is_appended_in_order() {
    let mut headers = pairs(&[("Host", "h")]);
    append_via(&mut headers, 1, "proxy");
    assert_eq!(header(&headers, "via"), Some("1.1 proxy"));
    let mut headers = pairs(&[("via", "1.0 first")]);
    append_via(&mut headers, 0, "second");
    assert_eq!(headers, pairs(&[("via", "1.0 first, 1.0 second")]));
}

#[test]
fn set_framing_replaces_the_framing_headers() {
    let mut headers = pairs(&[("Content-Length", "9"), ("X", "1")]);
    set_framing(&mut headers, Framing::Chunked);
    assert_eq!(
        headers,
        pairs(&[("X", "1"), ("Transfer-Encoding", "chunked")])
    );
    set_framing(&mut headers, Framing::Length(4));
    assert_eq!(headers, pairs(&[("X", "1"), ("Content-Length", "4")]));
    set_framing(&mut headers, Framing::UntilClose);
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    set_framing(&mut headers, Framing::Empty);
    assert_eq!(headers, pairs(&[("X", "1")]));
}

#[test]
fn heads_errors_and_continue_are_written_whole() {
    let mut out = Vec::new();
    write_head(
        &mut out,
        "GET / HTTP/1.1",
        &pairs(&[("Host", "h"), ("A", "b")]),
    )
    .unwrap();
    assert_eq!(out, b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n");
    let mut out = Vec::new();
    write_error(
        &mut out,
        407,
        "Proxy Authentication Required",
        &[("Proxy-Authenticate", "Basic")],
        "who?",
        true,
    )
    .unwrap();
    let answer = read_response(&mut BufReader::new(&out[..]), &Limits::default()).unwrap();
    assert_eq!((answer.status, answer.body.as_slice()), (407, &b"who?"[..]));
    assert_eq!(header(&answer.headers, "proxy-authenticate"), Some("Basic"));
    assert_eq!(header(&answer.headers, "connection"), Some("close"));
    let mut out = Vec::new();
    write_error(&mut out, 502, "Bad Gateway", &[], "", false).unwrap();
    let answer = read_response(&mut BufReader::new(&out[..]), &Limits::default()).unwrap();
    assert_eq!(header(&answer.headers, "connection"), None);
    let mut out = Vec::new();
    write_continue(&mut out).unwrap();
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
}

/// An interim answer before the real one, as an upstream sends it after
/// `Expect: 100-continue`: the proxy gets the final head and its version.
#[test]
fn read_response_head_gives_a_proxy_the_final_head() {
    let wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\nContent-Length: 1\r\n\r\nx";
    let mut reader = BufReader::new(wire.as_bytes());
    let h = read_response_head(&mut reader, &Limits::default()).unwrap();
    assert_eq!((h.version, h.status), (0, 201));
    let switching = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let h = read_response_head(
        &mut BufReader::new(switching.as_bytes()),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(h.status, 101);
}

#[test]
fn chunked_writer_writes_one_chunk_per_write() {
    let mut w = ChunkedWriter::new(Vec::new());
    w.write_all(b"hello, world!!!!").unwrap();
    assert_eq!(w.write(b"").unwrap(), 0);
    w.write_all(b"x").unwrap();
    let out = w.finish().unwrap();
    assert_eq!(out, b"10\r\nhello, world!!!!\r\n1\r\nx\r\n0\r\n\r\n");
}

const CHUNKED: &str = "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 1\r\n\r\n";

#[test]
fn a_chunked_body_is_rechunked_through_a_tiny_buffer() {
    for (capacity, buf) in [(7, 7), (3, 7), (7, 3), (1, 1), (8192, 16384)] {
        let (n, out) = copy(
            CHUNKED,
            Framing::Chunked,
            Framing::Chunked,
            100,
            capacity,
            buf,
        )
        .unwrap();
        assert_eq!(n, 12);
        let decoded = read_response(
            &mut BufReader::new(
                [
                    &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                    &out,
                ]
                .concat()
                .as_slice(),
            ),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(decoded.body, b"hello, world", "{capacity}/{buf}");
        // No piece is bigger than the copy buffer.
        assert!(!out.starts_with(b"c\r\n") || buf >= 12, "{out:?}");
    }
    let (_, out) = copy(CHUNKED, Framing::Chunked, Framing::Chunked, 100, 7, 7).unwrap();
    assert_eq!(out, b"5\r\nhello\r\n2\r\n, \r\n5\r\nworld\r\n0\r\n\r\n");
}

#[test]
fn a_sized_body_is_copied_raw_and_stops_at_its_end() {
    let wire = "0123456789abcdefNEXT";
    let mut reader = BufReader::with_capacity(7, wire.as_bytes());
    let mut out = Vec::new();
    let n = copy_body(
        &mut reader,
        Framing::Length(16),
        &mut out,
        Framing::Length(16),
        100,
        &Limits::default(),
        &mut [0; 7],
    )
    .unwrap();
    assert_eq!((n, out.as_slice()), (16, &b"0123456789abcdef"[..]));
    let mut rest = String::new();
    io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert_eq!(rest, "NEXT");
    let (n, out) = copy("abc", Framing::Length(3), Framing::Chunked, 100, 7, 2).unwrap();
    assert_eq!(
        (n, out.as_slice()),
        (3, &b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"[..])
    );
    let (n, out) = copy(CHUNKED, Framing::Chunked, Framing::UntilClose, 100, 7, 7).unwrap();
    assert_eq!((n, out.as_slice()), (12, &b"hello, world"[..]));
    let (n, out) = copy("", Framing::Empty, Framing::Empty, 100, 7, 7).unwrap();
    assert_eq!((n, out.len()), (0, 0));
}

#[test]
fn the_cap_and_the_announced_length_are_never_passed() {
    let exact = copy(CHUNKED, Framing::Chunked, Framing::Chunked, 12, 7, 7);
    assert_eq!(exact.unwrap().0, 12);
    let e = copy(CHUNKED, Framing::Chunked, Framing::Chunked, 11, 7, 7).unwrap_err();
    assert!(e.to_string().contains("body longer than 11 bytes"), "{e}");
    let e = copy(
        "0123456789",
        Framing::Length(10),
        Framing::Length(10),
        9,
        7,
        7,
    )
    .unwrap_err();
    assert!(e.to_string().contains("body longer than 9 bytes"), "{e}");
    // A chunked body longer than the length announced downstream stops
    // before its extra bytes are written.
    let e = copy(CHUNKED, Framing::Chunked, Framing::Length(5), 100, 7, 7).unwrap_err();
    assert!(e.to_string().contains("body longer than 5 bytes"), "{e}");
    let e = copy("abc", Framing::Length(3), Framing::Length(5), 100, 7, 7).unwrap_err();
    assert!(
        e.to_string().contains("3 bytes where 5 were announced"),
        "{e}"
    );
}

#[test]
fn a_short_body_is_an_unexpected_eof() {
    let cases = [
        ("0123", Framing::Length(10), Framing::Length(10)),
        ("5\r\nhel", Framing::Chunked, Framing::Chunked),
        ("5\r\nhello\r\n", Framing::Chunked, Framing::UntilClose),
    ];
    for (wire, from, to) in cases {
        let e = copy(wire, from, to, 100, 7, 7).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{wire:?}: {e}");
    }
}
