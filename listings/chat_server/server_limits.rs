//! The server layer's limits, measured: what an accept loop does when the
//! process has no file descriptor left, and how much stack a connection
//! coroutine uses.
//!
//! Out of descriptors, `accept` fails with `EMFILE` while the client waits
//! in the listener's backlog, so the next `accept` fails again at once. A
//! loop that retries at once spins a core for as long as it lasts;
//! `server::run` pauses, 10 ms doubling to 1 s. Each case runs in a child
//! process (this program again) started under `ulimit -n 128`, which fills
//! its descriptors with `/dev/null`, connects one client with the last one,
//! and watches its own CPU time for a second before it frees some.
//!
//! Stack: may measures a coroutine spawned with an odd stack size (see the
//! primer's `stack_usage`); the child serves one client, plain and TLS,
//! on connection coroutines of 1 MiB + 1 word, and prints may's report.
//!
//! Run it: `cargo run --example server_limits`; for release figures as a
//! table, `cargo run --release --example server_limits -- --write-table
//! book/chat_server/server_stack.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::go;
use may::net::TcpListener;
use may_patterns::machine;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;
use may_patterns::tls;

/// The child's descriptor limit: small, so filling it is quick.
const CHILD_NOFILE: u32 = 128;
/// How long the child stays out of descriptors while it measures.
const STARVED: Duration = Duration::from_secs(1);
/// The environment variable that makes this program (or its test binary)
/// a child running one case.
const CASE_ENV: &str = "SERVER_LIMITS_CASE";
/// Stack of the measured coroutines: 1 MiB plus the word that makes it odd.
const MEASURING_STACK_WORDS: usize = (1 << 17) + 1;
/// Bytes the stack cases echo, in 16 KiB rounds.
const ECHOED: usize = 256 * 1024;

// ANCHOR: naive
/// The pitfall: retry `accept` at once whatever it says. Serves its first
/// client, then returns how many accepts failed before it.
fn retry_at_once(listener: TcpListener, stop: Arc<AtomicBool>) -> u64 {
    let mut failed = 0;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((tcp, _)) => {
                echo_one_line(tcp);
                break;
            }
            Err(_) => failed += 1, // EMFILE: the client is still waiting
        }
    }
    failed
}
// ANCHOR_END: naive

fn echo_one_line(mut stream: impl Read + Write) {
    let mut line = String::new();
    let _ = BufReader::new(&mut stream).read_line(&mut line);
    let _ = stream.write_all(line.as_bytes());
}

/// CPU time this process has used (user + system, every thread), from
/// `/proc/self/stat`, opened before the descriptors ran out. Linux counts
/// it in ticks of 1/100 s (USER_HZ) on every architecture this book runs on.
fn cpu_time(stat: &mut File) -> io::Result<Duration> {
    let mut text = String::new();
    stat.rewind()?;
    stat.read_to_string(&mut text)?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = text[text.rfind(')').unwrap_or(0) + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Ok(Duration::from_millis(ticks * 10))
}

/// What one starved accept loop did.
struct Starved {
    failed_accepts: u64,
    cpu: Duration,
    served_after: Duration,
}

// ANCHOR: starve
/// Fill every descriptor, connect a client with the last one, measure the
/// CPU this process uses for `STARVED`, then free some and time how long
/// the client waits for its answer. `stop` ends the accept loop.
fn starve(addr: SocketAddr, stop: impl FnOnce()) -> io::Result<(Duration, Duration)> {
    let mut stat = File::open("/proc/self/stat")?;
    let mut files = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        files.push(file);
    }
    files.pop(); // the client's socket takes this one
    let mut client = std::net::TcpStream::connect(addr)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    client.write_all(b"ping\n")?;
    let before = cpu_time(&mut stat)?;
    std::thread::sleep(STARVED); // the main thread, not a may worker
    let cpu = cpu_time(&mut stat)? - before;
    files.truncate(files.len().saturating_sub(16));
    let freed = Instant::now();
    let mut answer = String::new();
    BufReader::new(&client).read_line(&mut answer)?;
    let served_after = freed.elapsed();
    assert_eq!(answer, "ping\n");
    stop();
    Ok((cpu, served_after))
}
// ANCHOR_END: starve

/// The two accept loops, each in a starved child.
fn starved_case(backoff: bool) -> io::Result<Starved> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    if backoff {
        let shutdown = Shutdown::new();
        let server = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                server::run(listener, &shutdown, Config::default(), |conn: Conn| {
                    echo_one_line(conn)
                })
            })
        };
        let (cpu, served_after) = starve(addr, || shutdown.trigger())?;
        let report = server.join().expect("the server thread ends")?;
        Ok(Starved {
            failed_accepts: report.accept_errors,
            cpu,
            served_after,
        })
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || retry_at_once(listener, stop))
        };
        let (cpu, served_after) = starve(addr, || stop.store(true, Ordering::Relaxed))?;
        Ok(Starved {
            failed_accepts: server.join().expect("the loop ends"),
            cpu,
            served_after,
        })
    }
}

// ANCHOR: stack_case
/// Serve one client on a measured connection coroutine: TLS handshake (or
/// none), split, the reader half here and a measured writer coroutine, an
/// echo of `ECHOED` bytes. may prints each coroutine's stack use when it ends.
fn stack_case(with_tls: bool) -> io::Result<()> {
    let ca = tls::TestCa::new("server_limits CA");
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let config = Config {
        stack_size: MEASURING_STACK_WORDS * size_of::<usize>(),
        tls: with_tls
            .then(|| tls::server_config(&ca.issue(&["127.0.0.1"])))
            .transpose()?,
        ..Config::default()
    };
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || server::run(listener, &shutdown, config, echo_on_halves))
    };
    let client_config = tls::client_config(ca.roots());
    let client = go!(
        Builder::new().stack_size(0x4000),
        move || -> io::Result<()> {
            let tcp = may_patterns::net::connect(addr)?;
            let mut stream: Box<dyn ReadWrite> = if with_tls {
                Box::new(tls::connect(&client_config, "127.0.0.1", tcp)?)
            } else {
                Box::new(tcp)
            };
            let block = vec![7u8; 16 * 1024];
            let mut back = vec![0u8; block.len()];
            for _ in 0..ECHOED / block.len() {
                stream.write_all(&block)?;
                stream.read_exact(&mut back)?;
                assert_eq!(back, block);
            }
            Ok(())
        }
    )?;
    client.join().expect("the client ends")?;
    shutdown.trigger();
    server.join().expect("the server ends")?;
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The handler measured: the reader half in the connection coroutine, the
/// writer half in a coroutine of its own, a channel between them.
fn echo_on_halves(conn: Conn) {
    let Ok((mut reader, mut writer)) = conn.split() else {
        return;
    };
    let (tx, rx) = may::sync::mpsc::channel::<Vec<u8>>();
    let builder = Builder::new()
        .name("writer".into())
        .stack_size(MEASURING_STACK_WORDS);
    let writing = go!(builder, move || {
        for chunk in rx.iter() {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    })
    .expect("may spawns");
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = reader.read(&mut buf) {
        if tx.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writing.join();
}
// ANCHOR_END: stack_case

/// Run one case in this process and print its result lines (`result\t...`).
fn run_case(case: &str) {
    // One worker: may prints a coroutine's report before it runs what
    // was spawned after that coroutine ended.
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    let outcome = match case {
        "retry-at-once" | "server-run" => starved_case(case == "server-run").map(|s| {
            format!(
                "{}\t{}\t{}\t{}",
                s.failed_accepts,
                s.cpu.as_millis(),
                s.served_after.as_micros(),
                STARVED.as_millis()
            )
        }),
        "plain" | "tls" => stack_case(case == "tls").map(|()| "done".to_owned()),
        other => Err(io::Error::other(format!("no case {other:?}"))),
    };
    go!(|| ()).join().expect("a no-op coroutine"); // may's reports are out
    match outcome {
        Ok(line) => println!("result\t{case}\t{line}"),
        Err(e) => println!("error\t{case}\t{e}"),
    }
}

/// Start this program (or, under `cargo test`, this test binary) as a
/// child running `case` under the descriptor limit; its stdout.
fn in_child(case: &str) -> String {
    let exe = std::env::current_exe().expect("this program's path");
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            &format!("ulimit -n {CHILD_NOFILE} && exec \"$@\""),
            "bash",
        ])
        .arg(exe)
        .env(CASE_ENV, case);
    if cfg!(test) {
        command.args(["tests::child", "--exact", "--ignored", "--nocapture"]);
    }
    let out = command.output().expect("bash starts the child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("result\t{case}\t")),
        "case {case} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One starved loop's figures, from its child's result line.
fn starved_in_child(case: &str) -> Starved {
    let stdout = in_child(case);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("result\t{case}\t")))
        .expect("a result line");
    let n: Vec<u64> = line.split('\t').map(|f| f.parse().unwrap()).collect();
    Starved {
        failed_accepts: n[0],
        cpu: Duration::from_millis(n[1]),
        served_after: Duration::from_micros(n[2]),
    }
}

/// may's report for the coroutine named `name` (`None` for the unnamed
/// connection coroutine), in bytes.
fn stack_used(stdout: &str, name: &str) -> Option<usize> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix(&format!("coroutine name = {name}, stack size = "))?;
        let words = rest
            .rsplit("used size = ")
            .next()?
            .trim()
            .parse::<usize>()
            .ok()?;
        Some(words * size_of::<usize>())
    })
}

/// Stack used by the connection and writer coroutines, plain and TLS.
fn stacks() -> Vec<(&'static str, Option<usize>, Option<usize>)> {
    ["plain", "tls"]
        .into_iter()
        .map(|case| {
            let out = in_child(case);
            (
                case,
                stack_used(&out, "None"),
                stack_used(&out, "Some(\"writer\")"),
            )
        })
        .collect()
}

fn kib(bytes: Option<usize>) -> String {
    bytes.map_or("no report".into(), |b| {
        format!("{:.1} KiB", b as f64 / 1024.0)
    })
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn percent(cpu: Duration) -> String {
    format!("{:.1}%", cpu.as_secs_f64() * 100.0 / STARVED.as_secs_f64())
}

fn write_table(path: &Path, rows: &[(&str, Option<usize>, Option<usize>)]) {
    let mut text = format!(
        "Measured on {} with `cargo run --release --example server_limits -- --write-table {}` \
         ({} build, may's report of each coroutine's stack use), {}.\n\n\
         | connection | connection coroutine (handshake, reader half) | writer coroutine |\n|---|---|---|\n",
        machine::describe(),
        path.display(),
        profile(),
        machine::today()
    );
    for (case, conn, writer) in rows {
        text.push_str(&format!("| {case} | {} | {} |\n", kib(*conn), kib(*writer)));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn main() {
    if let Ok(case) = std::env::var(CASE_ENV) {
        run_case(&case);
        return;
    }
    let mut args = std::env::args().skip(1);
    let table: Option<PathBuf> = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--write-table"), Some(path)) => Some(path.into()),
        _ => {
            eprintln!("usage: server_limits [--write-table FILE]");
            std::process::exit(2);
        }
    };
    println!(
        "out of descriptors (ulimit -n {CHILD_NOFILE}) for {STARVED:.1?}, one client waiting:"
    );
    for (name, case) in [
        ("accept retried at once", "retry-at-once"),
        ("server::run (backoff)", "server-run"),
    ] {
        let s = starved_in_child(case);
        println!(
            "  {name}: ~{} failed accepts, {} of a core; client served {:.1?} after descriptors were freed",
            s.failed_accepts,
            percent(s.cpu),
            s.served_after
        );
    }
    println!(
        "stack used per connection ({} build), as may reports it:",
        profile()
    );
    let rows = stacks();
    for (case, conn, writer) in &rows {
        println!(
            "  {case}: connection coroutine ~{}, writer coroutine ~{}",
            kib(*conn),
            kib(*writer)
        );
    }
    println!(
        "server::run's default connection stack: {:.1} KiB",
        server::DEFAULT_STACK_SIZE as f64 / 1024.0
    );
    if let Some(path) = table {
        write_table(&path, &rows);
        println!("wrote {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a test of its own: the child process the tests below start.
    #[test]
    #[ignore]
    fn child() {
        if let Ok(case) = std::env::var(CASE_ENV) {
            run_case(&case);
        }
    }

    #[test]
    fn a_starved_loop_that_retries_spins_and_server_run_does_not() {
        let spinning = starved_in_child("retry-at-once");
        let backing_off = starved_in_child("server-run");
        // Loose bounds: a spinning loop fails hundreds of thousands of
        // times a second (how much CPU it gets depends on the machine's
        // load); 10 ms doubling fails about 7 times and sleeps in between.
        assert!(
            spinning.failed_accepts > 1000,
            "{}",
            spinning.failed_accepts
        );
        assert!(spinning.failed_accepts > backing_off.failed_accepts * 100);
        assert!(
            (3..=20).contains(&backing_off.failed_accepts),
            "{}",
            backing_off.failed_accepts
        );
        assert!(backing_off.cpu < STARVED / 10, "{:?}", backing_off.cpu);
        // It serves again within its longest pause (1 s) and some slack.
        assert!(backing_off.served_after < Duration::from_secs(2));
    }

    #[test]
    fn a_connection_fits_the_default_stack_with_room_to_spare() {
        for (case, conn, writer) in stacks() {
            let (conn, writer) = (conn.unwrap(), writer.unwrap());
            // A quarter of the default at least for the handler's own work.
            assert!(conn < server::DEFAULT_STACK_SIZE * 3 / 4, "{case}: {conn}");
            assert!(writer < server::DEFAULT_STACK_SIZE / 2, "{case}: {writer}");
        }
    }
}
