//! The access log: one line per request in the combined log format that
//! Apache and nginx write, so the usual log tools read it:
//!
//! ```text
//! 127.0.0.1 - alice [03/Dec/2026:08:40:00 +0000] "GET http://x/ HTTP/1.1" 200 1234 "-" "curl/8.5.0"
//! 127.0.0.1 - - [03/Dec/2026:08:40:01 +0000] "CONNECT x:443 HTTP/1.1" 200 5120 "-" "curl/8.5.0"
//! ```
//!
//! Writing a file blocks its thread, and may cannot make file I/O
//! co-operative, so the lines are written by one dedicated OS thread, fed
//! through a bounded queue. A request never waits for the log: when the
//! queue is full (the disk stalls), [`AccessLog::log`] drops the line and
//! counts it ([`AccessLog::dropped`], `log_dropped` in the summary). Lines
//! are flushed whenever the queue runs empty, and on [`LogWriter::finish`].

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use may_patterns::bounded::{self, TrySendError};

/// Lines waiting for the writer at most. The writer keeps up with any
/// request rate while the disk does; this only has to cover a stall, and
/// bounds the memory one costs (a line is a few hundred bytes).
pub const QUEUE_ENTRIES: usize = 4096;

/// One request, as the handler saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub client: SocketAddr,
    /// The `Proxy-Authorization` user, once checked.
    pub user: Option<String>,
    pub method: String,
    /// As the client sent it: an absolute URI, or `host:port` for CONNECT.
    pub target: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    pub status: u16,
    /// Body bytes sent to the client (for a tunnel: every byte sent down it).
    pub bytes_sent: u64,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    /// When the request arrived (printed in UTC).
    pub start: SystemTime,
}

/// The combined log format, without the newline.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |v: &Option<String>| v.as_deref().map_or_else(|| "-".into(), escape);
        write!(
            f,
            "{} - {} [{}] \"{} {} HTTP/1.{}\" {} {} \"{}\" \"{}\"",
            self.client.ip(),
            self.user.as_deref().map_or_else(|| "-".into(), escape),
            ClfTime(self.start),
            escape(&self.method),
            escape(&self.target),
            self.version,
            self.status,
            self.bytes_sent,
            quoted(&self.referer),
            quoted(&self.user_agent),
        )
    }
}

/// A client chooses the target, the user agent and the referer: escape
/// what would let it end a field or forge a line (`"`, `\`, control
/// characters), as nginx does.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `03/Dec/2026:08:40:00 +0000`. By hand: a dozen lines, where a date
/// crate would be a dependency for one format.
struct ClfTime(SystemTime);

impl fmt::Display for ClfTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        // A clock set before 1970 prints as 1970.
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        write!(
            f,
            "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
            MONTHS[month as usize - 1],
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic
/// Gregorian calendar: Howard Hinnant's `civil_from_days`, which counts
/// 400-year eras from March so that leap days fall at the end of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

enum Message {
    Line(Box<Entry>),
    Stop,
}

/// Where handlers send entries. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct AccessLog {
    queue: bounded::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

/// The writer thread, kept by `main` to flush and join it at the end.
pub struct LogWriter {
    queue: bounded::Sender<Message>,
    thread: JoinHandle<io::Result<()>>,
}

/// Where `--access-log` writes: `-` is standard output, anything else a
/// file opened for appending (created if missing).
pub fn open(path: &Path) -> io::Result<Box<dyn Write + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdout()));
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(file))
}

/// Start the writer thread on `out`, with room for `capacity` lines.
pub fn start(out: Box<dyn Write + Send>, capacity: usize) -> io::Result<(AccessLog, LogWriter)> {
    let (queue, lines) = bounded::channel(capacity);
    let thread = thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_lines(&lines, BufWriter::new(out)))?;
    let log = AccessLog {
        queue: queue.clone(),
        dropped: Arc::new(AtomicU64::new(0)),
    };
    Ok((log, LogWriter { queue, thread }))
}

// ANCHOR: log
impl AccessLog {
    /// Queue `entry`, or drop and count it if the queue is full (or the
    /// writer has stopped on an error).
    pub fn log(&self, entry: Entry) {
        match self.queue.try_send(Message::Line(Box::new(entry))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl LogWriter {
    /// Write what is queued, flush, and join the thread. Its error, if
    /// writing failed (the lines after it were counted as dropped).
    pub fn finish(self) -> io::Result<()> {
        // Waits for room; fails only if the writer has already stopped.
        let _ = self.queue.send(Message::Stop);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the access log's writer panicked")))
    }
}

/// The writer thread: one line per entry, flushed when the queue is empty.
fn write_lines(lines: &bounded::Receiver<Message>, mut out: impl Write) -> io::Result<()> {
    // One buffer, one write per line: lines never interleave with the
    // summary when both go to standard output.
    let mut line = String::new();
    loop {
        let message = match lines.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Empty) => {
                out.flush()?;
                match lines.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let Message::Line(entry) = message else { break };
        line.clear();
        let _ = writeln!(line, "{entry}");
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}
// ANCHOR_END: log

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    fn entry() -> Entry {
        Entry {
            client: "127.0.0.1:50123".parse().unwrap(),
            user: Some("alice".into()),
            method: "GET".into(),
            target: "http://x/".into(),
            version: 1,
            status: 200,
            bytes_sent: 1234,
            referer: None,
            user_agent: Some("curl/8.5.0".into()),
            // 2026-12-03T08:40:00Z
            start: UNIX_EPOCH + Duration::from_secs(1_796_287_200),
        }
    }

    #[test]
    fn a_line_in_the_combined_format() {
        assert_eq!(
            entry().to_string(),
            "127.0.0.1 - alice [03/Dec/2026:08:40:00 +0000] \"GET http://x/ HTTP/1.1\" 200 1234 \"-\" \"curl/8.5.0\""
        );
        let tunnel = Entry {
            client: "[::1]:4000".parse().unwrap(),
            user: None,
            method: "CONNECT".into(),
            target: "x:443".into(),
            version: 0,
            bytes_sent: 0,
            referer: Some("http://r/".into()),
            ..entry()
        };
        assert_eq!(
            tunnel.to_string(),
            "::1 - - [03/Dec/2026:08:40:00 +0000] \"CONNECT x:443 HTTP/1.0\" 200 0 \"http://r/\" \"curl/8.5.0\""
        );
    }

    #[test]
    fn client_text_cannot_break_a_line() {
        let e = Entry {
            target: "/a\"b\\c\r\nforged".into(),
            user_agent: Some("x\"y".into()),
            ..entry()
        };
        let line = e.to_string();
        assert!(
            line.contains("\"GET /a\\\"b\\\\c\\x0D\\x0Aforged HTTP/1.1\""),
            "{line}"
        );
        assert!(line.ends_with("\"x\\\"y\""), "{line}");
    }

    #[test]
    fn dates_across_leap_years_and_eras() {
        let at = |secs| ClfTime(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(951_782_399), "28/Feb/2000:23:59:59 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(at(4_107_542_400), "01/Mar/2100:00:00:00 +0000");
    }

    /// Output that blocks its first write until told to go on, then keeps
    /// everything for the test to read.
    struct Stalled {
        started: mpsc::Sender<()>,
        resume: Option<mpsc::Receiver<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(resume) = self.resume.take() {
                let _ = self.started.send(());
                let _ = resume.recv_timeout(Duration::from_secs(10));
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        const CAPACITY: usize = 4;
        let (started, writing) = mpsc::channel();
        let (resume, resumed) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Stalled {
            started,
            resume: Some(resumed),
            written: written.clone(),
        };
        let (log, writer) = start(Box::new(out), CAPACITY).unwrap();
        log.log(entry());
        // The writer has taken the first line and is stuck writing it.
        writing.recv_timeout(Duration::from_secs(10)).unwrap();
        for _ in 0..CAPACITY + 3 {
            log.log(entry()); // returns at once even though nothing moves
        }
        assert_eq!(log.dropped(), 3);
        resume.send(()).unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1 + CAPACITY);
        assert!(text.lines().all(|l| l == entry().to_string()));
    }
}
