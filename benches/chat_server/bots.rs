//! The bot load: IRC clients as may coroutines in the bench process, each
//! registered and joined to one room, each sending lines at a fixed rate
//! with the send time in the text, each recording how late every room line
//! reached it. The same bots, the same code, against either server.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use may::net::TcpStream;

/// Time stamps in the lines are microseconds since this instant.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_now() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// How many bots may be connecting and registering at once.
const CONNECTING: usize = 8;

/// What every bot's reader reports into.
#[derive(Default)]
struct Shared {
    /// Lines of other phases (or before any) are not counted.
    phase: AtomicU64,
    delivered: AtomicU64,
    /// When the last counted line arrived (µs since the epoch).
    last_delivery: AtomicU64,
    /// Readers that ended: the server closed them (or an error did).
    gone: AtomicU64,
    /// Ask the kernel for an immediate ACK before each read (`quick_ack`).
    quickack: AtomicBool,
}

/// One bot's record of delivery latencies (µs) in the current phase. A
/// std Mutex: held for one push or one swap, never across a yield.
type Samples = Arc<Mutex<Vec<u32>>>;

/// `n` registered bots, bot `i` in room `i % rooms`.
pub struct Bots {
    n: usize,
    rooms: usize,
    shared: Arc<Shared>,
    writers: Vec<Option<TcpStream>>,
    samples: Vec<Samples>,
}

/// One load phase, as the bots saw it.
pub struct Phase {
    pub sent: u64,
    /// Lines the rooms should have delivered: every sent line to every
    /// other member of its room.
    pub expected: u64,
    pub delivered: u64,
    /// First send to last counted delivery.
    pub span: Duration,
    /// Sorted delivery latencies.
    pub latencies: Vec<u32>,
    /// Bots the server had disconnected by the end of the phase.
    pub gone: u64,
}

impl Phase {
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.span.as_secs_f64()
    }

    /// The `q` quantile of the latencies (0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(u64::from(self.latencies[i]))
    }
}

impl Bots {
    /// Connect `n` bots to `addr`, bot `i` nicknamed `{nick}{i}`; returns
    /// once every one is registered and has joined its room (its 366, end
    /// of NAMES, arrived).
    pub fn connect(addr: SocketAddr, n: usize, rooms: usize, nick: &str) -> Bots {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = may::sync::mpsc::channel::<Result<(), String>>();
        let mut writers = Vec::with_capacity(n);
        let mut samples = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut joined = 0;
        let wait_for_one = |joined: &mut usize| {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(Ok(())) => *joined += 1,
                Ok(Err(e)) => panic!("a bot did not get in: {e}"),
                Err(_) => panic!("{n} bots did not all register and join within 60 s"),
            }
        };
        for i in 0..n {
            // ngircd listens with a backlog of 10 (`ss -ltn` shows it) and
            // accepts a few clients per turn of its loop: a burst of
            // connects overflows the backlog, and each dropped SYN costs
            // the bot a one-second retransmit. So at most `CONNECTING` bots
            // are on their way in at once.
            while i - joined >= CONNECTING {
                wait_for_one(&mut joined);
            }
            // std's connect on this OS thread, then the socket goes to may:
            // may 0.3.51's own connect has the race the Pitfalls reference
            // documents.
            let std = std::net::TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("bot {i}: connect to {addr}: {e}"));
            std.set_nodelay(true).unwrap();
            // Safety: `into_raw_fd` hands the descriptor over; nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(std.into_raw_fd()) };
            writers.push(Some(stream.try_clone().unwrap()));
            let mine = Samples::default();
            samples.push(mine.clone());
            let (shared, ready) = (shared.clone(), ready_tx.clone());
            let room = format!("#room{}", i % rooms);
            let nick = format!("{nick}{i}");
            may::go!(move || read(stream, &nick, &room, &shared, &mine, ready));
        }
        while joined < n {
            wait_for_one(&mut joined);
        }
        Bots {
            n,
            rooms,
            shared,
            writers,
            samples,
        }
    }

    /// Every bot sends `rate` lines a second to its room for `length`, the
    /// bots' sends spread evenly over each period; then the bench waits
    /// (bounded) for the rooms to deliver what was sent.
    pub fn load(&mut self, phase: u64, rate: f64, length: Duration) -> Phase {
        let shared = &self.shared;
        shared.phase.store(phase, Ordering::SeqCst);
        shared.delivered.store(0, Ordering::SeqCst);
        shared.last_delivery.store(0, Ordering::SeqCst);
        for s in &self.samples {
            s.lock().unwrap().clear();
        }
        let gone_before = shared.gone.load(Ordering::SeqCst);
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now() + Duration::from_millis(100);
        let senders: Vec<_> = (0..self.n)
            .map(|i| {
                let mut writer = self.writers[i].take().expect("a writer per bot");
                let first = start + period.mul_f64(i as f64 / self.n as f64);
                let room = format!("#room{}", i % self.rooms);
                may::go!(move || {
                    let sent = send(&mut writer, &room, phase, i, first, start + length, period);
                    (writer, sent)
                })
            })
            .collect();
        let mut sent = 0;
        for (i, sender) in senders.into_iter().enumerate() {
            let (writer, n) = sender.join().expect("a sender does not panic");
            self.writers[i] = Some(writer);
            sent += n;
        }
        let members = (self.n / self.rooms) as u64;
        let expected = sent * (members - 1);
        self.drain(expected);
        // Stop counting: lines still in flight are late, not delivered.
        shared.phase.store(u64::MAX, Ordering::SeqCst);
        let delivered = shared.delivered.load(Ordering::SeqCst);
        let last = Duration::from_micros(shared.last_delivery.load(Ordering::SeqCst));
        let mut latencies: Vec<u32> = Vec::with_capacity(delivered as usize);
        for s in &self.samples {
            latencies.append(&mut s.lock().unwrap());
        }
        latencies.sort_unstable();
        Phase {
            sent,
            expected,
            delivered,
            span: (epoch() + last).saturating_duration_since(start),
            latencies,
            gone: shared.gone.load(Ordering::SeqCst) - gone_before,
        }
    }

    /// Wait until `expected` lines arrived, or none came for 2 s (a server
    /// that dropped some), at most 60 s. A plain OS thread: std sleep is fine.
    fn drain(&self, expected: u64) {
        let give_up = Instant::now() + Duration::from_secs(60);
        let (mut seen, mut since) = (0, Instant::now());
        while Instant::now() < give_up {
            let now = self.shared.delivered.load(Ordering::SeqCst);
            if now >= expected {
                return;
            }
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > Duration::from_secs(2) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// From now on every reader sets `TCP_QUICKACK` before each read that
    /// will wait for the socket, so the bot's kernel acknowledges what it
    /// receives at once instead of delaying the ACK.
    pub fn quick_acks(&self, on: bool) {
        self.shared.quickack.store(on, Ordering::SeqCst);
    }

    /// Say QUIT on every connection (the server sees clients leave, not
    /// resets).
    pub fn quit(mut self) {
        for w in self.writers.iter_mut().flatten() {
            let _ = w.write_all(b"QUIT :bench done\r\n");
        }
    }
}

/// One bot's sender for one phase: a line at `first`, then every `period`
/// until `end`, waiting on the alarm thread (no may timer: a thousand bots
/// wait a thousand times a second). Returns how many it sent.
fn send(
    writer: &mut TcpStream,
    room: &str,
    phase: u64,
    bot: usize,
    first: Instant,
    end: Instant,
    period: Duration,
) -> u64 {
    let alarm = may_patterns::alarm::shared();
    let (mut next, mut sent) = (first, 0);
    while next < end {
        let now = Instant::now();
        if next > now {
            alarm.sleep(next - now);
        }
        let line = format!("PRIVMSG {room} :p={phase} t={} b={bot}\r\n", micros_now());
        if writer.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += 1;
        next += period;
    }
    sent
}

/// One bot's reader: register, join `room`, say it is ready, then count
/// every room line of the current phase and note how late it came.
fn read(
    stream: TcpStream,
    nick: &str,
    room: &str,
    shared: &Shared,
    samples: &Samples,
    ready: may::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut out = stream.try_clone().unwrap();
    let hello = format!("NICK {nick}\r\nUSER {nick} 0 * :bench bot\r\n");
    if let Err(e) = out.write_all(hello.as_bytes()) {
        let _ = ready.send(Err(format!("{nick}: {e}")));
        return;
    }
    // A heap buffer: the coroutine's stack stays small.
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut line = Vec::with_capacity(512);
    let mut joined = false;
    let fd = reader.get_ref().as_raw_fd();
    loop {
        line.clear();
        if reader.buffer().is_empty() && shared.quickack.load(Ordering::Relaxed) {
            quick_ack(fd);
        }
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        let mut words = text.split(' ').skip(1);
        if let Some(token) = text.strip_prefix("PING ") {
            let _ = out.write_all(format!("PONG {token}\r\n").as_bytes());
            continue;
        }
        match words.next().unwrap_or_default() {
            "PRIVMSG" => count(text, shared, samples),
            "001" => {
                let _ = out.write_all(format!("JOIN {room}\r\n").as_bytes());
            }
            "366" if !joined => {
                joined = true;
                let _ = ready.send(Ok(()));
            }
            "433" | "432" | "405" | "471" | "465" => {
                let _ = ready.send(Err(format!("{nick}: {text}")));
            }
            _ => {}
        }
    }
    if !joined {
        let _ = ready.send(Err(format!("{nick}: the server closed before the JOIN")));
    }
    shared.gone.fetch_add(1, Ordering::SeqCst);
}

/// Linux's `TCP_QUICKACK`: acknowledge received data at once, for a while
/// (the kernel drops back to delayed ACKs by itself, so it is set again
/// before each read). No libc dependency for one call: its declaration.
fn quick_ack(fd: RawFd) {
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
    }
    const IPPROTO_TCP: i32 = 6;
    const TCP_QUICKACK: i32 = 12;
    let one: i32 = 1;
    // Safety: `fd` is this reader's open socket; `one` outlives the call.
    unsafe { setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, 4) };
}

/// A room line `... :p=PHASE t=MICROS b=BOT`: counted if it is of the
/// current phase.
fn count(text: &str, shared: &Shared, samples: &Samples) {
    let Some((_, body)) = text.rsplit_once(" :") else {
        return;
    };
    let mut fields = body
        .split(' ')
        .map(|f| f.split_once('=').map_or("", |(_, v)| v));
    let (Some(phase), Some(sent)) = (fields.next(), fields.next()) else {
        return;
    };
    let (Ok(phase), Ok(sent)) = (phase.parse::<u64>(), sent.parse::<u64>()) else {
        return;
    };
    if phase != shared.phase.load(Ordering::Relaxed) {
        return;
    }
    let now = micros_now();
    let late = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX);
    samples.lock().unwrap().push(late);
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    shared.last_delivery.fetch_max(now, Ordering::Relaxed);
}
