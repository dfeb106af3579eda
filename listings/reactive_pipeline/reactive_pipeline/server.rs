//! The accept loop: one session coroutine per client, at most
//! `max_connections` at once, every open socket closed on shutdown.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::Shutdown as SocketShutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::{Mutex, WaitGroup};
use may_patterns::accept;
use may_patterns::shutdown::Shutdown;
use serde::Serialize;

use crate::session::{Config, Counters, Session, Stop};

/// What a run did, printed when the server stops.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub connections: u64,
    /// Turned away at the connection cap.
    pub rejected: u64,
    pub lines: u64,
    pub debounced: u64,
    pub searched: u64,
    pub superseded: u64,
    /// Backend calls cancelled before their answer came.
    pub calls_cancelled: u64,
    pub too_long: u64,
    pub idle: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped: connections {} ({} turned away), lines {}, after debounce {}, \
             searched {}, superseded {}, backend calls cancelled {}, lines too long {}, idle {}",
            self.connections,
            self.rejected,
            self.lines,
            self.debounced,
            self.searched,
            self.superseded,
            self.calls_cancelled,
            self.too_long,
            self.idle
        )
    }
}

/// How long a stopping server waits for the backend calls its sessions
/// cancelled to return (each shuts its socket, so they return at once).
const CALLS_CLOSE_WITHIN: Duration = Duration::from_secs(5);

// ANCHOR: run
/// Serve type-ahead sessions on `listener` until `shutdown`, then close
/// every open connection and return once their sessions have ended.
pub fn run(
    listener: TcpListener,
    shutdown: Shutdown,
    config: Arc<Config>,
    max_connections: usize,
) -> io::Result<Summary> {
    let waker = accept::wake_on_shutdown(&listener, &shutdown)?;
    let counters = Arc::new(Counters::default());
    // Open connections, so shutdown can close each socket and stop each
    // pipeline; a may mutex, held for an insert or a remove.
    let open: Arc<Mutex<HashMap<u64, (TcpStream, Stop)>>> = Arc::default();
    let sessions = WaitGroup::new();
    let (mut next_id, mut rejected, mut short) = (0u64, 0u64, false);
    let result = loop {
        let accepted = listener.accept();
        if shutdown.is_triggered() {
            break Ok(());
        }
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            // Out of descriptors or memory: it passes as clients leave.
            // Retrying at once would spin a core (the primer's echo server).
            Err(e) if passes(&e) => {
                short_of(&e, &mut short, &shutdown);
                continue;
            }
            Err(e) => break Err(e),
        };
        if open.lock().unwrap().len() >= max_connections {
            rejected += 1;
            let line = format!("error: {max_connections} connections already; try later\n");
            let _ = stream.write_all(line.as_bytes()); // a fresh socket's buffer is empty
            continue;
        }
        // One more descriptor for the registry, one for the screen's writes.
        let clones = stream
            .try_clone()
            .and_then(|handle| Ok((handle, stream.try_clone()?)));
        let (handle, writer) = match clones {
            Ok(clones) => clones,
            Err(e) => {
                let _ = stream.write_all(b"error: the server is short of resources; try later\n");
                short_of(&e, &mut short, &shutdown);
                continue;
            }
        };
        short = false;
        next_id += 1;
        let id = next_id;
        let session = Session::new();
        open.lock().unwrap().insert(id, (handle, session.stopper()));
        let (config, counters, open, member) = (
            config.clone(),
            counters.clone(),
            open.clone(),
            sessions.clone(),
        );
        go!(move || {
            session.serve(stream, writer, &config, &counters);
            open.lock().unwrap().remove(&id);
            drop(member);
        });
    };
    for (_, (socket, session)) in open.lock().unwrap().drain() {
        let _ = socket.shutdown(SocketShutdown::Both);
        session.stop(); // a search in flight is cancelled, not waited for
    }
    sessions.wait();
    // Their pipelines' cancels are still on their way to the calls.
    config.backends.wait_closed(CALLS_CLOSE_WITHIN);
    waker.finish();
    let n = |c: &AtomicU64| c.load(Ordering::SeqCst);
    result.map(|()| Summary {
        connections: next_id,
        rejected,
        lines: n(&counters.lines),
        debounced: n(&counters.debounced),
        searched: n(&counters.searched),
        superseded: n(&counters.superseded),
        calls_cancelled: n(&config.backends.cancelled),
        too_long: n(&counters.too_long),
        idle: n(&counters.idle),
    })
}
// ANCHOR_END: run

/// How long the accept loop waits after running out of a resource.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Log the first of a run of resource errors, and pause (returning early
/// at shutdown) if the error passes by itself.
fn short_of(e: &io::Error, short: &mut bool, shutdown: &Shutdown) {
    if !*short {
        eprintln!("cannot take a connection: {e}; retrying every {PAUSE:?}");
    }
    *short = true;
    if passes(e) {
        shutdown.wait_timeout(PAUSE); // parks a coroutine, blocks a thread
    }
}

/// An accept error that goes away by itself (Linux's numbers): this
/// process or the system out of descriptors, no socket buffers, no memory.
fn passes(e: &io::Error) -> bool {
    e.kind() == ErrorKind::OutOfMemory || matches!(e.raw_os_error(), Some(23 | 24 | 105))
}
