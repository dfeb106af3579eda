//! CONNECT tunnels: curl fetching HTTPS through one, nc speaking raw TCP
//! through one, a half-close passed on, an idle tunnel closed.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::clients::{self, curl_ok, nc};
use crate::origins::{self, eof_line, TlsOrigin};
use crate::proxy::Proxy;

const BODY: &str = "hello from the TLS origin\n";

/// Flags that let the proxy reach an origin on loopback port `port`
/// (loopback is refused by default, and CONNECT goes to 443 only).
pub fn reach(port: &str) -> Vec<&str> {
    vec!["--allow-dest", "127.0.0.1/32", "--allow-connect-port", port]
}

#[test]
fn curl_fetches_https_through_a_connect_tunnel() {
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let proxy = Proxy::start(&reach(&port));
    let url = format!("https://localhost:{port}/");
    let ca = origin.ca_file.to_str().unwrap();
    let body = curl_ok(&["-sS", "-x", &proxy.url(), "--cacert", ca, &url]);
    assert_eq!(body, BODY);
    let summary = proxy.stop();
    assert_eq!(summary["tunnels"], 1, "{summary}");
    assert!(
        summary["bytes_down"].as_u64().unwrap() > BODY.len() as u64,
        "the TLS records came back through the tunnel: {summary}"
    );
}

#[test]
fn nc_speaks_raw_tcp_through_a_connect_tunnel() {
    let echo = origins::echo();
    let port = echo.port().to_string();
    let proxy = Proxy::start(&reach(&port));
    let said = "hello through nc\n";
    // -N: shut the socket's write side at the end of stdin, so the echo
    // sees EOF through the tunnel and answers, then closes.
    let out = nc(
        &[
            "-N",
            "-X",
            "connect",
            "-x",
            &proxy.addr.to_string(),
            "127.0.0.1",
            &port,
        ],
        said.as_bytes(),
    );
    assert!(
        out.status.success(),
        "nc: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let heard = String::from_utf8(out.stdout).unwrap();
    assert_eq!(heard, format!("{said}{}\n", eof_line(said.len())));
    let summary = proxy.stop();
    assert_eq!(summary["tunnels"], 1, "{summary}");
    assert_eq!(summary["bytes_up"], said.len(), "{summary}");
}

/// The client sends a MiB and shuts its write side: the origin gets the
/// EOF only through the tunnel, answers after it, and the client still
/// reads every byte of the answer on its half-open socket.
#[test]
fn a_half_closed_tunnel_still_delivers_the_whole_answer() {
    let echo = origins::echo();
    let port = echo.port().to_string();
    let proxy = Proxy::start(&reach(&port));
    let mut stream = clients::connect(proxy.addr);
    write!(
        stream,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let (status, head) = clients::read_head(&mut stream).expect("an answer to CONNECT");
    assert_eq!(status, 200, "{head}");
    let payload: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    // The echo answers while the upload is still going: write on another
    // thread, so neither side waits on a full socket buffer.
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let upload = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let heard = clients::read_to_close(&mut stream);
    upload.join().unwrap();
    let mut want = payload;
    want.extend_from_slice(format!("{}\n", eof_line(want.len())).as_bytes());
    assert_eq!(
        heard.len(),
        want.len(),
        "bytes back through the half-closed tunnel"
    );
    assert!(heard == want, "the bytes back differ from those sent");
    proxy.stop();
}

#[test]
fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
    let echo = origins::echo();
    let port = echo.port().to_string();
    let mut args = reach(&port);
    // Two seconds, not one: the tunnel's first read of "ping" must come
    // within the timeout, and this suite runs beside a 1 GiB transfer
    // through another proxy on the same two cores.
    args.extend(["--idle-timeout", "2"]);
    let proxy = Proxy::start(&args);
    let mut stream = clients::connect(proxy.addr);
    write!(stream, "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(clients::read_head(&mut stream).map(|a| a.0), Some(200));
    // The tunnel works, then nobody says anything.
    stream.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    std::io::Read::read_exact(&mut stream, &mut back).unwrap();
    assert_eq!(&back, b"ping");
    let waited = clients::time_to_close(&mut stream);
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "an idle tunnel with --idle-timeout 2 closed after {waited:?}"
    );
    let summary = proxy.stop();
    assert_eq!(summary["tunnels"], 1, "{summary}");
}

/// Ctrl-C while a tunnel and a keep-alive client are open: both are shut
/// and the proxy exits with its summary at once, not after the idle
/// timeout (300 s by default).
#[test]
fn ctrl_c_with_a_tunnel_and_a_keep_alive_client_open_stops_at_once() {
    let echo = origins::echo();
    let http = origins::http();
    let port = echo.port().to_string();
    let proxy = Proxy::start(&reach(&port));
    let mut tunnel = clients::connect(proxy.addr);
    write!(tunnel, "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(clients::read_head(&mut tunnel).map(|a| a.0), Some(200));
    let mut keep_alive = clients::connect(proxy.addr);
    let target = format!("http://127.0.0.1:{}/pattern/8", http.port());
    write!(
        keep_alive,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    assert_eq!(clients::read_head(&mut keep_alive).map(|a| a.0), Some(200));
    let mut body = [0u8; 8];
    std::io::Read::read_exact(&mut keep_alive, &mut body).unwrap();
    let started = Instant::now();
    let summary = proxy.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    // Both clients were closed, not left hanging.
    clients::read_to_close(&mut tunnel);
    assert!(clients::read_to_close(&mut keep_alive).is_empty());
    assert_eq!(summary["tunnels"], 1, "{summary}");
    assert_eq!(summary["forwarded"], 1, "{summary}");
}
