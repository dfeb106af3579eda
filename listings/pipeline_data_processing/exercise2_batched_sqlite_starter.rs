//! Exercise 2 (starter): a batching SQLite writer. The finished program
//! stores a whole run in one transaction: all or nothing, but a crash after
//! an hour loses the hour. Write `BatchedSink`, which commits every `batch`
//! rows (and the rest in `finish`), so a crash loses at most `batch` rows,
//! and which stores each input line at most once, so running the same
//! input again after a crash fills in the missing rows without doubling any.
//!
//! Run it: `cargo run --example exercise2_batched_sqlite_starter`
//! (it panics at the first `todo!()` until you write `BatchedSink`).

// ANCHOR: starter
use std::path::Path;
use std::time::Instant;

/// What the writer stores of a record (the finished program's
/// `CleanOrder`, cut down to three columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub order_id: String,
    pub amount_eur_cents: i64,
}

/// The table `orders`, committed every `batch` rows. Dropping it without
/// `finish` stands for a crash: SQLite rolls back the open transaction, as
/// it does when it finds one after a killed process.
#[allow(dead_code)] // the fields are for your code to use
pub struct BatchedSink {
    connection: rusqlite::Connection,
    batch: usize,
    /// Rows written since the last commit.
    pending: usize,
    /// Commits that stored rows, so far.
    commits: u64,
}

impl BatchedSink {
    /// Open (or create) the database and its table, and start a transaction.
    pub fn open(path: &Path, batch: usize) -> rusqlite::Result<BatchedSink> {
        // Hint: what must the table declare so that a second insert of the
        // same `line` is skipped instead of stored twice?
        let _ = (path, batch);
        todo!("create the table, BEGIN")
    }

    /// Insert one row; commit when `batch` rows are pending.
    pub fn write(&mut self, row: &Row) -> rusqlite::Result<()> {
        let _ = row;
        todo!("INSERT, and COMMIT + BEGIN every `batch` rows")
    }

    /// Commit what is pending; return how many commits stored rows.
    pub fn finish(self) -> rusqlite::Result<u64> {
        todo!("COMMIT")
    }
}
// ANCHOR_END: starter

fn main() -> rusqlite::Result<()> {
    // SQLite blocks the thread that calls it: this runs on the main thread,
    // as the finished program's writer runs on its own OS thread.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let rows = 100;
    for batch in [1, 10, 100] {
        let path = dir.path().join(format!("batch-{batch}.db"));
        let started = Instant::now();
        let mut sink = BatchedSink::open(&path, batch)?;
        for line in 2..rows + 2 {
            let order_id = format!("A-{line}");
            sink.write(&Row {
                line,
                order_id,
                amount_eur_cents: 1250,
            })?;
        }
        let commits = sink.finish()?;
        println!(
            "batches of {batch:>3}: {rows} rows in {:.1?}, commits: {commits}",
            started.elapsed()
        );
    }
    Ok(())
}
