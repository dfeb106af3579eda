//! Step 8: history. Every room message is stored in SQLite by one OS thread
//! that owns the connection (file I/O never runs on a may worker), and only
//! delivered once its transaction has committed: a line any client saw is
//! on disk (WAL, `synchronous = NORMAL`: it survives the process being
//! killed). On JOIN the last `history` lines of the room are replayed, with
//! an IRCv3 `@time=` tag when the client asked for `server-time` (CAP). The
//! rest is a small server in the manner of step 3; its line reader, parser
//! and test client are in `steps_common.rs`, shared by steps 6 to 10.
//!
//! With no arguments it runs a demo: a server in a child process is killed
//! with SIGKILL and restarted on the same database file. With
//! `--serve ADDR [--db PATH] [--fixed-clock]` it serves real clients
//! (`--fixed-clock`: each message 1 s after the last stored, for repeatable
//! output).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::mpsc;
use may_patterns::runtime::{configure_once, Settings};
use rusqlite::{params, Connection};

#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{next_line, parse, Bot};

/// Lines replayed on JOIN.
const HISTORY: usize = 3;
/// Where `--fixed-clock` starts: 2026-12-02T08:00:00Z.
const FIXED_EPOCH_MS: i64 = 1_796_198_400_000;

/// Where a line goes, and whether that client wants `@time=` tags.
#[derive(Clone)]
struct Recipient {
    out: mpsc::Sender<String>,
    server_time: bool,
}

impl Recipient {
    fn send(&self, time_ms: i64, line: &str) {
        let line = match self.server_time {
            true => format!("@time={} {line}", server_time(time_ms)),
            false => line.to_owned(),
        };
        let _ = self.out.send(line); // fails only once the client has gone
    }
}

// ANCHOR: jobs
/// What the history thread does, in the order the rooms queued it.
enum Job {
    /// Store a room message, then deliver it to `to`.
    Say {
        room: String,
        nick: String,
        text: String,
        to: Vec<Recipient>,
    },
    /// Send the room's last `HISTORY` stored lines to one client.
    Replay { room: String, to: Recipient },
}
// ANCHOR_END: jobs

/// The clock messages are stamped with.
enum Stamp {
    Real,
    /// 1 s after the last stored message (or `FIXED_EPOCH_MS`).
    Fixed(i64),
}

impl Stamp {
    fn next(&mut self) -> i64 {
        match self {
            Stamp::Real => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            Stamp::Fixed(last) => {
                *last += 1000;
                *last
            }
        }
    }
}

/// Open (or create) the database: WAL, so a commit is one append and
/// readers never wait; `synchronous = NORMAL`, so a commit survives the
/// process dying (not the machine losing power: that needs FULL).
fn open(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY, room TEXT NOT NULL, time_ms INTEGER NOT NULL,
             nick TEXT NOT NULL, text TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS by_room ON messages (room, id);",
    )?;
    Ok(conn)
}

// ANCHOR: history_thread
/// The history thread: take every job queued (one batch), store the
/// batch's messages in ONE transaction, commit, and only then deliver the
/// batch in order. A replay reads after the commit, but only up to the
/// last message queued before it: the batch's later messages are stored
/// too by then, and the joiner gets those live.
fn keep_history(mut conn: Connection, jobs: mpsc::Receiver<Job>, mut stamp: Stamp) {
    while let Ok(first) = jobs.recv() {
        let batch: Vec<Job> = std::iter::once(first).chain(jobs.try_iter()).collect();
        let marks = match store(&mut conn, &batch, &mut stamp) {
            Ok(marks) => marks,
            Err(e) => {
                // Not stored means not delivered: no client sees a line
                // that a restart would lose.
                eprintln!("history: a batch of {} was not stored: {e}", batch.len());
                continue;
            }
        };
        for (job, mark) in batch.iter().zip(marks) {
            match (job, mark) {
                (
                    Job::Say {
                        room,
                        nick,
                        text,
                        to,
                    },
                    Mark::Stored { time_ms },
                ) => {
                    let line = format!(":{nick} PRIVMSG {room} :{text}");
                    to.iter().for_each(|r| r.send(time_ms, &line));
                }
                (Job::Replay { room, to }, Mark::UpTo { id }) => {
                    if let Err(e) = replay(&conn, room, id, to) {
                        eprintln!("history: replay of {room} failed: {e}");
                    }
                }
                _ => unreachable!("store gives each job the mark of its kind"),
            }
        }
    }
}

/// What storing a batch gave each job.
enum Mark {
    /// A message, stored with this time.
    Stored { time_ms: i64 },
    /// A replay: the id of the last message stored before it was queued.
    UpTo { id: i64 },
}

/// Insert the batch's messages in one transaction; each job's mark.
fn store(conn: &mut Connection, batch: &[Job], stamp: &mut Stamp) -> rusqlite::Result<Vec<Mark>> {
    let tx = conn.transaction()?;
    let mut last_id: i64 =
        tx.query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |row| {
            row.get(0)
        })?;
    let mut marks = Vec::with_capacity(batch.len());
    for job in batch {
        let mark = match job {
            Job::Say {
                room, nick, text, ..
            } => {
                let time_ms = stamp.next();
                tx.execute(
                    "INSERT INTO messages (room, time_ms, nick, text) VALUES (?1, ?2, ?3, ?4)",
                    params![room, time_ms, nick, text],
                )?;
                last_id = tx.last_insert_rowid();
                Mark::Stored { time_ms }
            }
            Job::Replay { .. } => Mark::UpTo { id: last_id },
        };
        marks.push(mark);
    }
    tx.commit()?;
    Ok(marks)
}

/// The room's last `HISTORY` messages with an id up to `up_to`, oldest first.
fn replay(conn: &Connection, room: &str, up_to: i64, to: &Recipient) -> rusqlite::Result<()> {
    let mut query = conn.prepare_cached(
        "SELECT time_ms, nick, text FROM
           (SELECT id, time_ms, nick, text FROM messages WHERE room = ?1 AND id <= ?2
            ORDER BY id DESC LIMIT ?3)
         ORDER BY id",
    )?;
    let rows = query.query_map(params![room, up_to, HISTORY as i64], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (time_ms, nick, text) = row?;
        to.send(time_ms, &format!(":{nick} PRIVMSG {room} :{text}"));
    }
    Ok(())
}
// ANCHOR_END: history_thread

/// IRCv3 server-time: "2026-12-02T08:00:00.000Z" for milliseconds since the
/// epoch (the civil-from-days conversion of Howard Hinnant's date library).
fn server_time(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// One room's members: id → (nick, recipient).
type Members = BTreeMap<u64, (String, Recipient)>;

// ANCHOR: rooms
/// Every room's members: id → (nick, recipient). A std `Mutex`, held for
/// map updates and channel sends (which never park), never across a yield.
/// The job for the history thread is queued while the lock is held, so a
/// JOIN and a message are queued in the order they changed the room: a
/// message queued before the joiner's replay is in the replay and not sent
/// to it live, one queued after is sent live and not replayed.
struct Rooms {
    members: Mutex<HashMap<String, Members>>,
    history: mpsc::Sender<Job>,
}

impl Rooms {
    fn join(&self, room: &str, id: u64, nick: &str, to: Recipient) {
        let mut rooms = self.members.lock().unwrap();
        let members = rooms.entry(room.to_owned()).or_default();
        members.insert(id, (nick.to_owned(), to.clone()));
        for (_, member) in members.values() {
            let _ = member.out.send(format!(":{nick} JOIN {room}"));
        }
        let _ = self.history.send(Job::Replay {
            room: room.to_owned(),
            to,
        });
    }

    fn say(&self, room: &str, id: u64, nick: &str, text: &str) -> bool {
        let rooms = self.members.lock().unwrap();
        let Some(members) = rooms.get(room).filter(|m| m.contains_key(&id)) else {
            return false;
        };
        let to = members
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(_, (_, r))| r.clone())
            .collect();
        let job = Job::Say {
            room: room.to_owned(),
            nick: nick.to_owned(),
            text: text.to_owned(),
            to,
        };
        let _ = self.history.send(job);
        true
    }
    // ANCHOR_END: rooms

    fn leave_all(&self, id: u64) {
        let mut rooms = self.members.lock().unwrap();
        for members in rooms.values_mut() {
            members.remove(&id);
        }
        rooms.retain(|_, members| !members.is_empty());
    }
}

/// A client, as its connection's coroutine sees it.
struct Client {
    id: u64,
    nick: Option<String>,
    server_time: bool,
    out: mpsc::Sender<String>,
}

impl Client {
    fn send(&self, line: String) {
        let _ = self.out.send(line);
    }
}

// ANCHOR: cap
/// Handle one line; false when the client quit.
fn handle(client: &mut Client, rooms: &Rooms, line: &str) -> bool {
    let (command, params) = parse(line);
    let sub = params.first().map(|p| p.to_ascii_uppercase());
    match (command.as_str(), client.nick.clone(), sub.as_deref()) {
        ("QUIT", _, _) => {
            client.send("ERROR :Closing link: (Quit)".into());
            return false;
        }
        ("CAP", _, Some("LS")) => client.send(":chat.local CAP * LS :server-time".into()),
        ("CAP", _, Some("REQ")) => {
            let wanted = params.get(1).map_or("", |p| p.trim());
            let ok = wanted == "server-time";
            client.server_time |= ok;
            client.send(format!(
                ":chat.local CAP * {} :{wanted}",
                if ok { "ACK" } else { "NAK" }
            ));
        }
        ("CAP", _, _) | ("USER", _, _) => {}
        ("PING", _, _) => client.send(format!("PONG :{}", params.first().map_or("", |p| p))),
        ("NICK", None, _) if !params.is_empty() => {
            client.send(format!(":chat.local 001 {} :Welcome", params[0]));
            client.nick = Some(params[0].clone());
        }
        (_, None, _) => client.send(":chat.local 451 * :You have not registered".into()),
        ("JOIN", Some(nick), _) if !params.is_empty() => {
            let to = Recipient {
                out: client.out.clone(),
                server_time: client.server_time,
            };
            rooms.join(&params[0], client.id, &nick, to);
        }
        // ANCHOR_END: cap
        ("PRIVMSG", Some(nick), _) if params.len() == 2 => {
            if !rooms.say(&params[0], client.id, &nick, &params[1]) {
                client.send(format!(
                    ":chat.local 404 {nick} {} :Cannot send to channel",
                    params[0]
                ));
            }
        }
        (other, Some(nick), _) => {
            client.send(format!(":chat.local 421 {nick} {other} :Unknown command"))
        }
    }
    true
}

/// One client: this coroutine reads and handles its lines, a second one
/// writes what it is sent.
fn serve(stream: TcpStream, id: u64, rooms: Arc<Rooms>) -> io::Result<()> {
    let (out, lines_out) = mpsc::channel::<String>();
    let mut socket = stream.try_clone()?;
    let writer = go!(move || {
        for line in lines_out {
            if socket.write_all(format!("{line}\r\n").as_bytes()).is_err() {
                break;
            }
        }
        let _ = socket.shutdown(Shutdown::Both);
    });
    let mut client = Client {
        id,
        nick: None,
        server_time: false,
        out,
    };
    let mut reader = BufReader::new(stream);
    while let Some(line) = next_line(&mut reader) {
        if !handle(&mut client, &rooms, &line) {
            break;
        }
    }
    rooms.leave_all(id);
    drop(client); // the writer ends once the rooms' and the history's copies are gone
    let _ = writer.join();
    Ok(())
}

/// Open `db` (None: in memory), start the history thread, bind `addr` and
/// serve every client in its own coroutine, forever.
fn start(addr: &str, db: Option<&Path>, fixed_clock: bool) -> io::Result<SocketAddr> {
    let db = db.unwrap_or(Path::new(":memory:"));
    let conn = open(db).map_err(|e| io::Error::other(format!("{}: {e}", db.display())))?;
    let stamp = match fixed_clock {
        false => Stamp::Real,
        true => {
            let last: Option<i64> = conn
                .query_row("SELECT MAX(time_ms) FROM messages", [], |row| row.get(0))
                .map_err(io::Error::other)?;
            Stamp::Fixed(last.unwrap_or(FIXED_EPOCH_MS))
        }
    };
    let (history, jobs) = mpsc::channel();
    std::thread::Builder::new()
        .name("history".into())
        .spawn(move || keep_history(conn, jobs, stamp))?;
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let rooms = Arc::new(Rooms {
        members: Mutex::default(),
        history,
    });
    go!(move || {
        for (id, stream) in (1..).zip(listener.incoming().flatten()) {
            let rooms = rooms.clone();
            go!(move || serve(stream, id, rooms));
        }
    });
    Ok(local)
}

/// What step 8 adds to the shared test client.
impl Bot {
    /// Connect, ask for `server-time`, register as `nick` and join `room`.
    fn join_with_time(addr: SocketAddr, nick: &str, room: &str) -> io::Result<Bot> {
        let mut bot = Bot::connect(addr)?;
        bot.send("CAP REQ :server-time")?;
        bot.register(nick, room)?;
        Ok(bot)
    }
}

/// This program again, as a server in a child process on `db`; killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(db: &Path) -> io::Result<ServerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve", "127.0.0.1:0", "--fixed-clock", "--db"])
            .arg(db)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first)?;
        let addr = first
            .trim()
            .trim_start_matches("serving on ")
            .parse()
            .map_err(io::Error::other);
        Ok(ServerProcess { addr: addr?, child })
    }

    /// SIGKILL: no destructor, no flush, no goodbye.
    fn kill(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ANCHOR: demo
fn demo() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("history.db");
    let server = ServerProcess::start(&db)?;
    let mut alice = Bot::join(server.addr, "alice", "#lobby")?;
    let mut bob = Bot::join(server.addr, "bob", "#lobby")?;
    alice.until(":bob JOIN")?;
    for line in ["hello", "anyone here?", "the build is green", "bye"] {
        bob.send(&format!("PRIVMSG #lobby :{line}"))?;
    }
    let seen = alice.until(":bye")?;
    println!(
        "alice saw bob's {} lines; the server is killed with SIGKILL",
        seen.len()
    );
    server.kill()?;

    let server = ServerProcess::start(&db)?;
    println!("a new server on the same file; carol joins #lobby with server-time:");
    let mut carol = Bot::join_with_time(server.addr, "carol", "#lobby")?;
    carol
        .until(":bye")?
        .iter()
        .for_each(|line| println!("  {line}"));
    println!("dave joins without it:");
    let mut dave = Bot::join(server.addr, "dave", "#lobby")?;
    dave.until(":bye")?
        .iter()
        .for_each(|line| println!("  {line}"));
    carol.send("PRIVMSG #lobby :back again")?;
    println!(
        "carol's new line, live to dave: {}",
        dave.wait_for("back again")?
    );
    Ok(())
}
// ANCHOR_END: demo

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        demo().expect("the demo runs");
        return;
    }
    let (mut addr, mut db, mut fixed_clock) = (None, None, false);
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--serve" => addr = flags.next(),
            "--db" => db = flags.next().map(Path::new),
            "--fixed-clock" => fixed_clock = true,
            _ => addr = None,
        }
    }
    let Some(addr) = addr else {
        eprintln!("usage: step8_history [--serve ADDR [--db PATH] [--fixed-clock]]");
        std::process::exit(2);
    };
    match start(addr, db, fixed_clock) {
        Ok(local) => println!("serving on {local}"),
        Err(e) => {
            eprintln!("step8_history: {e}");
            std::process::exit(2);
        }
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_is_rfc3339_in_utc() {
        assert_eq!(server_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(server_time(951_868_799_123), "2000-02-29T23:59:59.123Z");
        assert_eq!(server_time(FIXED_EPOCH_MS), "2026-12-02T08:00:00.000Z");
    }

    #[test]
    fn a_restarted_server_replays_the_last_lines_tagged_only_on_request() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let first = start("127.0.0.1:0", Some(&db), false).unwrap();
        let mut a = Bot::join(first, "a", "#r").unwrap();
        let mut b = Bot::join(first, "b", "#r").unwrap();
        a.until(":b JOIN").unwrap();
        (0..5).for_each(|i| b.send(&format!("PRIVMSG #r :m{i}")).unwrap());
        a.until(":m4").unwrap(); // delivered, so committed
                                 // A second server on the same file: its own connection and thread.
        let second = start("127.0.0.1:0", Some(&db), false).unwrap();
        let mut tagged = Bot::join_with_time(second, "t", "#r").unwrap();
        let replay = tagged.until(":m4").unwrap();
        assert_eq!(replay.len(), HISTORY);
        assert!(replay
            .iter()
            .all(|l| l.starts_with("@time=20") && l.contains("Z :b PRIVMSG #r")));
        assert!(replay[0].ends_with(":m2"), "{replay:?}");
        let mut plain = Bot::join(second, "p", "#r").unwrap();
        assert_eq!(
            plain.until(":m4").unwrap(),
            [
                ":b PRIVMSG #r :m2",
                ":b PRIVMSG #r :m3",
                ":b PRIVMSG #r :m4"
            ]
        );
    }

    #[test]
    fn a_joiner_sees_each_message_once_replayed_or_live() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", None, false).unwrap();
        let mut talker = Bot::join(addr, "talker", "#r").unwrap();
        let flood = std::thread::spawn(move || {
            for i in 0..300 {
                talker.send(&format!("PRIVMSG #r :{i}")).unwrap();
            }
            talker
        });
        let mut joiner = Bot::join(addr, "joiner", "#r").unwrap();
        let mut numbers = Vec::new();
        while numbers.last() != Some(&299) {
            let line = joiner.line().unwrap().expect("the server closed");
            numbers.push(line.rsplit(':').next().unwrap().parse::<u32>().unwrap());
        }
        // Whatever part was replayed, the rest follows it with no gap and no repeat.
        let first = numbers[0];
        assert_eq!(numbers, (first..300).collect::<Vec<_>>());
        drop(flood.join().unwrap());
    }
}
