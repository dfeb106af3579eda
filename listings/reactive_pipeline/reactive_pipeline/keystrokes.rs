//! The keystroke source: a publisher of the lines a client sends, each read
//! from the socket only when the pipeline has asked for one (demand), and
//! never longer than the limit.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpStream;
use may_patterns::alarm;
use may_patterns::reactive::{Demand, Error, Flux, Publisher, Subscriber};

/// Why the keystroke stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its side (or the whole connection).
    Closed,
    /// A line longer than the limit.
    TooLong,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// The pipeline cancelled the stream (the client's socket failed).
    Cancelled,
    /// The socket failed.
    Failed,
}

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct LineLimits {
    pub max_line: usize,
    pub idle: Duration,
}

// ANCHOR: source
/// The lines `stream` sends, without their `\n` (or `\r\n`). One
/// subscription only: a socket cannot be read twice. The stream ends with
/// `on_complete` when the client closes, and with an error (whose text the
/// client is shown) when a line is too long or the client goes idle; `end`
/// says which, for the server's counters.
pub fn lines(stream: TcpStream, limits: LineLimits) -> (Flux<String>, Arc<OnceLock<End>>) {
    let end = Arc::new(OnceLock::new());
    let source = Lines {
        stream: Mutex::new(Some(stream)),
        limits,
        end: end.clone(),
    };
    (Flux::new(source), end)
}

struct Lines {
    /// Taken by the first subscription. A std mutex: held for a `take`.
    stream: Mutex<Option<TcpStream>>,
    limits: LineLimits,
    end: Arc<OnceLock<End>>,
}

impl Publisher<String> for Lines {
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<String>>) {
        let stream = self.stream.lock().unwrap().take();
        let (limits, end) = (self.limits, self.end.clone());
        // Like the library's sources: a coroutine per subscription sends
        // every signal, and parks in the socket's read, not the caller.
        go!(move || {
            let (subscription, demand) = Demand::new();
            subscriber.on_subscribe(subscription);
            let Some(stream) = stream else {
                let once = Error::failed("a socket's lines can be read once");
                return subscriber.on_error(once);
            };
            let (why, last) = read_on_demand(stream, limits, &demand, &mut *subscriber);
            // Recorded before the last signal goes out: whoever hears of
            // the end can read why.
            let _ = end.set(why);
            match last {
                Some(Ok(())) => subscriber.on_complete(),
                Some(Err(error)) => subscriber.on_error(error),
                None => {} // cancelled: no signal after a cancel (3.6)
            }
        });
    }
}

/// Read a line each time one is asked for, until the stream ends: why, and
/// the last signal to send (`None` after a cancel).
fn read_on_demand(
    stream: TcpStream,
    limits: LineLimits,
    demand: &Demand,
    subscriber: &mut dyn Subscriber<String>,
) -> (End, Option<Result<(), Error>>) {
    let mut reader = BufReader::new(stream);
    loop {
        match demand.take_one() {
            Ok(true) => {}
            Ok(false) => return (End::Cancelled, None),
            Err(e) => return (End::Failed, Some(Err(e))),
        }
        // The idle deadline is kept by the alarm thread, which shuts the
        // socket's reading side when it passes, so the read below returns:
        // no may timer (see may_patterns::alarm). Dropped, it is disarmed.
        let at = Instant::now() + limits.idle;
        let deadline = match alarm::shared().shutdown_read_at(reader.get_ref(), at) {
            Ok(deadline) => deadline,
            Err(e) => {
                let error = Error::failed(format!("cannot arm the idle timeout: {e}"));
                return (End::Failed, Some(Err(error)));
            }
        };
        let line = read_line(&mut reader, limits.max_line);
        if deadline.fired() {
            let idle = humantime::format_duration(limits.idle);
            let error = Error::failed(format!("nothing received for {idle}"));
            return (End::Idle, Some(Err(error)));
        }
        match line {
            Ok(Some(line)) => subscriber.on_next(line),
            Ok(None) => return (End::Closed, Some(Ok(()))),
            Err((why, text)) => return (why, Some(Err(Error::failed(text)))),
        }
    }
}

/// One line, at most `max_line` bytes before its newline. `Ok(None)` at the
/// end of the stream; a last line without a newline still counts.
fn read_line(reader: &mut impl BufRead, max_line: usize) -> Result<Option<String>, (End, String)> {
    let mut line = Vec::new();
    // `take` bounds a line that never ends, too: one byte over is enough.
    let bound = max_line as u64 + 2; // the line, `\r` and `\n`
    match reader.by_ref().take(bound).read_until(b'\n', &mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err((End::Failed, format!("cannot read: {e}"))),
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > max_line {
        return Err((End::TooLong, format!("line longer than {max_line} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}
// ANCHOR_END: source

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &str, max_line: usize) -> Vec<Result<Option<String>, End>> {
        let mut reader = BufReader::new(input.as_bytes());
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader, max_line).map_err(|(why, _)| why);
            let last = !matches!(line, Ok(Some(_)));
            out.push(line);
            if last {
                return out;
            }
        }
    }

    #[test]
    fn lines_up_to_the_limit_pass_with_either_line_ending() {
        let some = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(
            lines_of("abcd\r\nab\n\nlast", 4),
            [some("abcd"), some("ab"), some(""), some("last"), Ok(None)]
        );
    }

    #[test]
    fn a_line_one_byte_too_long_ends_the_stream_with_or_without_its_newline() {
        assert_eq!(lines_of("abcde\n", 4), [Err(End::TooLong)]);
        assert_eq!(lines_of("abcde", 4), [Err(End::TooLong)]);
        assert_eq!(lines_of("abcd\rx\n", 4), [Err(End::TooLong)]);
        let endless = "a".repeat(100_000); // never a newline: read 6 bytes, not all
        assert_eq!(lines_of(&endless, 4), [Err(End::TooLong)]);
    }
}
