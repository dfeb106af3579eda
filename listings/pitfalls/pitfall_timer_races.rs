//! Known may 0.3.51 bugs: a socket timeout or a connect can break the event
//! loop when a worker loses its CPU at the wrong moment.
//!
//! - A socket read with a timeout: `add_io_timer` puts the timer in the
//!   socket's event-loop list, wakes that loop, and only then stores the
//!   timer's handle in the socket's data (may-0.3.51
//!   src/io/sys/unix/epoll.rs:243-248). If the timer fires in between, the
//!   socket keeps a handle to a spent entry, and the next use of that
//!   handle panics the worker thread, which runs an event loop ("Node value
//!   is None"): the process hangs.
//! - A connect: `TcpStreamConnect::subscribe` hands the coroutine to the
//!   event loop (src/io/sys/unix/net/tcp_stream_connect.rs:124) and then
//!   reads its own fields again (lines 127-135). Another thread may have
//!   resumed the coroutine, finished the connect and moved those fields out
//!   by then.
//!
//! Both are race windows of a few statements on a worker thread; they are
//! lost when the OS takes the worker off its CPU inside them. The listing
//! loads the CPU with spinning OS threads and stresses each case on two
//! workers in child processes, so a crash ends only the child, and counts
//! how the children ended. The counts vary from run to run and are often
//! zero, so the tests check the harness, not the bug.
//!
//! Run it: `cargo run --example pitfall_timer_races`, or choose the sizes:
//! `cargo run --example pitfall_timer_races -- --runs 10 --secs 3 --busy 4`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use may::go;
use may_patterns::runtime::{configure_once, Settings};

/// Count how often socket timeouts and connects crash may 0.3.51 under load.
#[derive(Parser)]
struct Args {
    /// Child processes per case.
    #[arg(long, default_value_t = 6)]
    runs: u32,
    /// How long each child runs its stress, in seconds.
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    secs: f64,
    /// Spinning OS threads each child starts to load the CPU.
    #[arg(long, default_value_t = 4)]
    busy: u32,
}

/// A number of seconds: finite and not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs),
        _ => Err(format!("{text:?} is not a number of seconds >= 0")),
    }
}

/// Set in a child process: "<case>,<secs>,<busy>" to run one stress.
const CHILD: &str = "PITFALL_TIMER_RACES_CHILD";

/// The child's exit code when a panic on any of its threads ended it.
const PANICKED: i32 = 70;

/// A child still running this long after its stress should have ended
/// counts as hung, and is killed.
const GRACE: Duration = Duration::from_secs(10);

/// What a child stresses.
#[derive(Clone, Copy)]
enum Case {
    /// Socket reads with read timeouts of 1-3 ms.
    ReadTimeout,
    /// `may::net::TcpStream::connect` to a local listener, over and over.
    Connect,
}

impl Case {
    const ALL: [Case; 2] = [Case::ReadTimeout, Case::Connect];

    fn name(self) -> &'static str {
        match self {
            Case::ReadTimeout => "read-timeout",
            Case::Connect => "connect",
        }
    }

    fn parse(name: &str) -> Case {
        *Case::ALL
            .iter()
            .find(|c| c.name() == name)
            .expect("a known case")
    }
}

fn main() {
    if let Some(job) = std::env::var_os(CHILD) {
        return run_child(&job.to_string_lossy());
    }
    let args = Args::parse();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{} children per case, {} s of stress each, 2 workers, {} spinning threads, {build} build",
        args.runs, args.secs, args.busy
    );
    for case in Case::ALL {
        let tally = tally(case, args.secs, args.busy, args.runs);
        println!("{}: {}", case.name(), tally.summary());
    }
}

// ANCHOR: children
/// How one child process ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Finished,
    /// The event loop met a spent timer handle.
    SpentTimer,
    /// A connect's state was gone when its subscriber read it again.
    ConnectGone,
    /// Another panic, a signal (a segfault, an abort) or another exit code.
    OtherCrash,
    Hung,
}

/// How a set of child processes ended.
#[derive(Debug, Default)]
struct Tally {
    finished: u32,
    spent_timer: u32,
    connect_gone: u32,
    other_crash: u32,
    hung: u32,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        *match outcome {
            Outcome::Finished => &mut self.finished,
            Outcome::SpentTimer => &mut self.spent_timer,
            Outcome::ConnectGone => &mut self.connect_gone,
            Outcome::OtherCrash => &mut self.other_crash,
            Outcome::Hung => &mut self.hung,
        } += 1;
    }

    fn summary(&self) -> String {
        format!(
            "finished ~{}, \"Node value is None\" ~{}, \"no data to deref for OptionCell\" ~{}, \
             other crash ~{}, hung ~{}",
            self.finished, self.spent_timer, self.connect_gone, self.other_crash, self.hung
        )
    }
}

/// Run the stress in `runs` child processes, one after another.
fn tally(case: Case, secs: f64, busy: u32, runs: u32) -> Tally {
    let mut tally = Tally::default();
    let limit = Duration::from_secs_f64(secs) + GRACE;
    for _ in 0..runs {
        let (status, stderr) = run_bounded(child(case, secs, busy), limit);
        tally.add(classify(status, &stderr));
    }
    tally
}

/// Name what ended a child from its exit status (`None`: it was killed
/// as hung) and what it wrote to standard error.
fn classify(status: Option<ExitStatus>, stderr: &str) -> Outcome {
    match status {
        None => Outcome::Hung,
        Some(status) if status.success() => Outcome::Finished,
        Some(status) if status.code() == Some(PANICKED) => {
            if stderr.contains("Node value is None") {
                Outcome::SpentTimer
            } else if stderr.contains("no data to deref for OptionCell") {
                Outcome::ConnectGone
            } else {
                Outcome::OtherCrash
            }
        }
        Some(_) => Outcome::OtherCrash,
    }
}

/// Run `command` to its end, or kill it after `limit` (status `None`);
/// return its standard error too.
fn run_bounded(mut command: Command, limit: Duration) -> (Option<ExitStatus>, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the listing can start itself");
    // Read standard error on a thread of its own, so that a child that
    // writes a lot cannot block on a full pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // This is the parent, an OS thread that runs no coroutine.
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap())
}

/// This program (or, under `cargo test`, its test binary) as a child that
/// runs one stress.
fn child(case: Case, secs: f64, busy: u32) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD, format!("{},{secs},{busy}", case.name()));
    if cfg!(test) {
        command.args(["tests::child", "--exact", "--ignored"]);
    }
    command
}

/// In the child: load the CPU, run the stress, exit cleanly if nothing
/// panicked. A panic on any thread ends the process at once: without that,
/// a panicked event loop leaves the process hung, and the parent would wait
/// out its limit to learn what the message already says.
fn run_child(job: &str) {
    let mut fields = job.split(',');
    let mut next = || fields.next().expect("<case>,<secs>,<busy>");
    let case = Case::parse(next());
    let run_for = Duration::from_secs_f64(next().parse().unwrap());
    let busy: u32 = next().parse().unwrap();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(PANICKED);
    }));
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..busy {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
    let deadline = Instant::now() + run_for;
    match case {
        Case::ReadTimeout => read_timeouts(deadline),
        Case::Connect => connects(deadline),
    }
    stop.store(true, Ordering::Relaxed);
}
// ANCHOR_END: children

// ANCHOR: stress
/// Until `deadline`: 16 coroutines each read one byte at a time from a
/// socket with a 1 ms read timeout. For each socket an OS thread wakes the
/// reader with a channel message, writes the byte a random 0-3 ms later and
/// waits until the reader has it, so most reads park, and end by timeout
/// and by data in turn. A wake-up sent from an OS thread lands on either
/// worker (round-robin), so a read often starts on the worker that does not
/// poll its socket: the race needs that, since a socket's timers are fired
/// by the worker that polls it.
fn read_timeouts(deadline: Instant) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let readers: Vec<_> = (0..16u64)
        .map(|i| {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            // Hand the accepted socket to may: its reads park coroutines.
            // Safety: `into_raw_fd` gives the descriptor up; only `socket` owns it.
            let mut socket = unsafe { may::net::TcpStream::from_raw_fd(accepted.into_raw_fd()) };
            socket
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let (go, wait) = may::sync::mpsc::channel();
            let (done, done_rx) = std::sync::mpsc::channel();
            // Writers are plain OS threads: they may sleep.
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(i);
                while Instant::now() < deadline {
                    go.send(()).unwrap();
                    std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
                    peer.write_all(b"x").unwrap();
                    if done_rx.recv().is_err() {
                        break;
                    }
                }
            }); // dropping `go` ends the reader
            go!(move || {
                let mut byte = [0; 1];
                for () in wait.iter() {
                    serve();
                    loop {
                        match socket.read(&mut byte) {
                            Ok(0) => return,
                            Ok(_) => {
                                let _ = done.send(());
                                break;
                            }
                            Err(e) if e.kind() == ErrorKind::TimedOut => {}
                            Err(e) => panic!("read: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
}

/// Until `deadline`: 8 coroutines connect to a local listener over and
/// over; an OS thread accepts and closes each connection.
fn connects(deadline: Instant) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    }); // ends with the process
    let connectors: Vec<_> = (0..8)
        .map(|_| {
            go!(move || {
                while Instant::now() < deadline {
                    serve();
                    drop(may::net::TcpStream::connect(addr).unwrap());
                }
            })
        })
        .collect();
    for connector in connectors {
        connector.join().unwrap();
    }
}

/// 300 µs of CPU work, as a busy server does between its reads. The race
/// needs the OS to take a worker off its CPU in the middle of its own code:
/// a mostly idle worker is never preempted (it gets its CPU back as soon as
/// it wakes), a busy one is preempted by the clock tick, wherever it is.
fn serve() {
    let started = Instant::now();
    while started.elapsed() < Duration::from_micros(300) {
        std::hint::spin_loop();
    }
}
// ANCHOR_END: stress

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// Not a test: the body of the child processes the tests start.
    #[test]
    #[ignore = "run by the other tests as a child process"]
    fn child() {
        run_child(&std::env::var(CHILD).expect("started by a test"));
    }

    #[test]
    fn a_child_with_no_stress_time_finishes() {
        for case in Case::ALL {
            let tally = tally(case, 0.0, 1, 1);
            assert_eq!(tally.finished, 1, "{}: {tally:?}", case.name());
        }
    }

    #[test]
    fn a_child_past_its_limit_is_killed_as_hung() {
        // A child that would outlive its limit whatever the races do.
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let started = Instant::now();
        let (status, _) = run_bounded(sleeper, Duration::from_millis(300));
        assert_eq!(classify(status, ""), Outcome::Hung);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn crashes_are_told_apart_by_exit_and_message() {
        let panicked = ExitStatus::from_raw(PANICKED << 8);
        let segfault = ExitStatus::from_raw(11);
        let cases = [
            (ExitStatus::from_raw(0), "", Outcome::Finished),
            (
                panicked,
                "panicked at ...: Node value is None",
                Outcome::SpentTimer,
            ),
            (
                panicked,
                "no data to deref for OptionCell",
                Outcome::ConnectGone,
            ),
            (panicked, "read: connection reset", Outcome::OtherCrash),
            (segfault, "", Outcome::OtherCrash),
        ];
        for (status, stderr, outcome) in cases {
            assert_eq!(classify(Some(status), stderr), outcome, "{stderr}");
        }
    }
}
