//! The body's content coding undone, under one cap for the bytes as
//! received and another for the bytes as decoded.
//!
//! gzip shrinks a page of HTML to a fifth or less, and the ratio has no
//! bound: 10 MiB of zeros compress to about 10 KiB, so a cap on received
//! bytes alone would let a small response expand to gigabytes in memory
//! (a "gzip bomb"). Both are capped at `max_body`.

use std::io::{self, ErrorKind, Read};

use flate2::read::GzDecoder;

use crate::http::header;

/// What `Content-Encoding` says was done to the body.
pub(super) enum Coding {
    Identity,
    Gzip,
}

/// The coding of a response with `headers`: none, or `gzip` (and its old
/// name `x-gzip`). Anything else (`br`, `deflate`, a list) is refused: we
/// never ask for it, and passing it on undecoded would hand a parser bytes
/// it cannot read.
pub(super) fn coding(headers: &[(String, String)]) -> Result<Coding, String> {
    match header(headers, "content-encoding").map(str::trim) {
        None => Ok(Coding::Identity),
        Some(c) if c.is_empty() || c.eq_ignore_ascii_case("identity") => Ok(Coding::Identity),
        Some(c) if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => {
            Ok(Coding::Gzip)
        }
        Some(other) => Err(format!("Content-Encoding {other} is not supported")),
    }
}

/// The error a cap raises, recognised by its payload: whatever wraps the
/// reader (the gzip decoder) passes it on unchanged.
#[derive(Debug)]
pub(super) struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body over the cap")
    }
}

impl std::error::Error for TooLarge {}

/// Whether `e` is a cap's error.
pub(super) fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooLarge>())
}

fn too_large() -> io::Error {
    io::Error::new(ErrorKind::InvalidData, TooLarge)
}

/// A reader that counts what passes through it and fails once more than
/// `cap` bytes have.
pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) count: u64,
    cap: u64,
}

impl<R: Read> Counted<R> {
    pub(super) fn new(inner: R, cap: u64) -> Counted<R> {
        Counted {
            inner,
            count: 0,
            cap,
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        match self.count > self.cap {
            true => Err(too_large()),
            false => Ok(n),
        }
    }
}

// ANCHOR: decoded
/// The body as the caller sees it: the wire bytes, or what gzip makes of
/// them, both counted against `max_body`.
pub(super) enum Decoded<R: Read> {
    Identity(Counted<R>),
    Gzip(Counted<GzDecoder<Counted<R>>>),
}

impl<R: Read> Decoded<R> {
    pub(super) fn new(wire: R, coding: Coding, max_body: u64) -> Decoded<R> {
        let wire = Counted::new(wire, max_body);
        match coding {
            Coding::Identity => Decoded::Identity(wire),
            Coding::Gzip => Decoded::Gzip(Counted::new(GzDecoder::new(wire), max_body)),
        }
    }

    /// Once the decoded body has ended: read the wire to its end too (a
    /// gzip stream ends at its trailer, before a chunked body's last
    /// chunk), so the connection is at the next response. Returns the wire
    /// bytes received and the wire reader.
    pub(super) fn finish(self, buf: &mut [u8]) -> io::Result<(u64, R)> {
        let mut wire = match self {
            Decoded::Identity(wire) => wire,
            Decoded::Gzip(decoded) => decoded.inner.into_inner(),
        };
        while wire.read(buf)? > 0 {}
        Ok((wire.count, wire.inner))
    }
}
// ANCHOR_END: decoded

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Identity(wire) => wire.read(buf),
            Decoded::Gzip(decoded) => decoded.read(buf),
        }
    }
}
