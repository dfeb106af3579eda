//! Origins the proxy reaches, served by coroutines in the test's own
//! process on may sockets: an HTTPS server (rustls, certificate from a
//! throwaway CA that curl is told to trust), a TCP echo that says how
//! many bytes it got once its peer half-closes, one that never answers,
//! and an HTTP server that checks request bodies and sends long ones
//! (nginx can do neither).

use std::io::{self, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::net::{TcpListener, TcpStream};
use may_patterns::http::{read_request_head, write_continue, BodyReader, Limits};
use may_patterns::runtime::configure_for_tests;
use may_patterns::tls::{self, TestCa};

use crate::pattern::{Checker, Pattern};

/// A connection's coroutine that runs a rustls handshake: may's default
/// 32 KiB stack is too small for it in a debug build (MAY_NOTES measured
/// about 44 KiB), so 0x4000 words, 128 KiB.
const TLS_STACK_WORDS: usize = 0x4000;
/// A plain connection's coroutine: a copy loop over a heap buffer.
const PLAIN_STACK_WORDS: usize = 0x1000;
/// An HTTP connection's coroutine: httparse's header array and the body
/// reader's frames on top of the copy loop, in a debug build.
const HTTP_STACK_WORDS: usize = 0x2000;
/// The HTTP origin's read buffer and copy buffer, each.
const HTTP_BUF: usize = 16 * 1024;
/// An origin's reads fail after this long without a byte, so a test that
/// fails half-way leaves no coroutine parked for ever.
const ORIGIN_IDLE: Duration = Duration::from_secs(30);

/// A loopback listener whose accept loop runs `handle` in a new coroutine
/// per connection; stopped when dropped.
pub struct Origin {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Origin {
    pub fn serve(
        stack_words: usize,
        handle: impl Fn(TcpStream) -> io::Result<()> + Send + Sync + 'static,
    ) -> Origin {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stopping, counter) = (stop.clone(), accepted.clone());
        may::go!(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let handle = handle.clone();
                let builder = may::coroutine::Builder::new().stack_size(stack_words);
                let _ = may::go!(builder, move || {
                    let _ = stream.set_read_timeout(Some(ORIGIN_IDLE));
                    let _ = handle(stream);
                });
            }
        });
        Origin {
            addr,
            stop,
            accepted,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far: a refused request must not reach here.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag (a std socket: this runs
        // on the test's thread, not on a coroutine).
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// An HTTPS origin for `localhost` answering every request with `body`;
/// `ca_file` is its CA's certificate, for `curl --cacert`.
pub struct TlsOrigin {
    pub origin: Origin,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsOrigin {
    pub fn start(body: &'static str) -> TlsOrigin {
        let ca = TestCa::new("proxy_server test CA");
        let config = tls::server_config(&ca.issue(&["localhost"])).expect("a server config");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let origin = Origin::serve(TLS_STACK_WORDS, move |tcp| {
            let mut tls = tls::accept(&config, tcp)?;
            read_head(&mut tls)?;
            write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            tls.conn.send_close_notify();
            tls.flush()
        });
        TlsOrigin {
            origin,
            ca_file,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.origin.port()
    }
}

/// A TCP origin that echoes what it reads and, at its peer's EOF (a
/// half-close through the tunnel), writes `[eof after N bytes]\n` and closes.
pub fn echo() -> Origin {
    Origin::serve(PLAIN_STACK_WORDS, |mut tcp| {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0;
        loop {
            let n = tcp.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n;
            tcp.write_all(&buf[..n])?;
        }
        writeln!(tcp, "{}", eof_line(total))
    })
}

/// An HTTP/1.1 origin, keep-alive. `GET /pattern/N` answers N pattern
/// bytes (`Content-Length`); any request with a body is answered
/// `BYTES FRAMING VERDICT`, e.g. `1024 Chunked ok`, the body checked
/// against the pattern as it streams in. `Expect: 100-continue` gets its
/// `100` (a proxy may also answer it itself and not pass it on).
pub fn http() -> Origin {
    Origin::serve(HTTP_STACK_WORDS, |tcp| {
        let mut out = tcp.try_clone()?;
        out.set_read_timeout(Some(ORIGIN_IDLE))?;
        let mut reader = BufReader::with_capacity(HTTP_BUF, tcp);
        let mut buf = vec![0u8; HTTP_BUF];
        while let Some(head) = read_request_head(&mut reader, &Limits::default())? {
            if let Some(n) = head.target.strip_prefix("/pattern/") {
                let n: u64 = n.parse().map_err(io::Error::other)?;
                write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")?;
                let mut pattern = Pattern::new(n);
                loop {
                    let got = pattern.read(&mut buf)?;
                    if got == 0 {
                        break;
                    }
                    out.write_all(&buf[..got])?;
                }
            } else {
                if head.expects_continue() {
                    write_continue(&mut out)?;
                }
                let framing = head.framing()?;
                let mut body = BodyReader::new(&mut reader, framing, u64::MAX, &Limits::default());
                let mut checker = Checker::default();
                loop {
                    let got = body.read(&mut buf)?;
                    if got == 0 {
                        break;
                    }
                    checker.update(&buf[..got]);
                }
                let verdict = checker
                    .verdict(checker.seen())
                    .unwrap_or_else(|| "ok".to_owned());
                let text = format!("{} {framing:?} {verdict}\n", checker.seen());
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )?;
            }
            out.flush()?;
            if !head.keep_alive() {
                break;
            }
        }
        Ok(())
    })
}

/// A TCP origin that reads whatever comes and never answers.
pub fn mute() -> Origin {
    Origin::serve(PLAIN_STACK_WORDS, |mut tcp| {
        let mut buf = vec![0u8; 4096];
        while tcp.read(&mut buf)? > 0 {}
        Ok(())
    })
}

/// What [`echo`] writes once its peer has finished sending.
pub fn eof_line(bytes: usize) -> String {
    format!("[eof after {bytes} bytes]")
}

/// Read a request head up to its blank line (at most 8 KiB), byte by byte:
/// these origins answer one request per connection and need no buffer.
fn read_head(from: &mut impl Read) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        from.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    Ok(())
}
