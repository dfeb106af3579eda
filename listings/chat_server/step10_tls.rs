//! Step 10: TLS on a second listener. Both listeners run the book's
//! `may_patterns::server` accept loop, with one set of connection slots and
//! one `Shutdown`; the second has `Config::tls`, so each of its connections
//! does the rustls handshake in its own coroutine, bounded by a timeout,
//! before the handler sees it. The handler is the same for both: it gets a
//! `Conn` and splits it into a reading half and a writing half. A test CA
//! (`may_patterns::tls::TestCa`) issues the certificate. The rest is a small
//! server in the manner of step 3; its line reader, parser and rooms are in
//! `steps_common.rs`, shared by steps 6 to 10.
//!
//! With no arguments it runs a demo; with `--serve PLAIN_ADDR TLS_ADDR DIR`
//! it writes the CA to DIR/ca.pem and serves real clients until stopped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use may::coroutine::Builder;
use may::go;
use may::net::TcpListener;
use may::sync::mpsc;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Config, Conn, Report, Slots};
use may_patterns::shutdown::Shutdown;
use may_patterns::tls::{self, TestCa};

#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{next_line, parse};

/// Every room's members, each with its writer's channel.
type Rooms = steps_common::Rooms<mpsc::Sender<String>>;

/// Stack of a client coroutine of the demo, in words: a rustls handshake
/// needs about 7,300 words in a debug build (src/tls.rs's tests measured it).
const CLIENT_STACK_WORDS: usize = 0x4000;

// ANCHOR: listeners
/// The two listeners, running until `shutdown`; each `run` returns its
/// report once every one of its connection coroutines has ended.
struct Listeners {
    plain: SocketAddr,
    tls: SocketAddr,
    running: Vec<JoinHandle<io::Result<Report>>>,
}

fn start(plain: &str, tls_addr: &str, ca: &TestCa, shutdown: &Shutdown) -> io::Result<Listeners> {
    let tls_config = tls::server_config(&ca.issue(&["localhost", "127.0.0.1"]))?;
    let rooms = Arc::new(Rooms::default());
    let slots = Slots::new(1000); // one cap for both listeners
    let (plain, tls_listener) = (TcpListener::bind(plain)?, TcpListener::bind(tls_addr)?);
    let addrs = (plain.local_addr()?, tls_listener.local_addr()?);
    let mut running = Vec::new();
    for (listener, tls) in [(plain, None), (tls_listener, Some(tls_config))] {
        let config = Config {
            slots: slots.clone(),
            tls,
            handshake_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let (rooms, shutdown) = (rooms.clone(), shutdown.clone());
        running.push(std::thread::spawn(move || {
            server::run(listener, &shutdown, config, move |conn| serve(conn, &rooms))
        }));
    }
    Ok(Listeners {
        plain: addrs.0,
        tls: addrs.1,
        running,
    })
}
// ANCHOR_END: listeners

// ANCHOR: serve
/// One client, on either listener: the server layer has done the TLS
/// handshake already, if there was one. For TLS only the writing half
/// writes to the socket, so records from the two coroutines never mix.
fn serve(conn: Conn, rooms: &Rooms) {
    let (id, transport) = (conn.id(), if conn.is_tls() { "TLS" } else { "plain TCP" });
    let Ok((reader, mut writer)) = conn.split() else {
        return;
    };
    let closer = writer.closer();
    let (out, lines) = mpsc::channel::<String>();
    let writing = go!(move || {
        for line in lines {
            if writer
                .write_all(format!("{line}\r\n").as_bytes())
                .and_then(|()| writer.flush())
                .is_err()
            {
                break;
            }
        }
        writer.close();
    });
    let mut client = Client {
        id,
        transport,
        nick: None,
        out,
    };
    let mut reader = BufReader::new(reader);
    while let Some(line) = next_line(&mut reader) {
        if !handle(&mut client, rooms, &line) {
            break;
        }
    }
    rooms.leave_all(id);
    drop(client); // the writer ends once the rooms' copies are gone
    let _ = writing.join();
    closer.close();
}
// ANCHOR_END: serve

/// A client, as its connection's coroutine sees it.
struct Client {
    id: u64,
    transport: &'static str,
    nick: Option<String>,
    out: mpsc::Sender<String>,
}

impl Client {
    fn send(&self, line: String) {
        let _ = self.out.send(line);
    }
}

/// Handle one line; false when the client quit.
fn handle(client: &mut Client, rooms: &Rooms, line: &str) -> bool {
    let (command, params) = parse(line);
    match (command.as_str(), client.nick.clone()) {
        ("QUIT", _) => {
            client.send("ERROR :Closing link: (Quit)".into());
            return false;
        }
        ("PING", _) => client.send(format!("PONG :{}", params.first().map_or("", |p| p))),
        ("NICK", None) if !params.is_empty() => {
            client.send(format!(
                ":chat.local 001 {} :Welcome, over {}",
                params[0], client.transport
            ));
            client.nick = Some(params[0].clone());
        }
        ("USER" | "CAP", _) => {}
        (_, None) => client.send(":chat.local 451 * :You have not registered".into()),
        ("JOIN", Some(nick)) if !params.is_empty() => {
            rooms.join(&params[0], client.id, &nick, &client.out)
        }
        ("PRIVMSG", Some(nick)) if params.len() == 2 => {
            if !rooms.say(&params[0], client.id, &nick, &params[1]) {
                client.send(format!(
                    ":chat.local 404 {nick} {} :Cannot send to channel",
                    params[0]
                ));
            }
        }
        (other, Some(nick)) => {
            client.send(format!(":chat.local 421 {nick} {other} :Unknown command"))
        }
    }
    true
}

/// A scripted client: a coroutine on may sockets, TLS verified against
/// the given config when there is one. It registers, joins #lobby, sends
/// its `script`, then hands every line it reads to a channel.
struct Bot {
    from_server: mpsc::Receiver<io::Result<String>>,
}

impl Bot {
    fn start(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        nick: &str,
        script: &[&str],
    ) -> Bot {
        let (incoming, from_server) = mpsc::channel();
        let mut first = format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN #lobby\r\n");
        script
            .iter()
            .for_each(|line| first.push_str(&format!("{line}\r\n")));
        let builder = Builder::new().stack_size(CLIENT_STACK_WORDS);
        let client = move |incoming: &mpsc::Sender<io::Result<String>>| -> io::Result<()> {
            let tcp = may_patterns::net::connect(addr)?;
            let mut stream: Box<dyn ReadWrite> = match &tls {
                Some(config) => Box::new(tls::connect(config, "localhost", tcp)?),
                None => Box::new(tcp),
            };
            stream.write_all(first.as_bytes())?;
            for line in BufReader::new(stream).lines() {
                let _ = incoming.send(Ok(line?));
            }
            Ok(())
        };
        go!(builder, move || {
            if let Err(e) = client(&incoming) {
                let _ = incoming.send(Err(e));
            }
        })
        .expect("a coroutine");
        Bot { from_server }
    }

    /// The next line containing `what`, or the error that ended the client.
    fn until(&self, what: &str) -> io::Result<String> {
        loop {
            let line = self
                .from_server
                .recv()
                .map_err(|_| io::Error::other("the server closed"))??;
            if line.contains(what) {
                return Ok(line);
            }
        }
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

// ANCHOR: demo
fn demo() -> io::Result<()> {
    let ca = TestCa::new("step10 test CA");
    let shutdown = Shutdown::new();
    let listeners = start("127.0.0.1:0", "127.0.0.1:0", &ca, &shutdown)?;
    let trusted = tls::client_config(ca.roots());
    let tom = Bot::start(listeners.plain, None, "tom", &[]);
    println!("tom (plain):  {}", tom.until(" 001 ")?);
    tom.until(":tom JOIN")?;
    let tia = Bot::start(
        listeners.tls,
        Some(trusted),
        "tia",
        &["PRIVMSG #lobby :hello over TLS"],
    );
    println!("tia (TLS):    {}", tia.until(" 001 ")?);
    println!("tom (plain):  {}", tom.until("hello over TLS")?);
    let dan = Bot::start(
        listeners.plain,
        None,
        "dan",
        &["PRIVMSG #lobby :welcome, tia"],
    );
    dan.until(":dan JOIN")?;
    println!("tia (TLS):    {}", tia.until("welcome")?);
    let web_roots = Bot::start(listeners.tls, Some(tls::web_client_config()), "eve", &[]);
    println!(
        "eve (trusts only the web's CAs): {}",
        web_roots.until(" 001 ").unwrap_err()
    );
    shutdown.trigger();
    for (name, running) in ["plain", "TLS"].iter().zip(listeners.running) {
        let report = running.join().expect("a listener thread")?;
        println!(
            "{name} listener stopped: {} accepted, {} failed handshakes",
            report.accepted, report.handshake_failed
        );
    }
    Ok(())
}
// ANCHOR_END: demo

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => demo().expect("the demo runs"),
        [flag, plain, tls, dir] if flag == "--serve" => {
            let ca = TestCa::new("step10 test CA");
            let ca_file = Path::new(dir).join("ca.pem");
            let shutdown = Shutdown::new();
            let started = std::fs::write(&ca_file, ca.cert_pem())
                .and_then(|()| start(plain, tls, &ca, &shutdown));
            match started {
                Ok(listeners) => {
                    println!(
                        "plain IRC on {}, TLS on {}, CA in {}",
                        listeners.plain,
                        listeners.tls,
                        ca_file.display()
                    );
                    for running in listeners.running {
                        let _ = running.join();
                    }
                }
                Err(e) => {
                    eprintln!("step10_tls: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: step10_tls [--serve PLAIN_ADDR TLS_ADDR DIR]");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_clients_share_rooms_and_bad_handshakes_are_counted() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let ca = TestCa::new("test CA");
        let shutdown = Shutdown::new();
        let listeners = start("127.0.0.1:0", "127.0.0.1:0", &ca, &shutdown).unwrap();
        let a = Bot::start(
            listeners.tls,
            Some(tls::client_config(ca.roots())),
            "a",
            &[],
        );
        assert!(a.until(" 001 ").unwrap().ends_with("over TLS"));
        a.until(":a JOIN").unwrap();
        let b = Bot::start(listeners.plain, None, "b", &["PRIVMSG #lobby :to a"]);
        assert!(b.until(" 001 ").unwrap().ends_with("over plain TCP"));
        assert_eq!(a.until("PRIVMSG").unwrap(), ":b PRIVMSG #lobby :to a");
        let other_ca = TestCa::new("someone else");
        let stranger = Bot::start(
            listeners.tls,
            Some(tls::client_config(other_ca.roots())),
            "s",
            &[],
        );
        let err = stranger.until(" 001 ").unwrap_err().to_string();
        assert!(err.contains("unknown issuer"), "{err}");
        // Plain text on the TLS port is a failed handshake, not a client.
        let text = Bot::start(listeners.tls, None, "t", &[]);
        assert!(text.until(" 001 ").is_err());
        shutdown.trigger();
        let reports: Vec<Report> = listeners
            .running
            .into_iter()
            .map(|r| r.join().unwrap().unwrap())
            .collect();
        assert_eq!(reports[0].accepted, 1, "{:?}", reports[0]);
        assert_eq!(reports[1].accepted, 3, "{:?}", reports[1]);
        assert_eq!(reports[1].handshake_failed, 2, "{:?}", reports[1]);
    }
}
