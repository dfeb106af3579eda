//! Access control: a destination on loopback without `--allow-dest`, a
//! port CONNECT may not open, a client outside `--allow-client`, and
//! Basic proxy authentication with `--auth-file`. Every refusal is a
//! complete answer and none reaches the origin.

use std::io::Write;

use crate::clients::{self, curl, curl_ok};
use crate::origins::TlsOrigin;
use crate::proxy::Proxy;
use crate::tunnels::reach;

const BODY: &str = "behind the proxy\n";

fn connect_request(authority: &str) -> Vec<u8> {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes()
}

#[test]
fn a_loopback_destination_is_refused_without_allow_dest() {
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    // The port is allowed; the destination (loopback) is not.
    let proxy = Proxy::start(&["--allow-connect-port", &port]);
    for authority in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let answer = clients::exchange(proxy.addr, &connect_request(&authority));
        assert_eq!(answer.status, 403, "CONNECT {authority}: {}", answer.head);
        answer.assert_complete();
        answer.assert_says("--allow-dest");
    }
    // curl says so too, and gets nothing through.
    let url = format!("https://localhost:{port}/");
    let ca = origin.ca_file.to_str().unwrap();
    let out = curl(&["-sS", "-x", &proxy.url(), "--cacert", ca, &url]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("403"),
        "curl: {said}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        origin.origin.accepted(),
        0,
        "a refused tunnel reached the origin"
    );
    let summary = proxy.stop();
    assert_eq!(summary["denied"], 3, "{summary}");
    assert_eq!(summary["tunnels"], 0, "{summary}");
}

/// SMTP's port, tunnelled or as plain HTTP: the answer is 403 (refused by
/// rule) and not 502 (tried, nothing listens), so the port was refused
/// before any connect.
#[test]
fn port_25_is_refused() {
    let proxy = Proxy::start(&["--allow-dest", "127.0.0.1/32"]);
    let answer = clients::exchange(proxy.addr, &connect_request("127.0.0.1:25"));
    assert_eq!(answer.status, 403, "{}", answer.head);
    answer.assert_complete();
    answer.assert_says("--allow-connect-port");
    let plain = b"GET http://127.0.0.1:25/ HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n";
    let answer = clients::exchange(proxy.addr, plain);
    assert_eq!(answer.status, 403, "{}", answer.head);
    answer.assert_complete();
    answer.assert_says("--deny-port");
    let summary = proxy.stop();
    assert_eq!(summary["denied"], 2, "{summary}");
    assert_eq!(summary["upstream_failed"], 0, "{summary}");
}

#[test]
fn a_client_outside_allow_client_is_refused() {
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let mut args = reach(&port);
    // The test's own address, 127.0.0.1, is not in it.
    args.extend(["--allow-client", "10.0.0.0/8"]);
    let proxy = Proxy::start(&args);
    let answer = clients::exchange(proxy.addr, &connect_request(&format!("127.0.0.1:{port}")));
    assert_eq!(answer.status, 403, "{}", answer.head);
    answer.assert_complete();
    answer.assert_says("--allow-client");
    assert_eq!(origin.origin.accepted(), 0);
    let summary = proxy.stop();
    assert_eq!(summary["denied"], 1, "{summary}");
}

#[test]
fn a_wrong_proxy_password_gets_407_and_the_right_one_passes() {
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut file = std::fs::File::create(&users).unwrap();
    writeln!(file, "# proxy users\nalice:s3cret\nbob:hunter2").unwrap();
    let mut args = reach(&port);
    args.extend(["--auth-file", users.to_str().unwrap()]);
    let proxy = Proxy::start(&args);

    // No credentials: 407, and the header that tells a client what to send.
    let answer = clients::exchange(proxy.addr, &connect_request(&format!("127.0.0.1:{port}")));
    assert_eq!(answer.status, 407, "{}", answer.head);
    answer.assert_complete();
    assert_eq!(
        answer.header("proxy-authenticate"),
        Some("Basic realm=\"proxy_server\""),
        "{}",
        answer.head
    );

    let url = format!("https://localhost:{port}/");
    let ca = origin.ca_file.to_str().unwrap();
    let with = |user: &str| {
        vec![
            "-sS".to_owned(),
            "-x".to_owned(),
            proxy.url(),
            "--proxy-user".to_owned(),
            user.to_owned(),
            "--cacert".to_owned(),
            ca.to_owned(),
            url.clone(),
        ]
    };
    let wrong = with("alice:wrong");
    let out = curl(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("407"),
        "curl: {said}"
    );
    assert_eq!(origin.origin.accepted(), 0);

    let right = with("alice:s3cret");
    let body = curl_ok(&right.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(body, BODY);
    let summary = proxy.stop();
    assert_eq!(summary["auth_failed"], 2, "{summary}");
    assert_eq!(summary["tunnels"], 1, "{summary}");
}
