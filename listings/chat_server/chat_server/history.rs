//! The chat server's database: one SQLite file with every room's history
//! and the accounts, its schema, and the few queries the server makes.
//!
//! rusqlite's calls block the OS thread that makes them (file I/O, fsync,
//! SQLite's own locks), so none of these functions may run on a may
//! worker: the broadcast stage calls them on its own OS thread, and
//! accounts.rs at start-up and for `--add-account`, on the main thread,
//! before any coroutine runs.
//!
//! Nothing is ever pruned: `messages` grows by one row per room message for
//! as long as the database is kept. `--history N` is how many of them a
//! client is sent when it joins, not how many are kept. To trim it, delete
//! old rows with `sqlite3` (`DELETE FROM messages WHERE time_ms < ...`);
//! WAL lets that run beside the server.

use std::io;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode};

use crate::irc;

// ANCHOR: schema
/// The schema this program writes, kept in SQLite's `user_version` pragma:
/// 0 is a new, empty file (the tables are created), a higher number is a
/// file from a newer program (refused rather than misread).
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY, -- rowid: the order they were stored and delivered in
        room_folded TEXT NOT NULL,       -- casefolded: what a join looks up
        room        TEXT NOT NULL,       -- as the sender wrote it
        time_ms     INTEGER NOT NULL,    -- when it was stored, ms since the Unix epoch
        prefix      TEXT NOT NULL,       -- nick!user@host
        command     TEXT NOT NULL,       -- PRIVMSG or NOTICE
        text        TEXT NOT NULL
    );
    CREATE INDEX messages_by_room ON messages (room_folded, id);
    CREATE TABLE accounts (
        name_folded TEXT PRIMARY KEY,    -- one account per casefolded name
        name        TEXT NOT NULL,
        phc         TEXT NOT NULL        -- the argon2 hash as a PHC string
    );
";
// ANCHOR_END: schema

// ANCHOR: open
/// Open (creating if needed) the database at `db`, or an in-memory one
/// when `db` is `None` (history until the process exits).
///
/// A file is put in WAL mode with `synchronous = NORMAL`; the broadcast
/// stage's documentation says what that survives. `busy_timeout` lets a
/// second process (`--add-account` beside a running server) wait for the
/// writer instead of failing at once.
pub fn open(db: Option<&Path>) -> io::Result<Connection> {
    let name = db.map_or("the in-memory database".into(), |p| p.display().to_string());
    let failed = |e: rusqlite::Error| io::Error::other(format!("{name}: {e}"));
    let conn = match db {
        Some(path) => Connection::open(path).map_err(failed)?,
        None => Connection::open_in_memory().map_err(failed)?,
    };
    if db.is_some() {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(failed)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(io::Error::other(format!(
                "{name}: SQLite refused WAL mode (journal_mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
    }
    conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
    migrate(&conn).map_err(|e| io::Error::other(format!("{name}: {e}")))?;
    Ok(conn)
}

/// Create the tables in a new file; refuse a file of another schema.
fn migrate(conn: &Connection) -> Result<(), String> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| e.to_string())?;
    match version {
        0 => conn
            .execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| e.to_string()),
        SCHEMA_VERSION => Ok(()),
        other => Err(format!(
            "schema version {other}, but this program knows only version {SCHEMA_VERSION}"
        )),
    }
}
// ANCHOR_END: open

// ANCHOR: messages
/// A room message on its way into the database.
pub struct NewMessage<'a> {
    pub room: &'a str,
    pub time_ms: i64,
    pub prefix: &'a str,
    pub command: &'a str,
    pub text: &'a str,
}

/// A room message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub time_ms: i64,
    pub prefix: String,
    pub command: String,
    pub text: String,
}

/// Insert one message (inside the caller's transaction); returns its id.
pub fn insert_message(conn: &Connection, m: &NewMessage) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO messages (room_folded, room, time_ms, prefix, command, text)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        irc::casefold(m.room),
        m.room,
        m.time_ms,
        m.prefix,
        m.command,
        m.text
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The highest message id stored (0 in an empty table).
pub fn last_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
        row.get(0)
    })
}

/// The last `limit` messages of `room` with an id up to `up_to`, oldest
/// first. The index on (room_folded, id) makes it a short backwards walk.
pub fn last_messages(
    conn: &Connection,
    room: &str,
    up_to: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Stored>> {
    let mut query = conn.prepare_cached(
        "SELECT id, time_ms, prefix, command, text FROM messages
         WHERE room_folded = ?1 AND id <= ?2 ORDER BY id DESC LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = query
        .query_map(params![irc::casefold(room), up_to, limit], |row| {
            Ok(Stored {
                id: row.get(0)?,
                time_ms: row.get(1)?,
                prefix: row.get(2)?,
                command: row.get(3)?,
                text: row.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}
// ANCHOR_END: messages

// ANCHOR: accounts
/// Why an account could not be added.
#[derive(Debug)]
pub enum AddError {
    /// An account with this casefolded name exists.
    Exists,
    Db(rusqlite::Error),
}

/// Add an account; `phc` is its password hash as a PHC string.
pub fn insert_account(conn: &Connection, name: &str, phc: &str) -> Result<(), AddError> {
    let folded = irc::casefold(name);
    match conn.execute(
        "INSERT INTO accounts (name_folded, name, phc) VALUES (?1, ?2, ?3)",
        params![folded, name, phc],
    ) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
            Err(AddError::Exists)
        }
        Err(e) => Err(AddError::Db(e)),
    }
}

/// Every account: (casefolded name, name, PHC string).
pub fn accounts(conn: &Connection) -> rusqlite::Result<Vec<(String, String, String)>> {
    conn.prepare("SELECT name_folded, name, phc FROM accounts")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect()
}

// ANCHOR_END: accounts

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(room: &'a str, text: &'a str) -> NewMessage<'a> {
        NewMessage {
            room,
            time_ms: 1_000,
            prefix: "ann!ann@127.0.0.1",
            command: "PRIVMSG",
            text,
        }
    }

    #[test]
    fn a_new_file_gets_the_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let conn = open(Some(&path)).unwrap();
        insert_message(&conn, &message("#Rust", "hi")).unwrap();
        drop(conn);
        let conn = open(Some(&path)).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(
            last_messages(&conn, "#rust", i64::MAX, 10).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_newer_schema_is_refused_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = open(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("schema version 7"), "{err}");
    }

    #[test]
    fn last_messages_are_the_newest_oldest_first_up_to_an_id() {
        let conn = open(None).unwrap();
        let ids: Vec<i64> = (1..=5)
            .map(|i| insert_message(&conn, &message("#a", &format!("m{i}"))).unwrap())
            .collect();
        insert_message(&conn, &message("#b", "elsewhere")).unwrap();
        let texts = |up_to, limit| -> Vec<String> {
            last_messages(&conn, "#A", up_to, limit)
                .unwrap()
                .into_iter()
                .map(|m| m.text)
                .collect()
        };
        assert_eq!(texts(i64::MAX, 3), ["m3", "m4", "m5"]);
        assert_eq!(texts(ids[3], 2), ["m3", "m4"]);
        assert_eq!(texts(i64::MAX, 0), Vec::<String>::new());
        assert_eq!(last_id(&conn).unwrap(), ids[4] + 1);
    }

    #[test]
    fn an_account_name_is_unique_in_any_casing() {
        let conn = open(None).unwrap();
        insert_account(&conn, "Ann[1]", "$argon2id$x").unwrap();
        assert!(matches!(
            insert_account(&conn, "ann{1}", "$argon2id$y"),
            Err(AddError::Exists)
        ));
        assert_eq!(
            accounts(&conn).unwrap(),
            [(
                "ann{1}".to_string(),
                "Ann[1]".to_string(),
                "$argon2id$x".to_string()
            )]
        );
    }
}
