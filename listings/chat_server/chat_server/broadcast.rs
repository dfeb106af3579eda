//! The broadcast stage: every line the router sends leaves through here, in
//! the router's order, and a room message is on disk before anyone gets it.
//!
//! One OS thread owns the SQLite connection (rusqlite blocks the thread it
//! runs on, so it must not run on a may worker). The router hands it
//! [`Delivery`] items through a bounded queue and parks when the queue is
//! full: a slow disk slows the router, it never makes memory grow. The
//! thread takes what is queued as one batch, stores the batch's room
//! messages in ONE transaction, commits, and only then pushes the batch's
//! lines to the outboxes, in order. Batching is what makes this cheap: one
//! commit covers every message that arrived while the last one was being
//! written, so the commit rate stays low however fast people type.
//!
//! **What survives.** The file is in WAL mode with `synchronous = NORMAL`:
//! a commit appends the batch to the write-ahead log with `write()`, and
//! SQLite calls `fsync` only when it checkpoints the log into the database.
//! When the server process dies (`kill -9`, a panic, the OOM killer) the
//! kernel still holds those written pages and puts them in the file, and
//! the next open replays the log: every committed batch, so every line any
//! client received, is there. A power cut or a kernel crash is different:
//! batches committed since the last checkpoint's `fsync` can be lost (the
//! database stays consistent, only its newest messages go), including lines
//! clients already saw. `synchronous = FULL` closes that gap by calling
//! `fsync` on the log at every commit: one `fsync` per batch, a wait for
//! the device itself (longest on a spinning disk or a busy cloud volume),
//! and it lengthens the wait of every line in that batch. A chat server's
//! history is worth less than that latency, so this one keeps NORMAL;
//! change the pragma in history.rs where losing a message the users saw is
//! worse than slowing every delivery.
//!
//! **When storing fails** (a full disk, a read-only file), the batch's
//! room messages are not delivered to anyone: the promise is that what a
//! client received is in the history. Their senders get `404` (cannot send
//! to channel) with the reason, a `NOTICE` is dropped without a reply (RFC
//! 2812 3.3.2: no automatic reply to a notice), one line goes to stderr
//! per failed batch, and everything else in the batch (numerics, joins,
//! parts) is still delivered.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use may_patterns::bounded;
use rusqlite::Connection;

use crate::history::{self, NewMessage};
use crate::irc::{self, numeric, Message};
use crate::outbox::{Line, Outbox, SendQExceeded};

/// Deliveries that may wait for the stage before the router parks. Room
/// enough for a burst of fan-outs while a commit is under way; the router
/// feels a disk that stays slow.
pub const QUEUE: usize = 4096;

/// Most deliveries one batch (one transaction) takes: a bound on the work
/// done before the first of them is delivered.
pub const MAX_BATCH: usize = 512;

// ANCHOR: delivery
/// One thing to deliver, in router order.
pub enum Delivery {
    /// One client (numerics, replies).
    To { to: Outbox, line: Line },
    /// JOIN/PART/QUIT/NICK/TOPIC notices: the same line to many.
    Fanout { to: Vec<Outbox>, line: Line },
    /// A room PRIVMSG/NOTICE: stored (committed) first, then sent to `to`,
    /// with an `@time=` tag for outboxes that want server-time. `from` is
    /// the sender, told when the message could not be stored.
    Room {
        room: String,
        prefix: String,
        command: &'static str,
        text: String,
        to: Vec<Outbox>,
        from: Outbox,
    },
    /// Send the last `limit` stored lines of `room` to `to` (on JOIN), with
    /// `@time=` when wanted; only lines stored before this item in router
    /// order, so none of them also arrives live.
    Replay {
        room: String,
        to: Outbox,
        limit: usize,
    },
    /// Queue `last` after what `to` has queued, then close it.
    Close {
        to: Outbox,
        last: Option<Line>,
        reason: String,
    },
}
// ANCHOR_END: delivery

/// The router's end of the stage's queue. Clones feed the same stage; the
/// stage ends when the last one is dropped (after delivering what is queued).
#[derive(Clone)]
pub struct Broadcast {
    queue: bounded::Sender<Delivery>,
}

impl Broadcast {
    /// Parks when the delivery queue is full. Err: the stage has stopped.
    pub fn send(&self, d: Delivery) -> Result<(), Delivery> {
        self.queue.send(d).map_err(|e| e.0)
    }
}

/// What the stage did, for the program's last line and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Room messages committed to the history.
    pub stored: u64,
    /// Room messages a failed transaction refused: delivered to no one.
    pub not_stored: u64,
    /// Lines queued on an outbox (replays included).
    pub delivered: u64,
    /// Lines sent by replays on join.
    pub replayed: u64,
    /// Lines an outbox refused: its client was cut or had gone.
    pub refused: u64,
    /// Clients cut by a line of this stage passing their sendq.
    pub sendq_cut: u64,
    pub batches: u64,
    pub largest_batch: usize,
}

// ANCHOR: start
/// Start the delivery stage on its own OS thread with the SQLite connection
/// it owns (`db` None: an in-memory database, history until exit).
/// `server_name` is the source of the `404` a sender gets when its message
/// could not be stored. The thread ends, returning its report, when every
/// [`Broadcast`] clone is dropped and the queue is empty.
pub fn start(
    db: Option<&Path>,
    server_name: &str,
) -> io::Result<(Broadcast, JoinHandle<BroadcastReport>)> {
    let mut stage = Stage::open(db, server_name)?;
    let (queue, deliveries) = bounded::channel(QUEUE);
    let thread = thread::Builder::new()
        .name("broadcast".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // A plain OS thread: recv blocks it, which is what it is for.
            while let Ok(first) = deliveries.recv() {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match deliveries.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                stage.run_batch(&mut batch, &mut |to: &Outbox, line| to.push(line));
            }
            stage.report
        })?;
    Ok((Broadcast { queue }, thread))
}
// ANCHOR_END: start

/// The stage's state: the connection and what it has done.
struct Stage {
    conn: Connection,
    server_name: String,
    /// The highest message id committed: where a replay asked for before
    /// any new message of its batch stops.
    last_id: i64,
    report: BroadcastReport,
}

/// What storing decided for one item of a batch.
enum Mark {
    /// A room message, committed with this time.
    Stored { time_ms: i64 },
    /// A room message the transaction refused (the error is logged).
    NotStored { why: Arc<str> },
    /// A replay: messages with ids up to this one.
    UpTo(i64),
    /// Nothing to store.
    Pass,
}

impl Stage {
    fn open(db: Option<&Path>, server_name: &str) -> io::Result<Stage> {
        let conn = history::open(db)?;
        let last_id = history::last_id(&conn).map_err(io::Error::other)?;
        Ok(Stage {
            conn,
            server_name: server_name.to_owned(),
            last_id,
            report: BroadcastReport::default(),
        })
    }

    // ANCHOR: run_batch
    /// Store the batch's room messages in one transaction, commit, then
    /// deliver every item in order through `push` (the stage passes
    /// `Outbox::push`; a test passes a probe). Empties `batch`.
    fn run_batch<P>(&mut self, batch: &mut Vec<Delivery>, push: &mut P)
    where
        P: FnMut(&Outbox, Line) -> Result<(), SendQExceeded>,
    {
        self.report.batches += 1;
        self.report.largest_batch = self.report.largest_batch.max(batch.len());
        let marks = self.store(batch);
        for (delivery, mark) in batch.drain(..).zip(marks) {
            self.deliver(delivery, mark, push);
        }
    }
    // ANCHOR_END: run_batch

    // ANCHOR: store
    /// One transaction for every room message of the batch, committed
    /// before anything of the batch is delivered.
    fn store(&mut self, batch: &[Delivery]) -> Vec<Mark> {
        let rooms = batch
            .iter()
            .filter(|d| matches!(d, Delivery::Room { .. }))
            .count();
        if rooms == 0 {
            return batch.iter().map(|d| self.mark_unstored(d, "")).collect();
        }
        match self.try_store(batch) {
            Ok((marks, last_id)) => {
                self.last_id = last_id;
                self.report.stored += rooms as u64;
                marks
            }
            Err(e) => {
                eprintln!("chat_server: history: storing {rooms} room messages failed, none delivered: {e}");
                let why = e.to_string();
                batch.iter().map(|d| self.mark_unstored(d, &why)).collect()
            }
        }
    }

    fn try_store(&mut self, batch: &[Delivery]) -> rusqlite::Result<(Vec<Mark>, i64)> {
        let tx = self.conn.transaction()?;
        let mut last_id = self.last_id;
        let mut marks = Vec::with_capacity(batch.len());
        for delivery in batch {
            marks.push(match delivery {
                Delivery::Room {
                    room,
                    prefix,
                    command,
                    text,
                    ..
                } => {
                    let time_ms = now_ms();
                    let message = NewMessage {
                        room,
                        time_ms,
                        prefix,
                        command,
                        text,
                    };
                    last_id = history::insert_message(&tx, &message)?;
                    Mark::Stored { time_ms }
                }
                Delivery::Replay { .. } => Mark::UpTo(last_id),
                _ => Mark::Pass,
            });
        }
        tx.commit()?;
        Ok((marks, last_id))
    }
    // ANCHOR_END: store

    /// The mark of an item when nothing of its batch was stored.
    fn mark_unstored(&self, delivery: &Delivery, why: &str) -> Mark {
        match delivery {
            Delivery::Room { .. } => Mark::NotStored { why: why.into() },
            Delivery::Replay { .. } => Mark::UpTo(self.last_id),
            _ => Mark::Pass,
        }
    }

    // ANCHOR: deliver
    fn deliver<P>(&mut self, delivery: Delivery, mark: Mark, push: &mut P)
    where
        P: FnMut(&Outbox, Line) -> Result<(), SendQExceeded>,
    {
        match (delivery, mark) {
            (Delivery::To { to, line }, _) => self.push(push, &to, line),
            (Delivery::Fanout { to, line }, _) => {
                for outbox in &to {
                    self.push(push, outbox, line.clone());
                }
            }
            (
                Delivery::Room {
                    room,
                    prefix,
                    command,
                    text,
                    to,
                    ..
                },
                Mark::Stored { time_ms },
            ) => {
                let mut lines = RoomLine::new(&room, &prefix, command, &text, time_ms);
                for outbox in &to {
                    self.push(push, outbox, lines.for_outbox(outbox));
                }
            }
            (
                Delivery::Room {
                    room,
                    prefix,
                    command,
                    from,
                    ..
                },
                Mark::NotStored { why },
            ) => {
                self.report.not_stored += 1;
                if command == "PRIVMSG" {
                    let nick = prefix.split('!').next().unwrap_or("*");
                    let refusal = Message::new(
                        numeric::ERR_CANNOTSENDTOCHAN,
                        &[
                            nick,
                            &room,
                            &format!("Cannot send to channel: not stored ({why})"),
                        ],
                    )
                    .with_prefix(&self.server_name);
                    self.push(push, &from, refusal.to_string().into());
                }
            }
            (Delivery::Replay { room, to, limit }, Mark::UpTo(up_to)) => {
                self.replay(push, &room, &to, limit, up_to)
            }
            (Delivery::Close { to, last, reason }, _) => to.close_with(last, &reason),
            (Delivery::Room { .. } | Delivery::Replay { .. }, _) => {
                unreachable!("store marks every room message and replay")
            }
        }
    }
    // ANCHOR_END: deliver

    // ANCHOR: replay
    /// The last `limit` lines of `room` stored up to `up_to`, oldest first.
    fn replay<P>(&mut self, push: &mut P, room: &str, to: &Outbox, limit: usize, up_to: i64)
    where
        P: FnMut(&Outbox, Line) -> Result<(), SendQExceeded>,
    {
        let stored = match history::last_messages(&self.conn, room, up_to, limit) {
            Ok(stored) => stored,
            Err(e) => {
                eprintln!("chat_server: history: replaying {room} failed: {e}");
                return;
            }
        };
        for m in stored {
            let mut lines = RoomLine::new(room, &m.prefix, &m.command, &m.text, m.time_ms);
            self.report.replayed += 1;
            self.push(push, to, lines.for_outbox(to));
        }
    }
    // ANCHOR_END: replay

    /// Push one line and count what happened. A refused line is not
    /// retried: the outbox refuses only once its client is cut or closed.
    fn push<P>(&mut self, push: &mut P, to: &Outbox, line: Line)
    where
        P: FnMut(&Outbox, Line) -> Result<(), SendQExceeded>,
    {
        // Nearly every line reaches outboxes through this stage, so a
        // client that was open before this push and is cut by "SendQ
        // exceeded" after it was cut by it.
        let was_open = to.close_reason().is_none();
        match push(to, line) {
            Ok(()) => self.report.delivered += 1,
            Err(SendQExceeded) => {
                self.report.refused += 1;
                if was_open && to.close_reason().as_deref() == Some("SendQ exceeded") {
                    self.report.sendq_cut += 1;
                }
            }
        }
    }
}

/// A room line in both forms: with `@time=` (built once, only if an
/// outbox wants it) and without, shared by every outbox of a fan-out.
struct RoomLine {
    plain: Line,
    timed: Option<Line>,
    message: Message,
    time_ms: i64,
}

impl RoomLine {
    fn new(room: &str, prefix: &str, command: &str, text: &str, time_ms: i64) -> RoomLine {
        let message = Message::new(command, &[room, text]).with_prefix(prefix);
        RoomLine {
            plain: message.to_string().into(),
            timed: None,
            message,
            time_ms,
        }
    }

    fn for_outbox(&mut self, outbox: &Outbox) -> Line {
        if !outbox.wants_server_time() {
            return self.plain.clone();
        }
        let (message, time_ms) = (&self.message, self.time_ms);
        self.timed
            .get_or_insert_with(|| {
                let at = UNIX_EPOCH + Duration::from_millis(time_ms.max(0) as u64);
                let tagged = message.clone().with_tag("time", &irc::server_time(at));
                tagged.to_string().into()
            })
            .clone()
    }
}

/// Now, in ms since the Unix epoch (0 on a clock set before 1970).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Batch, ClientId, Drain};

    fn client(id: u64, sendq: usize) -> (Outbox, Drain) {
        Outbox::new(ClientId(id), sendq, || {})
    }

    /// Everything queued on `outbox` so far (never parks: an empty queue
    /// gives nothing instead of waiting for a line that will not come).
    fn taken(outbox: &Outbox, drain: &Drain) -> Vec<String> {
        if outbox.queued_bytes() == 0 {
            return Vec::new();
        }
        let lines = match drain.next() {
            Batch::Lines(lines) | Batch::Last(lines) => lines,
        };
        drain.written(&lines);
        lines.iter().map(|l| l.to_string()).collect()
    }

    fn room(room: &str, text: &str, to: &[&Outbox], from: &Outbox) -> Delivery {
        said("PRIVMSG", room, text, to, from)
    }

    fn said(
        command: &'static str,
        room: &str,
        text: &str,
        to: &[&Outbox],
        from: &Outbox,
    ) -> Delivery {
        Delivery::Room {
            room: room.into(),
            prefix: "ann!ann@127.0.0.1".into(),
            command,
            text: text.into(),
            to: to.iter().map(|&o| o.clone()).collect(),
            from: from.clone(),
        }
    }

    fn push_to_outbox(to: &Outbox, line: Line) -> Result<(), SendQExceeded> {
        to.push(line)
    }

    #[test]
    fn a_line_is_delivered_only_after_its_batch_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let mut stage = Stage::open(Some(&path), "chat.test").unwrap();
        // A second connection sees only committed rows (WAL readers do).
        let reader = Connection::open(&path).unwrap();
        let (a, a_drain) = client(1, 4096);
        let (ann, _) = client(2, 4096);
        let mut batch = vec![
            room("#rust", "one", &[&a], &ann),
            room("#rust", "two", &[&a], &ann),
        ];
        let mut rows_seen = Vec::new();
        stage.run_batch(&mut batch, &mut |to: &Outbox, line| {
            let rows: i64 = reader
                .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
                .unwrap();
            rows_seen.push(rows);
            to.push(line)
        });
        assert_eq!(
            rows_seen,
            [2, 2],
            "both rows committed before the first push"
        );
        assert_eq!(
            taken(&a, &a_drain),
            [
                ":ann!ann@127.0.0.1 PRIVMSG #rust one",
                ":ann!ann@127.0.0.1 PRIVMSG #rust two"
            ]
        );
        assert_eq!(stage.report.stored, 2);
        assert_eq!(stage.report.batches, 1);
    }

    #[test]
    fn a_replay_is_the_last_n_oldest_first_with_time_for_who_wants_it() {
        let mut stage = Stage::open(None, "chat.test").unwrap();
        let (ann, _) = client(1, 4096);
        let (timed, timed_drain) = client(2, 4096);
        let (plain, plain_drain) = client(3, 4096);
        timed.set_server_time(true);
        let mut batch: Vec<Delivery> = (1..=5)
            .map(|i| room("#Rust", &format!("m{i}"), &[], &ann))
            .collect();
        batch.push(room("#other", "elsewhere", &[], &ann));
        for to in [&timed, &plain] {
            batch.push(Delivery::Replay {
                room: "#rust".into(),
                to: to.clone(),
                limit: 3,
            });
        }
        stage.run_batch(&mut batch, &mut push_to_outbox);
        assert_eq!(
            taken(&plain, &plain_drain),
            [3, 4, 5].map(|i| format!(":ann!ann@127.0.0.1 PRIVMSG #rust m{i}"))
        );
        let timed_lines = taken(&timed, &timed_drain);
        assert_eq!(timed_lines.len(), 3);
        let time = regex::Regex::new(r"^@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ").unwrap();
        for (line, i) in timed_lines.iter().zip(3..) {
            assert!(time.is_match(line), "{line}");
            assert!(line.ends_with(&format!(" PRIVMSG #rust m{i}")), "{line}");
        }
        assert_eq!(stage.report.replayed, 6);
    }

    #[test]
    fn a_replay_holds_what_came_before_it_and_nothing_after() {
        let mut stage = Stage::open(None, "chat.test").unwrap();
        let (ann, _) = client(1, 4096);
        let (bob, bob_drain) = client(2, 4096);
        let replay = || Delivery::Replay {
            room: "#a".into(),
            to: bob.clone(),
            limit: 10,
        };
        // In one batch: a message before the replay (bob was not in the
        // room yet), the replay, a message after it (bob is in the room).
        let mut batch = vec![
            room("#a", "before", &[], &ann),
            replay(),
            room("#a", "after", &[&bob], &ann),
        ];
        stage.run_batch(&mut batch, &mut push_to_outbox);
        assert_eq!(
            taken(&bob, &bob_drain),
            [
                ":ann!ann@127.0.0.1 PRIVMSG #a before",
                ":ann!ann@127.0.0.1 PRIVMSG #a after"
            ],
            "each line exactly once"
        );
    }

    #[test]
    fn history_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let (ann, _) = client(1, 4096);
        let (broadcast, stage) = start(Some(&path), "chat.test").unwrap();
        broadcast.send(room("#a", "kept", &[], &ann)).ok().unwrap();
        drop(broadcast);
        assert_eq!(stage.join().unwrap().stored, 1);

        let (bob, bob_drain) = client(2, 4096);
        let (broadcast, stage) = start(Some(&path), "chat.test").unwrap();
        let replay = Delivery::Replay {
            room: "#A".into(),
            to: bob.clone(),
            limit: 50,
        };
        broadcast.send(replay).ok().unwrap();
        drop(broadcast);
        assert_eq!(stage.join().unwrap().replayed, 1);
        assert_eq!(
            taken(&bob, &bob_drain),
            [":ann!ann@127.0.0.1 PRIVMSG #A kept"]
        );
    }

    #[test]
    fn a_message_that_cannot_be_stored_reaches_no_one_and_its_sender_hears_why() {
        let mut stage = Stage::open(None, "chat.test").unwrap();
        // Every write now fails, as on a full disk.
        stage.conn.execute_batch("PRAGMA query_only = ON").unwrap();
        let (ann, ann_drain) = client(1, 4096);
        let (bob, bob_drain) = client(2, 4096);
        let mut batch = vec![
            room("#a", "lost", &[&bob], &ann),
            said("NOTICE", "#a", "quiet", &[&bob], &ann),
            Delivery::To {
                to: bob.clone(),
                line: "PING :still here".into(),
            },
        ];
        stage.run_batch(&mut batch, &mut push_to_outbox);
        assert_eq!(taken(&bob, &bob_drain), ["PING :still here"]);
        let refusals = taken(&ann, &ann_drain);
        assert_eq!(refusals.len(), 1, "a NOTICE gets no reply: {refusals:?}");
        assert!(
            refusals[0].starts_with(":chat.test 404 ann #a :Cannot send to channel: not stored ("),
            "{refusals:?}"
        );
        assert_eq!((stage.report.stored, stage.report.not_stored), (0, 2));
    }

    #[test]
    fn a_client_past_its_sendq_is_cut_once_and_its_lines_refused() {
        let mut stage = Stage::open(None, "chat.test").unwrap();
        // 30 bytes: one 20-byte line (22 with CRLF) fits, a second does not.
        let (slow, _) = client(1, 30);
        let line: Line = "x".repeat(20).into();
        let mut batch: Vec<Delivery> = (0..3)
            .map(|_| Delivery::Fanout {
                to: vec![slow.clone()],
                line: line.clone(),
            })
            .collect();
        stage.run_batch(&mut batch, &mut push_to_outbox);
        let r = &stage.report;
        assert_eq!((r.delivered, r.refused, r.sendq_cut), (1, 2, 1));
        assert_eq!(slow.close_reason().as_deref(), Some("SendQ exceeded"));
    }
}
