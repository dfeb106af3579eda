//! `--demo`: three demo backends (fast, medium, slow) and one address where
//! nothing listens, the server on a free port, and a scripted typist that
//! types into it and prints what comes back, as a user's terminal would.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown as SocketShutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::go;
use may::net::TcpListener;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::shutdown::Shutdown;

use crate::cli::Cli;
use crate::keystrokes::LineLimits;
use crate::search::Backends;
use crate::server::{self, Summary};
use crate::session::Config;

// ANCHOR: script
/// How long the typist waits after a group of keystrokes.
#[derive(Clone, Copy)]
enum Pause {
    /// A fixed pause, in milliseconds.
    Ms(u64),
    /// Until the search's summary line has come back: a fixed pause after
    /// a search would have to outlast the slowest backend on the busiest
    /// machine for the output to be the same on every run.
    Answered,
}

/// What the typist types: groups of keystrokes 10 ms apart, then a pause.
/// Every gap inside a group is far below the default 150 ms debounce, and
/// every fixed pause far above it, so each run shows the same lines.
const SCRIPT: &[(&[&str], Pause)] = &[
    (&["l", "la", "lam", "lamp"], Pause::Ms(300)), // one search: "lamp"; shop2 is slow
    (&["lamps"], Pause::Answered),                 // "lamp" superseded, shop2's call cancelled
    (&["lamp", "lamps"], Pause::Ms(300)),          // back to "lamps" within the debounce: a repeat
    (&[""], Pause::Ms(300)),                       // the box cleared
    (&["desk lamp"], Pause::Ms(300)),              // not a query the backends take
    (&["desk"], Pause::Answered),                  // one more search
];
// ANCHOR_END: script

/// Run the demo; `Err` is a sentence saying what could not be started.
pub fn run(cli: &Cli) -> Result<(), String> {
    let shops: Vec<Backend> = [("shop0", 15), ("shop1", 60), ("shop2", 600)]
        .into_iter()
        .map(|(name, ms)| Backend::start(BackendConfig::new(name, Duration::from_millis(ms))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start the demo backends: {e}"))?;
    // A port that was just released: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot pick a free port: {e}"))?;
    let mut addrs: Vec<SocketAddr> = shops.iter().map(|b| b.addr).collect();
    addrs.push(dead);
    let config = Arc::new(Config {
        debounce: cli.debounce,
        limits: LineLimits {
            max_line: cli.max_line,
            idle: cli.idle_timeout,
        },
        json: cli.json,
        backends: Arc::new(Backends::new(addrs, cli.timeout)),
    });
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shutdown = Shutdown::new();
    let server = {
        let (shutdown, max) = (shutdown.clone(), cli.max_connections);
        go!(move || server::run(listener, shutdown, config, max))
    };
    type_the_script(addr, cli.max_line, cli.json).map_err(|e| format!("the typist: {e}"))?;
    shutdown.trigger();
    let summary: Summary = server
        .join()
        .map_err(|_| "the server panicked".to_owned())?
        .map_err(|e| format!("the server stopped: {e}"))?;
    if cli.json {
        let json = serde_json::to_string(&summary).expect("a summary serialises");
        println!("{json}");
    } else {
        println!("{summary}");
    }
    for (shop, name) in shops.iter().zip(["shop0", "shop1", "shop2"]) {
        let stat = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let s = &shop.stats;
        let (requests, answered, gone) =
            (stat(&s.requests), stat(&s.answered), stat(&s.client_gone));
        match cli.json {
            true => println!(
                r#"{{"backend":"{name}","addr":"{}","requests":{requests},"answered":{answered},"client_gone":{gone}}}"#,
                shop.addr
            ),
            false => println!(
                "{name} at {}: {requests} requests, {answered} answered, \
                 {gone} left by their client before the answer",
                shop.addr
            ),
        }
    }
    Ok(())
}

// ANCHOR: typist
/// The user: a plain client on this OS thread (not a may worker, so std
/// sockets and sleeps are right here), typing the script and then one line
/// longer than the limit; a second thread prints every line that comes
/// back, until the server closes the connection.
fn type_the_script(addr: SocketAddr, max_line: usize, json: bool) -> std::io::Result<()> {
    let mut keys = std::net::TcpStream::connect(addr)?;
    let screen = BufReader::new(keys.try_clone()?);
    let (summaries_tx, summaries) = std::sync::mpsc::channel();
    let printer = std::thread::spawn(move || {
        for line in screen.lines().map_while(Result::ok) {
            println!("{line}");
            let summary = if json {
                line.contains(r#""done":"#)
            } else {
                line.starts_with("= ")
            };
            if summary {
                let _ = summaries_tx.send(());
            }
        }
    });
    let long = ["x".repeat(max_line + 1)];
    let long: [&str; 1] = [&long[0]];
    let script = SCRIPT.iter().copied().chain([(&long[..], Pause::Ms(0))]);
    for (group, pause) in script {
        // Shown before it is sent, so an answer cannot come first.
        match json {
            true => println!("{{\"typed\":{}}}", serde_json::to_string(group).unwrap()),
            false => {
                let shown: Vec<String> = group.iter().map(|k| shorten(k)).collect();
                println!("typed: {}", shown.join(" | "));
            }
        }
        for (i, key) in group.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            writeln!(keys, "{key}")?;
        }
        while summaries.try_recv().is_ok() {} // only this group's summary counts
        match pause {
            Pause::Ms(ms) => std::thread::sleep(Duration::from_millis(ms)),
            // Bounded: a search ends by --timeout at the latest.
            Pause::Answered => {
                if summaries.recv_timeout(Duration::from_secs(30)).is_err() {
                    let gone = std::io::ErrorKind::TimedOut;
                    return Err(std::io::Error::new(gone, "no summary line within 30 s"));
                }
            }
        }
    }
    let _ = keys.shutdown(SocketShutdown::Write);
    printer.join().expect("the printer thread does not panic");
    Ok(())
}

/// A key as the demo prints it: the long line by its length.
fn shorten(key: &str) -> String {
    match key.len() {
        0..=20 => format!("{key:?}"),
        n => format!("({n} x's)"),
    }
}
// ANCHOR_END: typist
