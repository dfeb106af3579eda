//! Limits a broken or greedy client meets: a head over the size limit,
//! too many headers, a malformed head, one connection past
//! `--max-connections`. After each the proxy still serves.

use crate::clients::{self, curl_ok};
use crate::origins::TlsOrigin;
use crate::proxy::Proxy;
use crate::tunnels::reach;

pub const BODY: &str = "still serving\n";

/// The proxy serves a good request: curl through a tunnel to `origin`.
pub fn still_serves(proxy: &Proxy, origin: &TlsOrigin) {
    let url = format!("https://localhost:{}/", origin.port());
    let ca = origin.ca_file.to_str().unwrap();
    assert_eq!(
        curl_ok(&["-sS", "-x", &proxy.url(), "--cacert", ca, &url]),
        BODY
    );
}

#[test]
fn bad_heads_get_400_or_431_and_a_close() {
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let proxy = Proxy::start(&reach(&port));
    let connect = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n");
    let huge_header = format!("{connect}X-Padding: {}\r\n\r\n", "a".repeat(16 * 1024));
    let many_headers = format!(
        "{connect}{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: {i}\r\n"))
            .collect::<String>()
    );
    let bad = [
        ("a head over the size limit", huge_header),
        ("too many headers", many_headers),
        ("not HTTP", "HELLO THERE\r\n\r\n".to_owned()),
        (
            "a header without a colon",
            format!("{connect}No colon here\r\n\r\n"),
        ),
        (
            "a space before a colon",
            format!("{connect}Host : x\r\n\r\n"),
        ),
        (
            "a CONNECT target without a port",
            "CONNECT localhost HTTP/1.1\r\n\r\n".to_owned(),
        ),
    ];
    for (what, request) in &bad {
        let answer = clients::exchange(proxy.addr, request.as_bytes());
        assert!(
            matches!(answer.status, 400 | 431),
            "{what}: want 400 or 431, got {}",
            answer.head
        );
        answer.assert_complete();
    }
    assert_eq!(origin.origin.accepted(), 0, "a bad head reached the origin");
    still_serves(&proxy, &origin);
    let summary = proxy.stop();
    assert_eq!(summary["bad_requests"], bad.len(), "{summary}");
    assert_eq!(summary["tunnels"], 1, "{summary}");
}

#[test]
fn the_connection_past_max_connections_gets_503() {
    const MAX: usize = 3;
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let mut args = reach(&port);
    let max = MAX.to_string();
    args.extend(["--max-connections", &max]);
    let proxy = Proxy::start(&args);
    let before = proxy.open_fds();
    // Connections that say nothing: each holds a slot until the header
    // timeout (30 s by default, longer than this test).
    let held: Vec<_> = (0..MAX).map(|_| clients::connect(proxy.addr)).collect();
    proxy.wait_until("held every slot", |p| p.open_fds() >= before + MAX);
    let mut extra = clients::connect(proxy.addr);
    let (status, head) = clients::read_head(&mut extra).expect("an answer past the cap");
    let rest = clients::read_to_close(&mut extra);
    let answer = clients::Answer { status, head, rest };
    assert_eq!(answer.status, 503, "{}", answer.head);
    answer.assert_complete();
    answer.assert_says("--max-connections");
    drop(held);
    proxy.wait_until("freed the slots", |p| p.open_fds() <= before);
    still_serves(&proxy, &origin);
    let summary = proxy.stop();
    assert_eq!(summary["refused_full"], 1, "{summary}");
    assert_eq!(summary["accepted"], MAX + 1, "{summary}");
}
