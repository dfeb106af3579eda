//! Exercise 2 (solution): a batching SQLite writer. It commits every
//! `batch` rows, so a crash loses at most `batch` rows, and the table's key
//! is the input line, so running the same input again after a crash stores
//! the missing rows and skips the ones already there.
//!
//! Run it: `cargo run --example exercise2_batched_sqlite_solution`

use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub order_id: String,
    pub amount_eur_cents: i64,
}

// ANCHOR: solution
/// The table `orders`, committed every `batch` rows. Dropping it without
/// `finish` stands for a crash: SQLite rolls back the open transaction, as
/// it does when it finds one after a killed process.
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
        let connection = rusqlite::Connection::open(path)?;
        // `line` is the key: an input line is stored at most once, so a
        // restart from the top re-inserts nothing it already committed.
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS orders (
                 line INTEGER PRIMARY KEY, order_id TEXT NOT NULL,
                 amount_eur_cents INTEGER NOT NULL);
             BEGIN;",
        )?;
        Ok(BatchedSink {
            connection,
            batch: batch.max(1),
            pending: 0,
            commits: 0,
        })
    }

    /// Insert one row; commit when `batch` rows are pending.
    pub fn write(&mut self, row: &Row) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached("INSERT OR IGNORE INTO orders VALUES (?1, ?2, ?3)")?
            .execute(rusqlite::params![
                row.line,
                row.order_id,
                row.amount_eur_cents
            ])?;
        self.pending += 1;
        if self.pending == self.batch {
            // One COMMIT is one wait for the disk: this is what N divides.
            self.connection.execute_batch("COMMIT; BEGIN;")?;
            self.pending = 0;
            self.commits += 1;
        }
        Ok(())
    }

    /// Commit what is pending; return how many commits stored rows.
    pub fn finish(mut self) -> rusqlite::Result<u64> {
        self.connection.execute_batch("COMMIT")?;
        if self.pending > 0 {
            self.commits += 1;
        }
        Ok(self.commits)
    }
}
// ANCHOR_END: solution

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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64) -> Row {
        Row {
            line,
            order_id: format!("A-{line}"),
            amount_eur_cents: 100,
        }
    }

    fn stored(path: &Path) -> Vec<u64> {
        let connection = rusqlite::Connection::open(path).unwrap();
        let mut query = connection
            .prepare("SELECT line FROM orders ORDER BY line")
            .unwrap();
        let lines = query.query_map([], |r| r.get(0)).unwrap();
        lines.map(Result::unwrap).collect()
    }

    #[test]
    fn a_crash_loses_at_most_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let mut sink = BatchedSink::open(&path, 10).unwrap();
        for line in 1..=25 {
            sink.write(&row(line)).unwrap();
        }
        drop(sink); // the crash: rows 21 to 25 were not committed
        assert_eq!(stored(&path), (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_restart_from_the_top_stores_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let mut sink = BatchedSink::open(&path, 10).unwrap();
        for line in 1..=25 {
            sink.write(&row(line)).unwrap();
        }
        drop(sink);
        let mut sink = BatchedSink::open(&path, 10).unwrap();
        for line in 1..=40 {
            sink.write(&row(line)).unwrap();
        }
        assert_eq!(sink.finish().unwrap(), 4);
        assert_eq!(stored(&path), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn finish_commits_the_last_partial_batch_and_counts_commits() {
        let dir = tempfile::tempdir().unwrap();
        for (batch, commits) in [(1, 7), (3, 3), (100, 1)] {
            let path = dir.path().join(format!("{batch}.db"));
            let mut sink = BatchedSink::open(&path, batch).unwrap();
            for line in 1..=7 {
                sink.write(&row(line)).unwrap();
            }
            assert_eq!(sink.finish().unwrap(), commits, "batch {batch}");
            assert_eq!(stored(&path).len(), 7);
        }
    }
}
