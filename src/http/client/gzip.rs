//! The body's content coding undone, under one cap for the bytes as
//! received and another for the bytes as decoded.
//!
//! gzip shrinks a page of HTML to a fifth or less, and the ratio has no
//! bound: 4 MiB of zeros compress to about 4 KiB, so a cap on received
//! bytes alone would let a small response expand to gigabytes in memory
//! (a "gzip bomb"). Both are capped at `max_body`.
//!
//! The gzip framing (RFC 1952: a header, a raw deflate stream, a CRC-32
//! and the length) is read here, around flate2's low-level [`Decompress`],
//! rather than with `flate2::read::GzDecoder`, because of the stack: an
//! inflate state is a 43 KiB struct (a 32 KiB window and the Huffman
//! tables) that miniz_oxide builds on the caller's stack before boxing it.
//! On a coroutine that one constructor took 61 KB of stack in a release
//! build and 124 KB in a debug one. Here the states are built on a
//! [`blocking`](crate::blocking) thread (a 2 MiB stack), kept in a small
//! pool, and reset for each body.

use std::io::{self, ErrorKind, Read};
use std::sync::Mutex;

use flate2::{Crc, Decompress, FlushDecompress, Status};

use crate::blocking;
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

/// The error a cap raises, recognised by its payload.
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

fn corrupt(why: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("bad gzip: {}", why.into()))
}

/// A reader that counts what passes through it and fails once more than
/// `cap` bytes have.
pub(super) struct Counted<R> {
    inner: R,
    count: u64,
    cap: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: R, cap: u64) -> Counted<R> {
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
            true => Err(io::Error::new(ErrorKind::InvalidData, TooLarge)),
            false => Ok(n),
        }
    }
}

/// Inflate states ready for reuse. A state is 43 KiB, so the pool keeps at
/// most [`Inflaters::KEEP`]; more than that in use at once are built and
/// dropped.
pub(super) struct Inflaters {
    idle: Mutex<Vec<Decompress>>,
}

impl Inflaters {
    const KEEP: usize = 64;

    pub(super) fn new() -> Inflaters {
        Inflaters {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle state, or a new one built on a blocking thread.
    fn take(&self) -> io::Result<Decompress> {
        let idle = self.idle.lock().unwrap().pop(); // the guard ends here
        match idle {
            Some(inflater) => Ok(inflater),
            None => Ok(blocking::run(|| Decompress::new(false))?),
        }
    }

    fn give(&self, mut inflater: Decompress) {
        inflater.reset(false);
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < Self::KEEP {
            idle.push(inflater);
        }
    }
}

/// Where a [`Gunzip`] is in the gzip member.
enum Part {
    Header,
    Deflate,
    Trailer,
    Done,
}

/// Bytes of compressed input read ahead.
const INPUT: usize = 8 * 1024;

// ANCHOR: gunzip
/// Reads one gzip member from `wire`: the header checked and skipped, the
/// deflate stream inflated into the caller's buffer, the CRC-32 and length
/// checked at the end.
pub(super) struct Gunzip<'i, R> {
    wire: R,
    input: Vec<u8>,
    start: usize,
    wire_done: bool,
    inflater: Option<Decompress>,
    inflaters: &'i Inflaters,
    crc: Crc,
    part: Part,
}
// ANCHOR_END: gunzip

impl<'i, R: Read> Gunzip<'i, R> {
    fn new(wire: R, inflaters: &'i Inflaters) -> io::Result<Gunzip<'i, R>> {
        Ok(Gunzip {
            wire,
            input: Vec::with_capacity(INPUT),
            start: 0,
            wire_done: false,
            inflater: Some(inflaters.take()?),
            inflaters,
            crc: Crc::new(),
            part: Part::Header,
        })
    }

    /// Move the unused input to the front and read more after it.
    fn refill(&mut self) -> io::Result<()> {
        self.input.drain(..self.start);
        self.start = 0;
        let kept = self.input.len();
        self.input.resize(kept + INPUT, 0);
        let n = self.wire.read(&mut self.input[kept..])?;
        self.input.truncate(kept + n);
        self.wire_done = n == 0;
        Ok(())
    }

    fn byte(&mut self) -> io::Result<u8> {
        if self.start == self.input.len() && !self.wire_done {
            self.refill()?;
        }
        let byte = *self
            .input
            .get(self.start)
            .ok_or_else(|| corrupt("the body ended inside the gzip header or trailer"))?;
        self.start += 1;
        Ok(byte)
    }

    fn skip(&mut self, n: usize) -> io::Result<()> {
        (0..n).try_for_each(|_| self.byte().map(drop))
    }

    fn u32_le(&mut self) -> io::Result<u32> {
        let mut bytes = [0; 4];
        for b in &mut bytes {
            *b = self.byte()?;
        }
        Ok(u32::from_le_bytes(bytes))
    }

    /// RFC 1952 section 2.3: magic, method, flags, then optional fields.
    fn header(&mut self) -> io::Result<()> {
        const FHCRC: u8 = 1 << 1;
        const FEXTRA: u8 = 1 << 2;
        const FNAME: u8 = 1 << 3;
        const FCOMMENT: u8 = 1 << 4;
        if (self.byte()?, self.byte()?) != (0x1f, 0x8b) {
            return Err(corrupt("not a gzip stream"));
        }
        if self.byte()? != 8 {
            return Err(corrupt("compression method is not deflate"));
        }
        let flags = self.byte()?;
        if flags & 0xe0 != 0 {
            return Err(corrupt("reserved header flags set"));
        }
        self.skip(6)?; // modification time, extra flags, operating system
        if flags & FEXTRA != 0 {
            let length = u16::from_le_bytes([self.byte()?, self.byte()?]);
            self.skip(length.into())?;
        }
        for field in [FNAME, FCOMMENT] {
            if flags & field != 0 {
                while self.byte()? != 0 {}
            }
        }
        if flags & FHCRC != 0 {
            self.skip(2)?;
        }
        Ok(())
    }

    /// Inflate into `out`; 0 only at the deflate stream's end.
    fn inflate(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.start == self.input.len() && !self.wire_done {
                self.refill()?;
            }
            let flush = match self.wire_done && self.start == self.input.len() {
                true => FlushDecompress::Finish,
                false => FlushDecompress::None,
            };
            let inflater = self.inflater.as_mut().expect("held until into_wire");
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(&self.input[self.start..], out, flush)
                .map_err(|e| corrupt(e.to_string()))?;
            let used = (inflater.total_in() - before_in) as usize;
            let made = (inflater.total_out() - before_out) as usize;
            self.start += used;
            self.crc.update(&out[..made]);
            if let Status::StreamEnd = status {
                self.part = Part::Trailer;
                return Ok(made);
            }
            if made > 0 {
                return Ok(made);
            }
            if used == 0 {
                // Stuck: what is left is not enough for a symbol.
                if self.wire_done {
                    return Err(corrupt("the body ended inside the deflate stream"));
                }
                self.refill()?;
            }
        }
    }

    /// RFC 1952 section 2.3: CRC-32 and length (mod 2^32) of the data.
    fn trailer(&mut self) -> io::Result<()> {
        let (crc, length) = (self.u32_le()?, self.u32_le()?);
        if crc != self.crc.sum() || length != self.crc.amount() {
            return Err(corrupt("the CRC or length in the trailer does not match"));
        }
        Ok(())
    }

    /// The wire reader back, with the inflate state returned to its pool.
    fn into_wire(mut self) -> R {
        if let Some(inflater) = self.inflater.take() {
            self.inflaters.give(inflater);
        }
        self.wire
    }
}

impl<R: Read> Read for Gunzip<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.part {
                Part::Header => {
                    self.header()?;
                    self.part = Part::Deflate;
                }
                Part::Deflate => match self.inflate(out)? {
                    0 => continue, // the stream ended without more output
                    n => return Ok(n),
                },
                Part::Trailer => {
                    self.trailer()?;
                    self.part = Part::Done;
                }
                Part::Done => return Ok(0),
            }
        }
    }
}

// ANCHOR: decoded
/// The body as the caller sees it: the wire bytes, or what gzip makes of
/// them, both counted against `max_body`.
pub(super) enum Decoded<'i, R: Read> {
    Identity(Counted<R>),
    Gzip(Counted<Gunzip<'i, Counted<R>>>),
}

impl<'i, R: Read> Decoded<'i, R> {
    pub(super) fn new(
        wire: R,
        coding: Coding,
        max_body: u64,
        inflaters: &'i Inflaters,
    ) -> io::Result<Decoded<'i, R>> {
        let wire = Counted::new(wire, max_body);
        Ok(match coding {
            Coding::Identity => Decoded::Identity(wire),
            Coding::Gzip => Decoded::Gzip(Counted::new(Gunzip::new(wire, inflaters)?, max_body)),
        })
    }

    /// Once the decoded body has ended: read the wire to its end too (a
    /// gzip stream ends at its trailer, before a chunked body's last
    /// chunk), so the connection is at the next response. Returns the wire
    /// bytes received and the wire reader.
    pub(super) fn finish(self, buf: &mut [u8]) -> io::Result<(u64, R)> {
        let mut wire = match self {
            Decoded::Identity(wire) => wire,
            Decoded::Gzip(decoded) => decoded.inner.into_wire(),
        };
        while wire.read(buf)? > 0 {}
        Ok((wire.count, wire.inner))
    }
}
// ANCHOR_END: decoded

impl<R: Read> Read for Decoded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Identity(wire) => wire.read(buf),
            Decoded::Gzip(decoded) => decoded.read(buf),
        }
    }
}
