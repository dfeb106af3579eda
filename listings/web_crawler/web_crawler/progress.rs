//! The progress line: pages, pages per second, queue and errors, rewritten
//! in place on standard error four times a second, and only when standard
//! error is a terminal (a log file or a pipe gets nothing).
//!
//! The line is drawn by its own OS thread, which may sleep and may block on
//! a slow terminal without holding up a may worker; the scheduler only
//! stores numbers into atomics.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

// ANCHOR: progress
/// What the line shows, written by the scheduler, read by the drawing thread.
#[derive(Debug, Default)]
pub struct Counts {
    pub pages: AtomicU64,
    pub queued: AtomicU64,
    pub errors: AtomicU64,
}

impl Counts {
    /// Store the scheduler's numbers for the next draw.
    pub fn update(&self, pages: u64, queued: usize, errors: u64) {
        self.pages.store(pages, Ordering::Relaxed);
        self.queued.store(queued as u64, Ordering::Relaxed);
        self.errors.store(errors, Ordering::Relaxed);
    }
}

/// The drawing thread, if standard error is a terminal.
pub struct Progress {
    pub counts: Arc<Counts>,
    stop: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// Start drawing if standard error is a terminal; otherwise only keep
    /// the counts.
    pub fn start() -> Progress {
        let counts = Arc::new(Counts::default());
        let stop = std::io::stderr().is_terminal().then(|| {
            let (tx, rx) = mpsc::channel::<()>();
            let shown = counts.clone();
            let started = Instant::now();
            let thread = std::thread::spawn(move || {
                // A message or a hang-up both mean stop; a timeout means draw.
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(EVERY) {
                    let line = line(&shown, started.elapsed());
                    let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K"); // leave a clean line for the summary
            });
            (tx, thread)
        });
        Progress { counts, stop }
    }

    /// Stop drawing and clear the line (waits at most one redraw).
    pub fn finish(mut self) {
        if let Some((tx, thread)) = self.stop.take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// The line itself: `1200 pages  48.0 pages/s  queue 310  errors 3`.
pub fn line(counts: &Counts, elapsed: Duration) -> String {
    let pages = counts.pages.load(Ordering::Relaxed);
    let rate = pages as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{pages} pages  {rate:.1} pages/s  queue {}  errors {}",
        counts.queued.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed)
    )
}
// ANCHOR_END: progress

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_pages_rate_queue_and_errors() {
        let progress = Progress::start();
        progress.counts.update(120, 31, 2);
        assert_eq!(
            line(&progress.counts, Duration::from_secs(10)),
            "120 pages  12.0 pages/s  queue 31  errors 2"
        );
        assert_eq!(
            line(&Counts::default(), Duration::ZERO),
            "0 pages  0.0 pages/s  queue 0  errors 0"
        );
        progress.finish();
    }
}
