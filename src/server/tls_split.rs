//! One rustls connection used by a reading and a writing coroutine at once.
//!
//! TLS is one state machine per connection: reading can produce records
//! to send (an alert, a key-update answer, the reply to a close), and
//! writing encrypts with the same keys. Both halves share the
//! `ServerConnection` under a may mutex held only for CPU work (decrypting
//! what was read, encrypting what is to be sent): neither half parks on the
//! socket while holding it. Bytes go to the socket only under a second may
//! mutex, the *output* lock, which is held across the (parking) socket
//! write: records are taken from rustls and written under that one lock, so
//! two coroutines never interleave records, and a record made by the reader
//! goes out in order with the writer's.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use may::net::TcpStream;
use may::sync::Mutex;
use rustls::ServerConnection;

use super::registry::Tracked;

/// Plaintext encrypted per write call: one TLS record's worth, so what
/// rustls buffers stays small and every call fits its buffer limit.
const WRITE_CHUNK: usize = 16 * 1024;
/// Ciphertext read from the socket at a time (on the heap).
const READ_BUFFER: usize = 16 * 1024;

/// What both halves share.
pub(crate) struct Shared {
    tls: Mutex<ServerConnection>,
    out: Mutex<Output>,
}

/// The writing socket and the records waiting to be written on it.
struct Output {
    sock: Tracked<TcpStream>,
    records: Vec<u8>,
}

// ANCHOR: reader
/// The reading half: ciphertext comes in on its own descriptor.
pub(crate) struct Reader {
    shared: Arc<Shared>,
    sock: Tracked<TcpStream>,
    buf: Box<[u8]>,
    /// `buf[start..end]` has been read from the socket, not yet fed to rustls.
    start: usize,
    end: usize,
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.shared.tls.lock().unwrap().reader().read(out) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {} // nothing decrypted yet
                done => return done, // data, a clean close (0) or the peer's truncation
            }
            if self.start == self.end {
                // Parks without the TLS lock: the writer keeps going.
                let n = self.sock.read(&mut self.buf)?;
                (self.start, self.end) = (0, n);
            }
            let (state, wants_write) = {
                let mut tls = self.shared.tls.lock().unwrap();
                let mut fresh = &self.buf[self.start..self.end];
                // An empty slice tells rustls the peer closed the TCP stream.
                self.start += tls.read_tls(&mut fresh)?;
                (tls.process_new_packets(), tls.wants_write())
            };
            if wants_write {
                let sent = self.shared.flush();
                // A failed record's alert is sent best-effort; its error wins.
                if state.is_ok() {
                    sent?;
                }
            }
            if let Err(e) = state {
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
        }
    }
}
// ANCHOR_END: reader

// ANCHOR: writer
/// The writing half.
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let chunk = &buf[..buf.len().min(WRITE_CHUNK)];
        // Twice at most: a reader's records may fill rustls's buffer
        // between our lock and theirs; after a flush there is room.
        for _ in 0..2 {
            let taken = self.shared.tls.lock().unwrap().writer().write(chunk)?;
            self.shared.flush()?;
            if taken > 0 || chunk.is_empty() {
                return Ok(taken);
            }
        }
        Ok(0) // write_all turns this into WriteZero
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.flush()
    }
}
// ANCHOR_END: writer

impl Shared {
    /// Send every record rustls has ready, in order.
    fn flush(&self) -> io::Result<()> {
        let mut out = self.out.lock().unwrap();
        let Output { sock, records } = &mut *out;
        loop {
            records.clear();
            {
                let mut tls = self.tls.lock().unwrap();
                while tls.wants_write() {
                    tls.write_tls(records)?; // into a Vec: CPU only
                }
            }
            if records.is_empty() {
                return Ok(());
            }
            // Parks holding only the output lock: records stay in order.
            sock.write_all(records)?;
        }
    }
}

/// Split a finished handshake's connection: `read` keeps the original
/// descriptor, `write` is a duplicate of it.
pub(crate) fn split(
    tls: ServerConnection,
    read: Tracked<TcpStream>,
    write: Tracked<TcpStream>,
) -> (Reader, Writer) {
    let shared = Arc::new(Shared {
        tls: Mutex::new(tls),
        out: Mutex::new(Output {
            sock: write,
            records: Vec::new(),
        }),
    });
    let reader = Reader {
        shared: shared.clone(),
        sock: read,
        buf: vec![0; READ_BUFFER].into_boxed_slice(),
        start: 0,
        end: 0,
    };
    (reader, Writer { shared })
}
