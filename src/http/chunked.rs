//! Writing a body with chunked framing (RFC 9112 7.1).

use std::io::{self, Write};

// ANCHOR: chunked_writer
/// A writer that frames what it is given as chunks: each `write` of `n > 0`
/// bytes sends one chunk (`{n:x}\r\n`, the bytes, `\r\n`); an empty write
/// sends nothing, since a zero-size chunk would end the body.
/// [`finish`](ChunkedWriter::finish) sends the last chunk and no trailers.
///
/// A chunk goes out as three writes: over a socket, wrap it in a
/// `BufWriter` (and flush after each chunk that must leave now) so they
/// leave as one segment.
pub struct ChunkedWriter<W: Write> {
    inner: W,
}
// ANCHOR_END: chunked_writer

impl<W: Write> ChunkedWriter<W> {
    pub fn new(inner: W) -> Self {
        ChunkedWriter { inner }
    }

    /// Write the last chunk, `0\r\n\r\n`, and give the writer back
    /// (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(b"0\r\n\r\n")?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        write!(self.inner, "{:x}\r\n", data.len())?;
        self.inner.write_all(data)?;
        self.inner.write_all(b"\r\n")?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
