//! The crawl's record: one JSON line per page (`--out`), and with `--warc`
//! the requests and responses themselves, as WARC 1.1 records.
//!
//! File I/O is never co-operative in may (`CoIo::new(File)` fails): a write
//! on a coroutine would block its worker, and with it every socket that
//! worker polls, for as long as the disk takes. So the files belong to one
//! writer on its own OS thread. `record` turns a page into bytes on the
//! caller (CPU work, no I/O) and sends them through a bounded channel: a
//! disk slower than the crawl fills the channel and the caller parks, as a
//! coroutine should, instead of the queue growing. One writer rather than
//! `may_patterns::blocking` jobs, because the records must reach each file
//! in order and whole, which one owner of the files gets for free.
//!
//! A write that fails (a full disk) stops the writer: the file is cut back
//! to the last whole record when the file system allows it, every later
//! `record` and `flush` returns the error, and the crawler stops on it.
//! What was written before stays as it was.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use may_patterns::bounded;
use serde::{Deserialize, Serialize};

pub use crate::warc::Exchange;
use crate::warc::Warc;

/// Pages the writer may be behind by. Each holds one page's bytes (its body
/// too with `--warc`), so this bounds the memory a slow disk can take.
const QUEUED_PAGES: usize = 32;

// ANCHOR: page_record
/// One line of `--out`: what the crawler learned about one URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRecord {
    pub url: String,
    /// 0 when no response came (see `error`).
    pub status: u16,
    /// When the fetch started, in milliseconds since the Unix epoch.
    pub fetched_at_ms: u64,
    pub elapsed_ms: f64,
    /// Body bytes (decoded).
    pub bytes: u64,
    pub title: Option<String>,
    /// Out-links, absolute and normalised, as the frontier saw them.
    pub links: Vec<String>,
    pub error: Option<String>,
    pub depth: u32,
}
// ANCHOR_END: page_record

/// What the writer thread is asked to do.
enum Job {
    /// A page's bytes for each file, written WARC first, so a page in the
    /// JSON Lines is always in the archive too.
    Page { warc: Vec<u8>, line: Vec<u8> },
    /// Write everything before this, sync both files, then answer.
    Flush(may::sync::mpsc::Sender<io::Result<()>>),
}

/// One output file and how much of it holds whole records.
struct Output {
    path: PathBuf,
    file: File,
    whole: u64,
}

impl Output {
    fn open(path: &Path, append: bool) -> io::Result<Output> {
        let mut options = OpenOptions::new();
        options.create(true).write(true).read(true);
        if !append {
            options.truncate(true);
        }
        let mut file = options
            .open(path)
            .map_err(|e| named(path, "cannot open", e))?;
        let whole = file
            .seek(SeekFrom::End(0))
            .map_err(|e| named(path, "cannot seek", e))?;
        Ok(Output {
            path: path.to_owned(),
            file,
            whole,
        })
    }

    /// Append `bytes`; on failure cut the file back to its last whole
    /// record (best effort: a device such as /dev/full cannot be cut).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(error) = self.file.write_all(bytes) {
            let _ = self.file.set_len(self.whole);
            let _ = self.file.seek(SeekFrom::Start(self.whole));
            return Err(named(&self.path, "cannot write", error));
        }
        self.whole += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file
            .sync_data()
            .map_err(|e| named(&self.path, "cannot sync", e))
    }
}

/// The first error the writer met, shared with the `Storage` that reports
/// it. A std Mutex: held for a copy of an `Option`, with no yield inside.
type Failure = Arc<Mutex<Option<(io::ErrorKind, String)>>>;

// ANCHOR: storage
/// The crawl's output files, written by one OS thread.
pub struct Storage {
    jobs: Option<bounded::Sender<Job>>,
    warc: Option<Warc>,
    failure: Failure,
}

impl Storage {
    /// Open `out` (and `warc`), truncated, or with `append` (on `--resume`)
    /// added to; a WARC file gets a `warcinfo` record either way. Opening
    /// is file I/O: call this from `main`, before the crawl starts.
    pub fn create(out: &Path, warc: Option<&Path>, append: bool) -> io::Result<Storage> {
        let mut lines = Output::open(out, append)?;
        if append {
            drop_partial_line(&mut lines)?;
        }
        let (warc, mut archive) = match warc {
            Some(path) => {
                let records = Warc::new(fastrand::u64(..));
                let mut archive = Output::open(path, append)?;
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                archive.append(&records.warcinfo(&name, now_ms()))?;
                (Some(records), Some(archive))
            }
            None => (None, None),
        };
        let failure = Failure::default();
        let (jobs, queue) = bounded::channel(QUEUED_PAGES);
        let failed = Arc::clone(&failure);
        std::thread::Builder::new()
            .name("storage".to_owned())
            .spawn(move || write_all(&queue, &mut lines, archive.as_mut(), &failed))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start the storage thread: {e}"))
            })?;
        Ok(Storage {
            jobs: Some(jobs),
            warc,
            failure,
        })
    }

    /// Queue `page` for the JSON Lines file, and its `exchange` (when it
    /// has one and there is a WARC file) for the archive. Parks while the
    /// writer is `QUEUED_PAGES` behind; fails once the writer has failed.
    pub fn record(&mut self, page: &PageRecord, exchange: Option<&Exchange<'_>>) -> io::Result<()> {
        self.check()?;
        let mut line = serde_json::to_vec(page).map_err(io::Error::other)?;
        line.push(b'\n');
        let warc = match (&mut self.warc, exchange) {
            (Some(records), Some(exchange)) => {
                records.exchange(&page.url, page.fetched_at_ms, exchange)
            }
            _ => Vec::new(),
        };
        self.send(Job::Page { warc, line })
    }

    /// Return once everything recorded so far is on disk (written and
    /// synced), or with the error that stopped the writer. The crawler
    /// calls it before it saves a checkpoint, so a checkpoint never counts
    /// a page the files do not hold.
    pub fn flush(&mut self) -> io::Result<()> {
        let (reply, answer) = may::sync::mpsc::channel();
        self.send(Job::Flush(reply))?;
        answer.recv().unwrap_or_else(|_| Err(self.stopped()))
    }

    fn send(&self, job: Job) -> io::Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .expect("the sender lives as long as Storage");
        jobs.send(job).map_err(|_| self.stopped())
    }

    fn check(&self) -> io::Result<()> {
        match &*self
            .failure
            .lock()
            .expect("the writer never panics holding it")
        {
            Some((kind, reason)) => Err(io::Error::new(*kind, reason.clone())),
            None => Ok(()),
        }
    }

    /// The writer is gone: its error, if it left one.
    fn stopped(&self) -> io::Error {
        self.check()
            .err()
            .unwrap_or_else(|| io::Error::other("the storage thread has stopped"))
    }
}
// ANCHOR_END: storage

impl Drop for Storage {
    /// The writer ends after the pages already queued, when the channel
    /// closes; nobody waits for it (call `flush` first to know they landed).
    fn drop(&mut self) {
        self.jobs.take();
    }
}

/// The writer thread: take every job that is waiting, write the pages in
/// one go per file, answer flushes; stop at the first error, after
/// recording it and answering with it.
fn write_all(
    queue: &bounded::Receiver<Job>,
    lines: &mut Output,
    mut archive: Option<&mut Output>,
    failure: &Failure,
) {
    let (mut warc, mut text) = (Vec::new(), Vec::new());
    while let Ok(first) = queue.recv() {
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Page { warc: w, line } => {
                    warc.extend(w);
                    text.extend(line);
                }
                Job::Flush(reply) => flushes.push(reply),
            }
            next = queue.try_recv().ok();
        }
        let mut result = archive
            .as_deref_mut()
            .map_or(Ok(()), |archive| archive.append(&warc))
            .and_then(|()| lines.append(&text));
        if result.is_ok() && !flushes.is_empty() {
            result = archive
                .as_deref_mut()
                .map_or(Ok(()), Output::sync)
                .and_then(|()| lines.sync());
        }
        warc.clear();
        text.clear();
        if let Err(error) = &result {
            *failure.lock().expect("no panic while held") = Some((error.kind(), error.to_string()));
        }
        for reply in flushes {
            let _ = reply.send(clone_result(&result));
        }
        if result.is_err() {
            return;
        }
    }
}

/// A resumed crawl appends after what the last run wrote; a line that run
/// left half written (killed mid-write) would swallow the first new one,
/// so it is cut off. The file is read backwards from its end, a block at a
/// time, only as far as its last newline. (The WARC file is appended as it
/// is: a reader stops at a half-written record, which only a kill, not
/// Ctrl-C, leaves.)
fn drop_partial_line(output: &mut Output) -> io::Result<()> {
    const BLOCK: u64 = 64 * 1024;
    let fail = |e| named(&output.path, "cannot read", e);
    let mut end = output.whole;
    let mut block = Vec::new();
    let whole = loop {
        let start = end.saturating_sub(BLOCK);
        block.resize((end - start) as usize, 0);
        output.file.seek(SeekFrom::Start(start)).map_err(fail)?;
        output.file.read_exact(&mut block).map_err(fail)?;
        if let Some(at) = block.iter().rposition(|&b| b == b'\n') {
            break start + at as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    output
        .file
        .set_len(whole)
        .and_then(|()| output.file.seek(SeekFrom::Start(whole)))
        .map_err(|e| named(&output.path, "cannot cut", e))?;
    output.whole = whole;
    Ok(())
}

fn clone_result(result: &io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
    }
}

fn named(path: &Path, what: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use serde_json::Value;

    use super::*;
    use crate::warc::iso_date;

    fn page(i: u32) -> PageRecord {
        PageRecord {
            url: format!("http://127.0.0.1:8080/p/{i}.html"),
            status: 200,
            fetched_at_ms: 1_700_000_000_000 + u64::from(i),
            elapsed_ms: 1.5,
            bytes: 11,
            title: Some(format!("page {i} \u{e9}")),
            links: vec!["http://127.0.0.1:8080/".to_owned()],
            error: None,
            depth: i,
        }
    }

    fn lines(path: &Path) -> Vec<PageRecord> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn pages_come_back_from_the_json_lines_as_they_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crawl.jsonl");
        let mut storage = Storage::create(&out, None, false).unwrap();
        let mut failed = page(3);
        (failed.status, failed.error) = (0, Some("connect: refused".to_owned()));
        let pages = [page(1), page(2), failed];
        for page in &pages {
            storage.record(page, None).unwrap();
        }
        storage.flush().unwrap();
        assert_eq!(lines(&out), pages);
    }

    #[test]
    fn resuming_appends_and_drops_a_half_written_line() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crawl.jsonl");
        let mut storage = Storage::create(&out, None, false).unwrap();
        storage.record(&page(1), None).unwrap();
        storage.flush().unwrap();
        drop(storage);
        // A run killed in the middle of its second line.
        let mut file = OpenOptions::new().append(true).open(&out).unwrap();
        file.write_all(br#"{"url":"http://127.0.0.1:8080/p/2.ht"#)
            .unwrap();
        let mut storage = Storage::create(&out, None, true).unwrap();
        storage.record(&page(3), None).unwrap();
        storage.flush().unwrap();
        assert_eq!(lines(&out), [page(1), page(3)]);
        // Without --resume the file starts again.
        let mut storage = Storage::create(&out, None, false).unwrap();
        storage.flush().unwrap();
        assert_eq!(lines(&out), []);
    }

    #[test]
    fn a_full_disk_is_an_error_the_crawler_sees_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crawl.jsonl");
        let full = Path::new("/dev/full");
        // The WARC file's first record cannot be written: create says so.
        let error = Storage::create(&out, Some(full), false).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        assert!(
            error.to_string().starts_with("cannot write /dev/full: "),
            "{error}"
        );

        // Pages are queued, so the error comes back at the next flush, and
        // every call after it returns it again; nothing hangs.
        let mut storage = Storage::create(full, None, false).unwrap();
        storage.record(&page(1), None).unwrap();
        let error = storage.flush().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        let again = storage.record(&page(2), None).unwrap_err();
        assert_eq!(again.to_string(), error.to_string());
        assert_eq!(storage.flush().unwrap_err().to_string(), error.to_string());
    }

    /// Set in the child process of the test below, to the directory it
    /// writes in.
    const LIMITED_CHILD: &str = "STORAGE_TEST_FILE_SIZE_LIMITED";

    #[test]
    fn a_write_that_fails_halfway_leaves_the_records_before_it_whole() {
        if let Some(dir) = std::env::var_os(LIMITED_CHILD) {
            return write_until_the_limit(Path::new(&dir));
        }
        // The same test binary, run again with a file-size limit of 8 KiB
        // (`ulimit -f` counts 512-byte blocks): a write past it fails with
        // EFBIG, part of its bytes written, as on a disk that fills up.
        // SIGXFSZ, which would kill the process instead, is ignored, and
        // ignored signals stay ignored across exec.
        let dir = tempfile::tempdir().unwrap();
        let name = "storage::tests::a_write_that_fails_halfway_leaves_the_records_before_it_whole";
        let child = Command::new("sh")
            .args(["-c", "trap '' XFSZ; ulimit -f 16; exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(LIMITED_CHILD, dir.path())
            .output()
            .unwrap();
        let told = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "the limited run failed: {told}");
        assert!(told.contains("1 passed"), "{told}");
        let kept = lines(&dir.path().join("crawl.jsonl"));
        assert!(kept.len() > 10, "{} records", kept.len());
        assert_eq!(kept, (0..kept.len() as u32).map(page).collect::<Vec<_>>());
    }

    /// In the limited child: record and flush pages one by one until the
    /// file is full; what was flushed must all be there, and nothing else.
    fn write_until_the_limit(dir: &Path) {
        let out = dir.join("crawl.jsonl");
        let mut storage = Storage::create(&out, None, false).unwrap();
        let mut flushed = 0;
        let error = loop {
            let written = storage
                .record(&page(flushed), None)
                .and_then(|()| storage.flush());
            match written {
                Ok(()) => flushed += 1,
                Err(error) => break error,
            }
            assert!(flushed < 1000, "the file-size limit never hit");
        };
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge, "{error}");
        assert!(error.to_string().starts_with("cannot write "), "{error}");
        // The half-written record was cut off again.
        assert_eq!(lines(&out), (0..flushed).map(page).collect::<Vec<_>>());
    }

    #[test]
    fn a_slow_disk_makes_callers_wait_not_the_queue_grow() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crawl.jsonl");
        let mut storage = Storage::create(&out, None, false).unwrap();
        // Thirty times the queue's length, from a coroutine, as the crawler
        // records: the bounded channel parks it whenever the writer is behind.
        let pages: Vec<PageRecord> = (0..QUEUED_PAGES as u32 * 30).map(page).collect();
        let expected = pages.clone();
        // SAFETY: the coroutine touches no thread-local storage and needs
        // little stack (serde_json on a flat record).
        let handle = unsafe {
            may::coroutine::spawn(move || {
                for page in &pages {
                    storage.record(page, None).unwrap();
                }
                storage.flush().unwrap();
            })
        };
        handle.join().unwrap();
        assert_eq!(lines(&out), expected);
    }

    /// Reads a WARC file with warcio and prints its records as JSON.
    const READ_WITH_WARCIO: &str = r#"
import json, sys
try:
    from warcio.archiveiterator import ArchiveIterator
except ImportError:
    sys.exit("warcio is not installed: python3 -m pip install warcio")
records = []
with open(sys.argv[1], "rb") as f:
    for r in ArchiveIterator(f):
        h = r.rec_headers
        item = {name: h.get_header(name) for name in (
            "WARC-Type", "WARC-Record-ID", "WARC-Date", "WARC-Target-URI",
            "WARC-Concurrent-To", "WARC-IP-Address", "WARC-Warcinfo-ID", "Content-Type")}
        if r.rec_type == "response":
            item["status"] = r.http_headers.get_statuscode()
            item["framing"] = [f"{k}: {v}" for k, v in r.http_headers.headers
                if k.lower() in ("content-length", "transfer-encoding", "content-encoding")]
        if r.rec_type == "request":
            item["request"] = r.http_headers.protocol + " " + r.http_headers.get_header("Host")
        item["content"] = r.content_stream().read().decode("utf-8")
        records.append(item)
print(json.dumps(records))
"#;

    fn read_with_warcio(path: &Path) -> Vec<Value> {
        let output = Command::new("python3")
            .args(["-c", READ_WITH_WARCIO])
            .arg(path)
            .output()
            .expect("python3 runs (the WARC check reads the file with warcio)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "warcio could not read the file: {stderr}"
        );
        assert!(!stderr.contains("Warning"), "warcio warned: {stderr}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    #[test]
    fn warcio_reads_every_record_back() {
        let dir = tempfile::tempdir().unwrap();
        let (out, archive) = (
            dir.path().join("crawl.jsonl"),
            dir.path().join("crawl.warc"),
        );
        let mut storage = Storage::create(&out, Some(&archive), false).unwrap();
        let bodies = [
            "<title>one</title>",
            "",
            "t\u{e9}l\u{e9}phone, decoded from gzip",
        ];
        let heads = [
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 18\r\n\r\n",
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /p/3.html\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
             Content-Encoding: gzip\r\n\r\n",
        ];
        for (i, (head, body)) in heads.iter().zip(bodies).enumerate() {
            let page = page(i as u32);
            let request = format!("GET /p/{i}.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
            let exchange = Exchange {
                request_head: request.as_bytes(),
                response_head: head.as_bytes(),
                body: body.as_bytes(),
                ip: Some([127, 0, 0, 1].into()),
            };
            storage.record(&page, Some(&exchange)).unwrap();
        }
        // A page without a response is in the JSON Lines only.
        storage.record(&page(9), None).unwrap();
        storage.flush().unwrap();

        let records = read_with_warcio(&archive);
        assert_eq!(records.len(), 1 + 2 * 3, "{records:#?}");
        let field = |i: usize, name: &str| records[i][name].as_str().unwrap_or_default().to_owned();
        assert_eq!(field(0, "WARC-Type"), "warcinfo");
        assert!(field(0, "content").contains("format: WARC File Format 1.1"));
        let info_id = field(0, "WARC-Record-ID");
        for (i, body) in bodies.iter().enumerate() {
            let (request, response) = (1 + 2 * i, 2 + 2 * i);
            let url = format!("http://127.0.0.1:8080/p/{i}.html");
            assert_eq!(field(request, "WARC-Type"), "request");
            assert_eq!(field(response, "WARC-Type"), "response");
            for record in [request, response] {
                assert_eq!(field(record, "WARC-Target-URI"), url);
                assert_eq!(
                    field(record, "WARC-Date"),
                    iso_date(page(i as u32).fetched_at_ms)
                );
                assert_eq!(field(record, "WARC-IP-Address"), "127.0.0.1");
                assert_eq!(field(record, "WARC-Warcinfo-ID"), info_id);
            }
            assert_eq!(
                field(request, "WARC-Concurrent-To"),
                field(response, "WARC-Record-ID")
            );
            assert_eq!(
                field(response, "WARC-Concurrent-To"),
                field(request, "WARC-Record-ID")
            );
            assert_eq!(
                field(request, "Content-Type"),
                "application/http;msgtype=request"
            );
            assert_eq!(
                field(response, "Content-Type"),
                "application/http;msgtype=response"
            );
            assert_eq!(field(request, "request"), "GET 127.0.0.1:8080");
            assert_eq!(field(response, "content"), *body);
            // The head describes the body as stored (warcio would try to
            // gunzip or de-chunk it otherwise), whatever the server sent.
            let framing = format!("Content-Length: {}", body.len());
            assert_eq!(records[response]["framing"], serde_json::json!([framing]));
        }
        assert_eq!(records[2]["status"], "200");
        assert_eq!(records[4]["status"], "301");
        assert_eq!(lines(&out).len(), 4);
    }
}
