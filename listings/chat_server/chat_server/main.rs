//! chat_server: a multi-room IRC server that real IRC clients (irssi,
//! WeeChat, python-irc) and a browser (over WebSocket) can use.
//!
//! **Purpose.** People chat in rooms with the clients they already have:
//! registration, JOIN/PART/PRIVMSG/NOTICE/TOPIC/NAMES/LIST/WHO/WHOIS, accounts
//! with argon2 hashes and SASL PLAIN, each room's history kept in SQLite and
//! replayed on JOIN, plain TCP, TLS and the IRCv3 WebSocket transport (with
//! a small page served at `/` for a browser).
//!
//! **Architecture.** Each listener runs `may_patterns::server::run` on its
//! own thread, all of them sharing one set of connection slots
//! (`--max-clients`) and one shutdown. A connection (`connection`) reads
//! lines, paces them by its flood quota and hands them to the router
//! (`router`, one coroutine that owns every user, nick and room, `rooms`);
//! what the router sends goes through the broadcast stage (`broadcast`, an
//! OS thread that commits room messages to SQLite, `history`, before it
//! delivers them) into each client's bounded outbox (`outbox`), which its
//! writer coroutine drains to the socket. Password checks (`accounts`) run
//! on the blocking pool and answer the router with an event.
//!
//! **Usage.** `cargo run --example chat_server -- --demo`, then
//! `irssi -c 127.0.0.1 -p 6667 -n alice` or `nc 127.0.0.1 6667`, or open
//! `http://127.0.0.1:8080/`. Ctrl-C (or SIGTERM) stops it; with `--json`
//! the first and last lines are JSON objects for scripts and tests.
//!
//! **Performance.** See the chapter's side-by-side table with ngircd
//! (`cargo bench --bench chat_server`).
//!
//! **Customization.** Another command: `router::State::handle`. Another
//! transport: a `LineSource` and a `LineSink` (outbox.rs) handed to
//! `connection::serve`. Other limits: `cli::Settings`.

mod accounts;
mod broadcast;
mod cli;
mod connection;
mod history;
mod irc;
mod outbox;
mod rooms;
mod router;
mod websocket;

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use clap::Parser;
use may::net::TcpListener;
use may_patterns::runtime::{configure_once, Settings as MaySettings};
use may_patterns::server::{self, Report, Slots};
use may_patterns::shutdown::Shutdown;
use may_patterns::tls::{self, Issued, TestCa};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use accounts::Accounts;
use cli::{Args, Config};
use connection::{Hub, Transport};

// ANCHOR: main
fn main() -> ExitCode {
    let mut config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            return ExitCode::from(2);
        }
    };
    // may's default stack, 32 KiB (0x1000 words), is what every coroutine
    // spawned without its own size gets (the blocking pool's callers);
    // the connection, writer, pacer and router coroutines set theirs.
    configure_once(MaySettings {
        workers: 2,
        stack_words: 0x1000,
    });
    if let Some(name) = config.add_account.clone() {
        return match add_account(&config, &name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(sentence) => {
                eprintln!("error: {sentence}");
                ExitCode::from(2)
            }
        };
    }
    match run(&mut config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            ExitCode::FAILURE
        }
    }
}
// ANCHOR_END: main

/// `--add-account NAME`: the password is the first line of stdin.
fn add_account(config: &Config, name: &str) -> Result<(), String> {
    let db = config.db.as_deref().expect("clap requires --db");
    let mut password = String::new();
    io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("the password (the first line of stdin) is empty".to_owned());
    }
    accounts::add_account(db, name, password)
        .map_err(|e| format!("cannot add account {name} to {}: {e}", db.display()))?;
    println!("account {name} added to {}", db.display());
    Ok(())
}

// ANCHOR: run
/// Listen, serve until Ctrl-C or SIGTERM, stop everything in order, and
/// print the summary. A failure before serving is one sentence.
fn run(config: &mut Config) -> Result<(), String> {
    // Kept until exit: the demo's database and certificate live in it.
    let demo = if config.demo {
        Some(Demo::create(config)?)
    } else {
        None
    };
    let tls = match (&config.tls_listen, &config.tls_files, &demo) {
        (None, _, _) => None,
        (Some(_), Some((cert, key)), _) => Some(load_tls(cert, key)?),
        (Some(_), None, Some(demo)) => Some(server_tls(&demo.issued)?),
        (Some(_), None, None) => unreachable!("cli checks --cert and --key"),
    };
    let bind = |addr: SocketAddr| {
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let irc = bind(config.listen)?;
    let ws = config.ws_listen.map(bind).transpose()?;
    let tls_listener = config.tls_listen.map(bind).transpose()?;

    let settings = Arc::new(config.settings.clone());
    let db = config.db.as_deref();
    let (broadcast, stage) = broadcast::start(db, &settings.server_name)
        .map_err(|e| format!("cannot open the history database: {e}"))?;
    let accounts = Accounts::load(db).map_err(|e| format!("cannot load the accounts: {e}"))?;
    // Kept for the summary: how many password hashes ran, how many were
    // refused by the failed-attempt limits.
    let accounts = Arc::new(accounts);
    let (router, router_done) = router::spawn(settings.clone(), broadcast, accounts.clone())
        .map_err(|e| format!("cannot start the router: {e}"))?;
    let hub = Hub::new(router, settings, config.max_clients);

    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    ctrlc::set_handler(move || stop.trigger())
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let sweeper = connection::start_sweeper(&hub, shutdown.clone())
        .map_err(|e| format!("cannot start the sweeper: {e}"))?;

    let addr = |l: &TcpListener| l.local_addr().map_err(|e| format!("local address: {e}"));
    let addrs = Addrs {
        irc: addr(&irc)?,
        ws: ws.as_ref().map(addr).transpose()?,
        tls: tls_listener.as_ref().map(addr).transpose()?,
    };
    let slots = Slots::new(config.max_clients);
    let mut listeners = vec![listen(irc, &shutdown, &slots, None, Kind::Plain, &hub)?];
    if let Some(l) = ws {
        listeners.push(listen(l, &shutdown, &slots, None, Kind::WebSocket, &hub)?);
    }
    if let Some(l) = tls_listener {
        listeners.push(listen(l, &shutdown, &slots, tls, Kind::Tls, &hub)?);
    }
    addrs.print(config.json);
    if let Some(demo) = &demo {
        demo.print(&addrs, config.json);
    }

    // Stop in order: listeners (every connection has ended and told the
    // router), then the sweeper; dropping the last router handle ends the
    // router, whose end drops the broadcast stage's last sender.
    let mut reports = Vec::new();
    for l in listeners {
        match l.join() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => eprintln!("error: a listener stopped: {e}"),
            Err(_) => eprintln!("error: a listener panicked"),
        }
    }
    shutdown.trigger(); // a listener that failed alone stops the rest too
    let _ = sweeper.join();
    let stats = hub.stats.clone();
    drop(hub);
    let routed = router_done
        .join()
        .map_err(|_| "the router panicked".to_owned())?;
    let delivered = stage
        .join()
        .map_err(|_| "the broadcast stage panicked".to_owned())?;
    summary(
        &reports,
        &routed,
        &delivered,
        &accounts.report(),
        &stats,
        config.json,
    );
    Ok(())
}
// ANCHOR_END: run

/// Which handler a listener runs.
#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Tls,
    WebSocket,
}

// ANCHOR: listen
/// One listener on its own thread; every listener shares `slots` and
/// `shutdown`.
fn listen(
    listener: TcpListener,
    shutdown: &Shutdown,
    slots: &Slots,
    tls: Option<Arc<rustls::ServerConfig>>,
    kind: Kind,
    hub: &Hub,
) -> Result<JoinHandle<io::Result<Report>>, String> {
    let full: &[u8] = match kind {
        Kind::WebSocket => {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Kind::Plain | Kind::Tls => b"ERROR :Closing link: (Server full)\r\n",
    };
    let config = server::Config {
        slots: slots.clone(),
        stack_size: match kind {
            Kind::Tls => TLS_CONNECTION_STACK,
            Kind::Plain | Kind::WebSocket => CONNECTION_STACK,
        },
        tls,
        full_message: Some(full.to_vec()),
        ..server::Config::default()
    };
    let (shutdown, hub) = (shutdown.clone(), hub.clone());
    thread::Builder::new()
        .name("listener".into())
        .spawn(move || {
            server::run(listener, &shutdown, config, move |conn| match kind {
                Kind::Plain => connection::serve_tcp(conn, Transport::Plain, &hub),
                Kind::Tls => connection::serve_tcp(conn, Transport::Tls, &hub),
                Kind::WebSocket => websocket::serve_http(conn, &hub),
            })
        })
        .map_err(|e| format!("cannot start a listener thread: {e}"))
}
// ANCHOR_END: listen

/// The connection coroutine's stack, in bytes: it reads, parses, and for
/// WebSocket runs the HTTP upgrade. Measured with may's own report (an odd
/// stack size makes may print each coroutine's use when it ends) with
/// plain, TLS, WebSocket and flooding clients, 2026-12-02: plain and
/// WebSocket at most 3,689 words (29 KiB) in a debug build, 1,455 in
/// release; TLS, whose handshake runs in this coroutine, 7,209 words
/// (56 KiB) in debug, 2,047 in release. About twice the debug figures.
const CONNECTION_STACK: usize = 64 * 1024;
const TLS_CONNECTION_STACK: usize = 128 * 1024;

/// Where each listener is, once bound (port 0 is resolved).
struct Addrs {
    irc: SocketAddr,
    ws: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

impl Addrs {
    /// The first line of stdout: tests and scripts read the ports from it.
    fn print(&self, as_json: bool) {
        let text = |a: Option<SocketAddr>| a.map_or("-".to_owned(), |a| a.to_string());
        if as_json {
            let opt = |a: Option<SocketAddr>| a.map(|a| a.to_string());
            let line = json!({"event": "listening", "irc": self.irc.to_string(),
                              "ws": opt(self.ws), "tls": opt(self.tls)});
            println!("{line}");
        } else {
            println!(
                "listening: irc {}, ws {}, tls {}",
                self.irc,
                text(self.ws),
                text(self.tls)
            );
        }
    }
}

/// The last line: what the run did.
fn summary(
    listeners: &[Report],
    routed: &router::RouterReport,
    delivered: &broadcast::BroadcastReport,
    checked: &accounts::AccountsReport,
    stats: &connection::Stats,
    as_json: bool,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let sum = |f: fn(&Report) -> u64| listeners.iter().map(f).sum::<u64>();
    let line = json!({
        "event": "stopped",
        "accepted": sum(|r| r.accepted),
        "refused_full": sum(|r| r.refused_full),
        "handshake_failed": sum(|r| r.handshake_failed),
        "clients_peak": routed.clients_peak,
        "messages": routed.messages,
        "stored": delivered.stored,
        "delivered": delivered.delivered,
        "replayed": delivered.replayed,
        "not_stored": delivered.not_stored,
        "batches": delivered.batches,
        "largest_batch": delivered.largest_batch,
        "auth_hashes": checked.hashes,
        "auth_limited": checked.limited,
        "sendq_cut": stats.sendq_cut.load(Relaxed),
        "flood_cut": stats.flood_cut.load(Relaxed),
        "ping_timeouts": stats.ping_timeouts.load(Relaxed),
        "registration_timeouts": stats.registration_timeouts.load(Relaxed),
    });
    if as_json {
        println!("{line}");
        return;
    }
    println!(
        "stopped: {} connections ({} refused: full), at most {} clients at once, {} messages routed, {} stored",
        line["accepted"], line["refused_full"], line["clients_peak"], line["messages"], line["stored"]
    );
    println!(
        "cut: {} SendQ exceeded, {} Excess Flood, {} ping timeouts, {} registration timeouts",
        line["sendq_cut"], line["flood_cut"], line["ping_timeouts"], line["registration_timeouts"]
    );
}

// ANCHOR: tls
/// `--cert` and `--key`: a PEM chain and its key, refused with the file
/// and the reason.
fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let issued = Issued {
        cert_pem,
        key_pem,
        chain,
        key: key_der,
    };
    server_tls(&issued)
}

/// The book's server configuration, without its HTTP ALPN: IRC clients
/// offer none, and one that offered another protocol would be refused.
fn server_tls(issued: &Issued) -> Result<Arc<rustls::ServerConfig>, String> {
    let config = tls::server_config(issued).map_err(|e| format!("TLS: {e}"))?;
    let mut config = (*config).clone();
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}
// ANCHOR_END: tls

// ANCHOR: demo
/// `--demo`: a temporary database with the account demo / demo-password, a
/// certificate from a fresh test CA (its PEM written beside the database
/// for clients to trust), and every transport listening.
struct Demo {
    dir: tempfile::TempDir,
    issued: Issued,
}

const DEMO_ACCOUNT: (&str, &str) = ("demo", "demo-password");

impl Demo {
    fn create(config: &mut Config) -> Result<Demo, String> {
        let dir = tempfile::Builder::new()
            .prefix("chat_server-demo")
            .tempdir()
            .map_err(|e| format!("cannot make the demo directory: {e}"))?;
        let db = dir.path().join("chat.db");
        let (name, password) = DEMO_ACCOUNT;
        accounts::add_account(&db, name, password)
            .map_err(|e| format!("cannot create the demo account: {e}"))?;
        let ca = TestCa::new("chat_server demo CA");
        let issued = ca.issue(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem())
            .map_err(|e| format!("cannot write the demo CA: {e}"))?;
        config.db = Some(db);
        config
            .ws_listen
            .get_or_insert(([127, 0, 0, 1], 8080).into());
        config
            .tls_listen
            .get_or_insert(([127, 0, 0, 1], 6697).into());
        Ok(Demo { dir, issued })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// How to connect; on stderr with --json (stdout is for JSON lines).
    fn print(&self, a: &Addrs, as_json: bool) {
        let (name, password) = DEMO_ACCOUNT;
        let ca = self.file("ca.pem");
        let mut text = format!(
            "demo: account {name} / {password} in {} (removed at exit)\n\
             \x20 irssi:   irssi -c {} -p {} -n alice   (log in: add -w {name}:{password}, or use SASL PLAIN)\n\
             \x20 nc:      nc {} {}   then type NICK alice, USER alice 0 * :Alice, JOIN #demo, PRIVMSG #demo :hello\n",
            self.file("chat.db").display(),
            a.irc.ip(),
            a.irc.port(),
            a.irc.ip(),
            a.irc.port(),
        );
        if let Some(ws) = a.ws {
            text += &format!("  browser: http://{ws}/\n");
        }
        if let Some(tls) = a.tls {
            text += &format!(
                "  TLS:     openssl s_client -connect {tls} -CAfile {}   (irssi: /connect -tls -tls_cafile {} localhost {}; irssi checks only a certificate's DNS names)\n",
                ca.display(),
                ca.display(),
                tls.port()
            );
        }
        if as_json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
}
// ANCHOR_END: demo
