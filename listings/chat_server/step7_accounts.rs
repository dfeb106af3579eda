//! Step 7: accounts. Passwords are kept as argon2id hashes (PHC strings);
//! a client logs in with SASL PLAIN (`CAP REQ :sasl`, `AUTHENTICATE PLAIN`,
//! a base64 payload, then 900/903 or 904) or with `PASS account:password`.
//! Each account has a quota of attempts (GCRA from `may_patterns::ratelimit`),
//! so a password cannot be guessed at the speed of the network; a success
//! clears it. The hash runs on `may_patterns::blocking`: checking one takes
//! tens of milliseconds of CPU, and on a worker it would stall every other
//! coroutine there (`pitfall_hash_on_worker` measures it). The rest is a small
//! server in the manner of step 3; its line reader, parser, rooms and test
//! client are in `steps_common.rs`, shared by steps 6 to 10.
//!
//! With no arguments it runs a demo; with `--serve ADDR` it serves real
//! clients (accounts alice, bob, carol, dave; password NAME-password).

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::mpsc;
use may_patterns::blocking;
use may_patterns::clock::{Clock, MonotonicClock};
use may_patterns::ratelimit::{Algorithm, Decision, Gcra, GcraState, Quota};
use may_patterns::runtime::{configure_once, Settings};

#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{next_line, parse, with_ticker, Bot};

/// Every room's members, each with its writer's channel.
type Rooms = steps_common::Rooms<mpsc::Sender<String>>;

// ANCHOR: accounts
/// Every account's PHC string, and the attempts each has left.
struct Accounts {
    phc: HashMap<String, String>,
    /// Attempts per account; std `Mutex`, held for one map operation and
    /// the rule's sum, never across the hash.
    attempts: Mutex<HashMap<String, GcraState>>,
    rule: Gcra,
    clock: MonotonicClock,
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
enum LoginError {
    Invalid,
    TooManyAttempts { retry_in_secs: u64 },
}

impl Accounts {
    /// Hash each (name, password) with argon2's defaults: argon2id, 19 MiB,
    /// 2 passes (OWASP's minimum). Done once, at start-up, on this thread.
    fn new(users: &[(&str, &str)], attempts: Quota) -> Accounts {
        let phc = users
            .iter()
            .map(|(name, password)| {
                let salt =
                    SaltString::from_b64(&BASE64.encode(format!("{name}-salt!")).replace('=', ""))
                        .expect("a valid salt");
                let hash = Argon2::default()
                    .hash_password(password.as_bytes(), &salt)
                    .expect("argon2 hashes");
                (name.to_string(), hash.to_string())
            })
            .collect();
        Accounts {
            phc,
            attempts: Mutex::new(HashMap::new()),
            rule: Gcra::new(attempts),
            clock: MonotonicClock::new(),
        }
    }

    /// Check `password`. Every attempt costs one unit of the account's quota
    /// before the hash is checked (so attempts sent in parallel count too);
    /// a success gives the account its full quota back. An unknown account
    /// fails at once and is not kept, so names cannot fill the map.
    fn login(&self, account: &str, password: &str) -> Result<(), LoginError> {
        let phc = self.phc.get(account).cloned().ok_or(LoginError::Invalid)?;
        let decision = {
            let mut attempts = self.attempts.lock().unwrap();
            let now = self.clock.now();
            let state = attempts
                .entry(account.to_owned())
                .or_insert_with(|| self.rule.new_state(now));
            self.rule.decide(state, now, 1)
        };
        if let Decision::Denied { retry_after, .. } = decision {
            return Err(LoginError::TooManyAttempts {
                retry_in_secs: retry_after.as_secs() + 1,
            });
        }
        let password = password.to_owned();
        // The hash on an OS thread of the blocking pool; this coroutine parks.
        let ok = blocking::run(move || verify(&phc, &password)).unwrap_or(false);
        if !ok {
            return Err(LoginError::Invalid);
        }
        self.attempts.lock().unwrap().remove(account);
        Ok(())
    }
}

fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}
// ANCHOR_END: accounts

// ANCHOR: sasl
/// SASL PLAIN's payload: base64 of "authzid NUL authcid NUL password".
/// The account is the authcid; an authzid, if any, must be the same.
fn decode_plain(payload: &str) -> Option<(String, String)> {
    let bytes = BASE64.decode(payload).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    let same = authzid.is_empty() || authzid == authcid;
    (same && parts.next().is_none() && !authcid.is_empty())
        .then(|| (authcid.to_owned(), password.to_owned()))
}

/// What the client is doing about SASL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sasl {
    Idle,
    /// `AUTHENTICATE PLAIN` was accepted; the payload comes next.
    AwaitingPlain,
}

/// The SASL and CAP commands. Registration waits while CAP is negotiated.
fn authenticate(client: &mut Client, hub: &Hub, command: &str, params: &[String]) {
    let nick = client.nick.clone().unwrap_or_else(|| "*".into());
    let sub = params.first().map(|p| p.to_ascii_uppercase());
    match (command, sub.as_deref()) {
        ("CAP", Some("LS")) => {
            client.negotiating = true;
            client.send(format!(":chat.local CAP {nick} LS :sasl"));
        }
        ("CAP", Some("REQ")) => {
            let wanted = params.get(1).map_or("", |p| p.as_str());
            let verdict = if wanted.trim() == "sasl" {
                "ACK"
            } else {
                "NAK"
            };
            client.send(format!(":chat.local CAP {nick} {verdict} :{wanted}"));
        }
        ("CAP", Some("END")) => {
            client.negotiating = false;
            register_if_ready(client, hub);
        }
        ("AUTHENTICATE", Some("PLAIN")) if client.sasl == Sasl::Idle => {
            client.sasl = Sasl::AwaitingPlain;
            client.send("AUTHENTICATE +".into());
        }
        ("AUTHENTICATE", Some(_)) if client.sasl == Sasl::AwaitingPlain => {
            client.sasl = Sasl::Idle;
            let outcome = match decode_plain(&params[0]) {
                None => Err(LoginError::Invalid),
                Some((account, password)) => {
                    hub.accounts.login(&account, &password).map(|()| account)
                }
            };
            match outcome {
                Ok(account) => {
                    client.send(format!(":chat.local 900 {nick} {nick}!{nick}@127.0.0.1 {account} :You are now logged in as {account}"));
                    client.send(format!(
                        ":chat.local 903 {nick} :SASL authentication successful"
                    ));
                    client.account = Some(account);
                }
                Err(why) => client.send(format!(
                    ":chat.local 904 {nick} :SASL authentication failed{}",
                    because(&why)
                )),
            }
        }
        ("AUTHENTICATE", _) => {
            client.send(format!(
                ":chat.local 908 {nick} PLAIN :are available SASL mechanisms"
            ));
            client.send(format!(
                ":chat.local 904 {nick} :SASL authentication failed"
            ));
        }
        _ => client.send(format!(
            ":chat.local 410 {nick} {command} :Invalid CAP command"
        )),
    }
}

fn because(why: &LoginError) -> String {
    match why {
        LoginError::Invalid => String::new(),
        LoginError::TooManyAttempts { retry_in_secs } => {
            format!(": too many attempts, try again in {retry_in_secs}s")
        }
    }
}
// ANCHOR_END: sasl

// ANCHOR: register
/// Send the welcome once NICK and USER are in and CAP negotiation is over.
/// `PASS account:password`, if it came, is checked here (a wrong one ends
/// the connection, as ircds do with a server password).
fn register_if_ready(client: &mut Client, hub: &Hub) {
    let (Some(nick), true, false, false) = (
        client.nick.clone(),
        client.user,
        client.negotiating,
        client.registered,
    ) else {
        return;
    };
    if let Some(pass) = client.pass.take() {
        let (account, password) = pass
            .split_once(':')
            .unwrap_or((nick.as_str(), pass.as_str()));
        match hub.accounts.login(account, password) {
            Ok(()) => client.account = Some(account.to_owned()),
            Err(why) => {
                client.send(format!(
                    ":chat.local 464 {nick} :Password incorrect{}",
                    because(&why)
                ));
                client.send("ERROR :Closing link: (Bad password)".into());
                client.quit = true;
                return;
            }
        }
    }
    client.registered = true;
    let account = client.account.as_deref().unwrap_or("no account");
    client.send(format!(
        ":chat.local 001 {nick} :Welcome, {nick} ({account})"
    ));
}
// ANCHOR_END: register

/// Handle one line.
fn handle(client: &mut Client, hub: &Hub, line: &str) {
    let (command, params) = parse(line);
    let nick = client.nick.clone();
    match (command.as_str(), nick) {
        ("QUIT", _) => {
            client.send("ERROR :Closing link: (Quit)".into());
            client.quit = true;
        }
        ("PING", _) => client.send(format!("PONG :{}", params.first().map_or("", |p| p))),
        ("CAP" | "AUTHENTICATE", _) if !client.registered => {
            authenticate(client, hub, &command, &params)
        }
        ("PASS", _) if !client.registered && !params.is_empty() => {
            client.pass = Some(params[0].clone())
        }
        ("NICK", _) if !client.registered && !params.is_empty() => {
            client.nick = Some(params[0].clone());
            register_if_ready(client, hub);
        }
        ("USER", _) if !client.registered => {
            client.user = true;
            register_if_ready(client, hub);
        }
        (_, _) if !client.registered => {
            client.send(":chat.local 451 * :You have not registered".into())
        }
        ("JOIN", Some(nick)) if !params.is_empty() => {
            hub.rooms.join(&params[0], client.id, &nick, &client.out)
        }
        ("PRIVMSG", Some(nick)) if params.len() == 2 => {
            if !hub.rooms.say(&params[0], client.id, &nick, &params[1]) {
                client.send(format!(
                    ":chat.local 404 {nick} {} :Cannot send to channel",
                    params[0]
                ));
            }
        }
        (other, nick) => client.send(format!(
            ":chat.local 421 {} {other} :Unknown command",
            nick.unwrap_or_default()
        )),
    }
}

/// A client, as its connection's coroutine sees it.
struct Client {
    id: u64,
    nick: Option<String>,
    user: bool,
    pass: Option<String>,
    negotiating: bool,
    sasl: Sasl,
    account: Option<String>,
    registered: bool,
    quit: bool,
    out: mpsc::Sender<String>,
}

impl Client {
    fn send(&self, line: String) {
        let _ = self.out.send(line); // fails only once the writer has gone
    }
}

/// What every connection shares.
struct Hub {
    rooms: Rooms,
    accounts: Accounts,
}

/// One client: this coroutine reads and handles its lines, a second one
/// writes what it is sent.
fn serve(stream: TcpStream, id: u64, hub: Arc<Hub>) -> io::Result<()> {
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
        user: false,
        pass: None,
        negotiating: false,
        sasl: Sasl::Idle,
        account: None,
        registered: false,
        quit: false,
        out,
    };
    let mut reader = BufReader::new(stream);
    while let Some(line) = next_line(&mut reader) {
        handle(&mut client, &hub, &line);
        if client.quit {
            break;
        }
    }
    hub.rooms.leave_all(id);
    drop(client); // its sender: the writer ends once the rooms' copies are gone
    let _ = writer.join();
    Ok(())
}

/// Bind `addr` and serve every client in its own coroutine, forever.
fn start(addr: &str, accounts: Accounts) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let hub = Arc::new(Hub {
        rooms: Rooms::default(),
        accounts,
    });
    go!(move || {
        for (id, stream) in (1..).zip(listener.incoming().flatten()) {
            let hub = hub.clone();
            go!(move || serve(stream, id, hub));
        }
    });
    Ok(local)
}

/// What step 7 adds to the shared test client.
impl Bot {
    /// SASL PLAIN as a client does it, up to 903 or 904.
    fn sasl(&mut self, nick: &str, account: &str, password: &str) -> io::Result<Vec<String>> {
        self.send(&format!(
            "CAP LS 302\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nCAP REQ :sasl"
        ))?;
        self.until_any(&[" ACK ", " NAK "])?;
        self.try_password(account, password)
    }

    fn try_password(&mut self, account: &str, password: &str) -> io::Result<Vec<String>> {
        self.send("AUTHENTICATE PLAIN")?;
        self.until_any(&["AUTHENTICATE +"])?;
        self.send(&format!(
            "AUTHENTICATE {}",
            BASE64.encode(format!("\0{account}\0{password}"))
        ))?;
        self.until_any(&[" 903 ", " 904 "])
    }
}

const USERS: [(&str, &str); 4] = [
    ("alice", "alice-password"),
    ("bob", "bob-password"),
    ("carol", "carol-password"),
    ("dave", "dave-password"),
];

/// 3 attempts per account, then one a minute.
fn attempts_quota() -> Quota {
    Quota::new(1, Duration::from_secs(60), 3).expect("a valid quota")
}

/// The four users log in over SASL at once, each from its own thread.
fn four_logins(addr: SocketAddr) -> io::Result<Vec<String>> {
    let logins: Vec<_> = USERS
        .iter()
        .map(|&(name, password)| {
            std::thread::spawn(move || -> io::Result<String> {
                let mut bot = Bot::connect(addr)?;
                let seen = bot.sasl(name, name, password)?;
                Ok(seen.last().cloned().unwrap_or_default())
            })
        })
        .collect();
    logins
        .into_iter()
        .map(|login| login.join().expect("a login thread"))
        .collect()
}

fn demo(addr: SocketAddr) -> io::Result<()> {
    let (finals, took, late) = with_ticker(|| four_logins(addr));
    let ok = finals?.iter().filter(|line| line.contains(" 903 ")).count();
    println!("4 SASL logins at once: {ok} got 903 after {took:.1?}; a ticker coroutine was up to {late:.1?} late");

    let mut alice = Bot::connect(addr)?;
    println!("alice, SASL PLAIN:");
    for line in alice.sasl("alice", "alice", "alice-password")? {
        println!("  {line}");
    }
    alice.send("CAP END")?;
    println!("  {}", alice.until_any(&[" 001 "])?.join("\n  "));

    let mut mallory = Bot::connect(addr)?;
    println!("mallory guesses bob's password 5 times:");
    let first = mallory.sasl("mallory", "bob", "guess0")?;
    println!("  1: {}", first.last().unwrap());
    for i in 1..5 {
        let seen = mallory.try_password("bob", &format!("guess{i}"))?;
        println!("  {}: {}", i + 1, seen.last().unwrap());
    }

    let mut carol = Bot::connect(addr)?;
    carol.send("PASS carol:carol-password\r\nNICK carol\r\nUSER carol 0 * :carol")?;
    println!(
        "carol, PASS carol:carol-password:\n  {}",
        carol.until_any(&[" 001 "])?.join("\n  ")
    );
    let mut eve = Bot::connect(addr)?;
    eve.send("PASS dave:wrong\r\nNICK eve\r\nUSER eve 0 * :eve")?;
    println!(
        "eve, PASS dave:wrong:\n  {}",
        eve.until_any(&["ERROR"])?.join("\n  ")
    );
    Ok(())
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "127.0.0.1:0",
        [flag, addr] if flag == "--serve" => addr,
        _ => {
            eprintln!("usage: step7_accounts [--serve ADDR]");
            std::process::exit(2);
        }
    };
    let accounts = Accounts::new(&USERS, attempts_quota());
    println!("alice's PHC string: {}...", &accounts.phc["alice"][..31]);
    let local = match start(addr, accounts) {
        Ok(local) => local,
        Err(e) => {
            eprintln!("step7_accounts: cannot listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    if args.is_empty() {
        demo(local).expect("the demo runs");
    } else {
        println!("serving on {local}");
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> SocketAddr {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        start("127.0.0.1:0", Accounts::new(&USERS, attempts_quota())).unwrap()
    }

    #[test]
    fn sasl_plain_logs_in_and_a_wrong_password_gets_904() {
        let addr = server();
        let mut bot = Bot::connect(addr).unwrap();
        let seen = bot.try_password("bob", "nope").unwrap();
        assert!(seen.last().unwrap().contains(" 904 "), "{seen:?}");
        let seen = bot.try_password("bob", "bob-password").unwrap();
        assert!(
            seen.iter()
                .any(|l| l.contains(" 900 ") && l.contains(" bob :")),
            "{seen:?}"
        );
        bot.send("NICK b\r\nUSER b 0 * :b").unwrap();
        assert!(bot
            .until_any(&[" 001 "])
            .unwrap()
            .last()
            .unwrap()
            .contains("(bob)"));
    }

    #[test]
    fn attempts_are_limited_per_account_and_a_success_resets_them() {
        let accounts = Accounts::new(&USERS[..2], attempts_quota());
        for _ in 0..3 {
            assert_eq!(accounts.login("alice", "x"), Err(LoginError::Invalid));
        }
        // The 4th attempt is refused without a hash, even with the right password.
        assert!(matches!(
            accounts.login("alice", "alice-password"),
            Err(LoginError::TooManyAttempts { .. })
        ));
        // Another account is not affected; a success there clears its count.
        assert_eq!(accounts.login("bob", "x"), Err(LoginError::Invalid));
        assert_eq!(accounts.login("bob", "bob-password"), Ok(()));
        assert!(accounts.attempts.lock().unwrap().get("bob").is_none());
        assert_eq!(accounts.login("nobody", "x"), Err(LoginError::Invalid));
        assert!(accounts.attempts.lock().unwrap().get("nobody").is_none());
    }

    #[test]
    fn a_bad_payload_or_pass_is_refused_cleanly() {
        assert_eq!(decode_plain("not base64!"), None);
        assert_eq!(
            decode_plain(&BASE64.encode("a\0b\0pw")),
            None,
            "authzid differs"
        );
        assert_eq!(
            decode_plain(&BASE64.encode("\0bob\0pw")),
            Some(("bob".into(), "pw".into()))
        );
        let addr = server();
        let mut bot = Bot::connect(addr).unwrap();
        bot.send("PASS carol:wrong\r\nNICK c\r\nUSER c 0 * :c")
            .unwrap();
        let seen = bot.until_any(&["ERROR"]).unwrap();
        assert!(seen.iter().any(|l| l.contains(" 464 ")), "{seen:?}");
    }

    #[test]
    fn logins_do_not_stall_the_workers() {
        let addr = server();
        let (finals, _, late) = with_ticker(|| four_logins(addr));
        assert!(finals.unwrap().iter().all(|l| l.contains(" 903 ")));
        // Four hashes on two workers would hold the ticker for about two
        // hashes (pitfall_hash_on_worker); on the pool it waits for the CPU only.
        assert!(
            late < Duration::from_millis(60),
            "the ticker was {late:?} late"
        );
    }
}
