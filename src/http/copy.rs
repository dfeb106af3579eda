//! Forwarding a body from one connection to another through a fixed
//! buffer, re-framed on the way.

use std::io::{self, BufRead, ErrorKind, Read, Write};

use super::{invalid, BodyReader, ChunkedWriter, Framing, Limits};

// ANCHOR: copy_body
/// Copy a body framed as `from` on `reader` to `writer` framed as `to`,
/// through `buf`, and return how many payload bytes went through.
///
/// - `to = Chunked`: the payload is re-chunked, one chunk per read, and
///   the last chunk written (trailers are dropped);
/// - `to = Length(n)` (the caller announced `n`): the payload must be
///   exactly `n` bytes; `Empty` is `Length(0)`;
/// - `to = UntilClose`: the payload raw; the caller closes afterwards.
///
/// `buf` is the caller's fixed heap buffer (say 16 KiB, reused for every
/// message of a connection), never one on a coroutine's small stack. At
/// most `cap` payload bytes pass: past it, `InvalidData` "body longer
/// than ..." before the extra bytes are written. A malformed chunk is
/// `InvalidData`, a body cut short `UnexpectedEof` (see [`BodyReader`]).
///
/// `writer` is flushed after each piece, so a slow stream (a long poll,
/// server-sent events) reaches the client as it comes; over a socket give
/// it a `BufWriter`, so a chunk's size line, data and CRLF go out together.
/// On an error the outgoing message is incomplete: close that connection.
pub fn copy_body(
    reader: &mut impl BufRead,
    from: Framing,
    writer: &mut impl Write,
    to: Framing,
    cap: u64,
    limits: &Limits,
    buf: &mut [u8],
) -> io::Result<u64> {
    if buf.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "copy_body needs a buffer",
        ));
    }
    match to {
        Framing::Chunked => {
            let mut body = BodyReader::new(reader, from, cap, limits);
            let mut chunked = ChunkedWriter::new(&mut *writer);
            let total = pump(&mut body, &mut chunked, buf)?;
            chunked.finish()?.flush()?;
            Ok(total)
        }
        Framing::UntilClose => {
            let mut body = BodyReader::new(reader, from, cap, limits);
            pump(&mut body, writer, buf)
        }
        Framing::Length(_) | Framing::Empty => {
            let announced = match to {
                Framing::Length(n) => n,
                _ => 0,
            };
            // Never write past what the outgoing head announced: that
            // would be the start of a smuggled message on `writer`.
            let mut body = BodyReader::new(reader, from, cap.min(announced), limits);
            let total = pump(&mut body, writer, buf)?;
            match total == announced {
                true => Ok(total),
                false => Err(invalid(format!(
                    "body of {total} bytes where {announced} were announced"
                ))),
            }
        }
    }
}
// ANCHOR_END: copy_body

/// Read `body` to its end, writing each piece and flushing after it.
fn pump(body: &mut impl Read, writer: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = match body.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        writer.flush()?;
        total += n as u64;
    }
}
