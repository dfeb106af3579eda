//! What `--resume` needs to go on where a stopped crawl left off: the URLs
//! still to fetch (with their depth), the fingerprints of every URL already
//! seen, and the counters. A text file, one item a line, so a person can
//! read it and `wc -l` counts it:
//!
//! ```text
//! web_crawler checkpoint 1
//! pages 120
//! errors 3
//! seen 2
//! 9f2c66a0d1e4b7c3
//! 04e1b5c8a7d2f690
//! frontier 1
//! 2 http://127.0.0.1:8081/p/7.html
//! end
//! ```
//!
//! Each section says how many lines follow, and the file ends with `end`,
//! so a cut-off file is refused rather than half loaded. `save` writes a
//! temporary file beside the checkpoint, syncs it and renames it over the
//! old one: a crash leaves the old checkpoint or the new, never a mix.
//! Both are blocking file I/O: the crawler calls them on the main thread
//! (before the crawl, and after it stopped), never on a coroutine.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The first line; the number is the format's version, raised whenever a
/// line's meaning changes, so an old program refuses a newer file.
const MAGIC: &str = "web_crawler checkpoint";
const VERSION: u32 = 1;

// ANCHOR: checkpoint
/// A stopped crawl's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// URLs queued but not fetched, with their depth, in queue order.
    pub frontier: Vec<(String, u32)>,
    /// Fingerprints of every URL the frontier has accepted.
    pub seen: Vec<u64>,
    pub pages: u64,
    pub errors: u64,
}

impl Checkpoint {
    /// Write to `path` atomically: a temporary file, synced, then renamed.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some((url, _)) = self
            .frontier
            .iter()
            .find(|(url, _)| url.contains(char::is_whitespace))
        {
            // A normalised URL has none; one with a line break would
            // split its line in two.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot checkpoint the URL {url:?}: it contains white space"),
            ));
        }
        let temporary = temporary_beside(path);
        let fail = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot {what} {}: {e}", temporary.display()),
            )
        };
        let file = File::create(&temporary).map_err(|e| fail("create", e))?;
        let mut out = BufWriter::new(file);
        self.write_to(&mut out).map_err(|e| fail("write", e))?;
        let file = out
            .into_inner()
            .map_err(|e| fail("write", e.into_error()))?;
        file.sync_all().map_err(|e| fail("sync", e))?;
        fs::rename(&temporary, path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot rename {} to {}: {e}",
                    temporary.display(),
                    path.display()
                ),
            )
        })?;
        // The rename is durable once the directory that records it is synced.
        let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(directory.unwrap_or(Path::new(".")))?.sync_all()
    }

    /// Read a checkpoint `save` wrote; anything else is an error that says
    /// which line is wrong.
    pub fn load(path: &Path) -> io::Result<Checkpoint> {
        let file = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open checkpoint {}: {e}", path.display()),
            )
        })?;
        let mut lines = Lines {
            path,
            lines: BufReader::new(file).lines(),
            number: 0,
        };
        lines.header()?;
        let pages = lines.count("pages")?;
        let errors = lines.count("errors")?;
        let seen = (0..lines.count("seen")?)
            .map(|_| lines.next_line().and_then(|line| lines.fingerprint(&line)))
            .collect::<io::Result<_>>()?;
        let frontier = (0..lines.count("frontier")?)
            .map(|_| lines.next_line().and_then(|line| lines.queued(&line)))
            .collect::<io::Result<_>>()?;
        let end = lines.next_line()?;
        if end != "end" {
            return Err(lines.bad(&format!("expected `end`, found {end:?}")));
        }
        if lines.lines.next().is_some() {
            lines.number += 1;
            return Err(lines.bad("more after `end`: not a file this program wrote"));
        }
        Ok(Checkpoint {
            frontier,
            seen,
            pages,
            errors,
        })
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "{MAGIC} {VERSION}")?;
        writeln!(out, "pages {}", self.pages)?;
        writeln!(out, "errors {}", self.errors)?;
        writeln!(out, "seen {}", self.seen.len())?;
        for fingerprint in &self.seen {
            writeln!(out, "{fingerprint:016x}")?;
        }
        writeln!(out, "frontier {}", self.frontier.len())?;
        for (url, depth) in &self.frontier {
            writeln!(out, "{depth} {url}")?;
        }
        writeln!(out, "end")
    }
}
// ANCHOR_END: checkpoint

/// `crawl.ckpt` -> `crawl.ckpt.tmp`, in the same directory, so the rename
/// stays on one file system (and so is atomic).
fn temporary_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// A checkpoint's lines, counted, so an error can say where it is.
struct Lines<'p> {
    path: &'p Path,
    lines: io::Lines<BufReader<File>>,
    number: usize,
}

impl Lines<'_> {
    fn bad(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "checkpoint {} line {}: {what}",
                self.path.display(),
                self.number
            ),
        )
    }

    fn next_line(&mut self) -> io::Result<String> {
        self.number += 1;
        match self.lines.next() {
            Some(Ok(line)) => Ok(line),
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => Err(self.bad("not UTF-8")),
            Some(Err(e)) => Err(io::Error::new(
                e.kind(),
                format!("cannot read checkpoint {}: {e}", self.path.display()),
            )),
            None => Err(self.bad("the file ends here, before `end`: it was cut off")),
        }
    }

    fn header(&mut self) -> io::Result<()> {
        let line = self.next_line()?;
        let Some(version) = line
            .strip_prefix(MAGIC)
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            return Err(self.bad(&format!(
                "not a web_crawler checkpoint (it starts {line:?})"
            )));
        };
        match version.parse::<u32>() {
            Ok(VERSION) => Ok(()),
            Ok(other) => Err(self.bad(&format!(
                "version {other}, but this program reads version {VERSION}"
            ))),
            Err(_) => Err(self.bad(&format!("version {version:?} is not a number"))),
        }
    }

    /// `<name> <count>`.
    fn count<T: std::str::FromStr>(&mut self, name: &str) -> io::Result<T> {
        let line = self.next_line()?;
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|count| count.parse().ok())
            .ok_or_else(|| self.bad(&format!("expected `{name} <count>`, found {line:?}")))
    }

    fn fingerprint(&self, line: &str) -> io::Result<u64> {
        u64::from_str_radix(line, 16)
            .ok()
            .filter(|_| line.len() == 16)
            .ok_or_else(|| self.bad(&format!("expected 16 hex digits, found {line:?}")))
    }

    /// `<depth> <url>`.
    fn queued(&self, line: &str) -> io::Result<(String, u32)> {
        line.split_once(' ')
            .and_then(|(depth, url)| Some((url.to_owned(), depth.parse().ok()?)))
            .filter(|(url, _)| !url.is_empty())
            .ok_or_else(|| self.bad(&format!("expected `<depth> <url>`, found {line:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            frontier: vec![
                ("http://127.0.0.1:8081/p/7.html".to_owned(), 2),
                ("https://a.test/q?x=1&y=%20".to_owned(), 0),
            ],
            seen: vec![0x9f2c_66a0_d1e4_b7c3, 0, u64::MAX],
            pages: 120,
            errors: 3,
        }
    }

    #[test]
    fn a_saved_checkpoint_loads_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crawl.ckpt");
        sample().save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), sample());
        // Saving again replaces it, and leaves no temporary file behind.
        Checkpoint::default().save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Checkpoint::default());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["crawl.ckpt"]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "web_crawler checkpoint 1\npages 0\nerrors 0\nseen 0\nfrontier 0\nend\n"
        );
    }

    /// The error `load` gives for a file holding `text`.
    fn load_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.ckpt");
        fs::write(&path, text).unwrap();
        let error = Checkpoint::load(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        let message = error.to_string();
        let prefix = format!("checkpoint {} ", path.display());
        message.strip_prefix(&prefix).unwrap_or(&message).to_owned()
    }

    #[test]
    fn a_cut_off_file_is_refused_at_any_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crawl.ckpt");
        sample().save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for keep in 0..lines.len() {
            let cut: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
            let error = load_error(&cut);
            assert!(
                error.contains("cut off") || error.contains("not a web_crawler checkpoint"),
                "{keep} lines: {error}"
            );
        }
        // Cut inside a line: the fingerprint or URL is damaged or missing.
        let error = load_error(&text[..text.find("d1e4").unwrap()]);
        assert_eq!(error, "line 5: expected 16 hex digits, found \"9f2c66a0\"");
    }

    #[test]
    fn wrong_files_say_what_is_wrong() {
        assert_eq!(
            load_error("web_crawler checkpoint 2\n"),
            "line 1: version 2, but this program reads version 1"
        );
        assert_eq!(
            load_error("{\"frontier\": []}\n"),
            "line 1: not a web_crawler checkpoint (it starts \"{\\\"frontier\\\": []}\")"
        );
        assert_eq!(
            load_error("web_crawler checkpoint 1\npages many\n"),
            "line 2: expected `pages <count>`, found \"pages many\""
        );
        assert_eq!(
            load_error(
                "web_crawler checkpoint 1\npages 1\nerrors 0\nseen 0\nfrontier 1\nhttp://x/\n"
            ),
            "line 6: expected `<depth> <url>`, found \"http://x/\""
        );
        assert_eq!(
            load_error(
                "web_crawler checkpoint 1\npages 1\nerrors 0\nseen 0\nfrontier 0\nend\nmore\n"
            ),
            "line 7: more after `end`: not a file this program wrote"
        );
        assert_eq!(
            load_error("web_crawler checkpoint 1\npages 1\nerrors 0\nseen 1\nfrontier 0\nend\n"),
            "line 5: expected 16 hex digits, found \"frontier 0\""
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary.ckpt");
        fs::write(&path, b"web_crawler checkpoint 1\n\xff\xfe\n").unwrap();
        let error = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(error.ends_with("line 2: not UTF-8"), "{error}");
    }

    #[test]
    fn a_missing_file_and_a_url_with_a_space_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.ckpt");
        let error = Checkpoint::load(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(
            error.to_string().starts_with("cannot open checkpoint "),
            "{error}"
        );
        let bad = Checkpoint {
            frontier: vec![("http://x/a\nb".to_owned(), 0)],
            ..Checkpoint::default()
        };
        let error = bad.save(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(!path.exists());
    }
}
