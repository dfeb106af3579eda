//! Clients too slow to be served: a head trickled a byte a second.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clients;
use crate::limits::{still_serves, BODY};
use crate::origins::TlsOrigin;
use crate::proxy::Proxy;
use crate::tunnels::reach;

/// Slowloris: a head trickled a byte a second never ends, so only a
/// deadline on the whole head (not a timeout per read, which each byte
/// would reset) cuts it.
#[test]
fn a_head_sent_a_byte_a_second_is_cut_at_the_header_timeout() {
    const HEADER_TIMEOUT: u64 = 2;
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let mut args = reach(&port);
    let timeout = HEADER_TIMEOUT.to_string();
    args.extend(["--header-timeout", &timeout]);
    let proxy = Proxy::start(&args);
    let mut stream = clients::connect(proxy.addr);
    let mut trickle = stream.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let head = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let writer = std::thread::spawn(move || {
        for byte in head.bytes() {
            if stop.load(Ordering::SeqCst) || trickle.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1)); // the attack's own pace
        }
    });
    let waited = clients::time_to_close(&mut stream);
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let limit = Duration::from_secs(HEADER_TIMEOUT) + Duration::from_millis(1500);
    assert!(
        waited < limit,
        "a trickled head was cut after {waited:?}, want under {limit:?}"
    );
    still_serves(&proxy, &origin);
    proxy.stop();
}
