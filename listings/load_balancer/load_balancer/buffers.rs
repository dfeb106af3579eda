//! The buffers a client connection keeps for all its requests: allocated
//! once when it opens, not for every request. A `BufReader` or `BufWriter`
//! made per request costs two 8 KiB allocations, and the reader's first
//! fill zeroes its whole buffer: measured under wrk, about a tenth of the
//! balancer's CPU.

use std::io::{self, BufRead, Read, Write};

/// The read buffer of a backend connection: a response head fits.
const UPSTREAM_BUFFER: usize = 8 * 1024;

/// Bytes of a request or response gathered before one write to a socket.
const WRITE_BUFFER: usize = 8 * 1024;

/// The buffer bodies are copied through.
const COPY_BUFFER: usize = 16 * 1024;

/// One client connection's buffers, each of a fixed size.
pub struct Buffers {
    /// What a body is copied through (`copy_body`).
    pub copy: Vec<u8>,
    /// What a backend's answer is read into ([`Buffered`]).
    pub upstream: Vec<u8>,
    /// What is gathered before a write to a socket ([`Gathered`]).
    pub out: Vec<u8>,
}

impl Buffers {
    pub fn new() -> Self {
        Buffers {
            copy: vec![0; COPY_BUFFER],
            upstream: vec![0; UPSTREAM_BUFFER],
            out: Vec::with_capacity(WRITE_BUFFER),
        }
    }
}

/// A `BufReader` over a borrowed buffer, which starts empty.
pub struct Buffered<'b, R> {
    inner: R,
    buf: &'b mut [u8],
    pos: usize,
    filled: usize,
}

impl<'b, R: Read> Buffered<'b, R> {
    pub fn new(inner: R, buf: &'b mut [u8]) -> Self {
        Buffered {
            inner,
            buf,
            pos: 0,
            filled: 0,
        }
    }

    /// The bytes read but not yet consumed.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Buffered<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Nothing buffered and a large read: skip the copy, as BufReader does.
        if self.pos == self.filled && out.len() >= self.buf.len() {
            return self.inner.read(out);
        }
        let n = self.fill_buf()?.read(out)?;
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Buffered<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.filled {
            self.filled = self.inner.read(self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.filled);
    }
}

/// A `BufWriter` over a borrowed buffer, whose capacity bounds what it
/// gathers. Unlike `BufWriter` it does not write on drop: what was not
/// flushed is dropped with it (every caller flushes, and drops it without
/// a flush only after a write failed).
pub struct Gathered<'b, W: Write> {
    inner: W,
    buf: &'b mut Vec<u8>,
}

impl<'b, W: Write> Gathered<'b, W> {
    /// `buf`'s capacity is the bound; it is emptied first.
    pub fn new(inner: W, buf: &'b mut Vec<u8>) -> Self {
        buf.clear();
        Gathered { inner, buf }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn write_gathered(&mut self) -> io::Result<()> {
        let written = self.inner.write_all(self.buf);
        self.buf.clear();
        written
    }
}

impl<W: Write> Write for Gathered<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.buf.capacity();
        if self.buf.len() + data.len() > room {
            self.write_gathered()?;
        }
        if data.len() >= room {
            return self.inner.write(data);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_gathered()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffered_reader_reads_lines_and_reports_what_is_left() {
        let mut buf = vec![0; 8];
        let mut r = Buffered::new(&b"ab\ncdefghijk"[..], &mut buf);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "ab\n");
        assert_eq!(r.buffer(), b"cdefg", "the first fill took 8 bytes");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"cdefghijk");
    }

    #[test]
    fn a_gathered_writer_writes_once_per_flush_and_never_holds_more_than_its_capacity() {
        /// Counts the writes that reach it.
        #[derive(Default)]
        struct Counted(Vec<Vec<u8>>);
        impl Write for Counted {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.push(data.to_vec());
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut buf = Vec::with_capacity(8);
        let mut sink = Counted::default();
        let mut w = Gathered::new(&mut sink, &mut buf);
        w.write_all(b"head").unwrap();
        w.write_all(b"body").unwrap();
        w.flush().unwrap();
        w.write_all(b"12345").unwrap();
        w.write_all(b"6789").unwrap(); // would pass 8: the 5 go first
        w.write_all(b"a large piece").unwrap(); // past the capacity: direct
        w.flush().unwrap();
        let writes: Vec<&[u8]> = sink.0.iter().map(Vec::as_slice).collect();
        let large: &[u8] = b"a large piece";
        assert_eq!(writes, [&b"headbody"[..], b"12345", b"6789", large]);
    }
}
