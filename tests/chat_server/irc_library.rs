//! The plain IRC listener spoken by jaraco's Python `irc` library (a client
//! nobody here wrote): registration, two rooms, RFC 1459 nick case, PASS and
//! SASL PLAIN against an account made by `--add-account`, and the history
//! replayed after a restart, with and without `server-time`. The client side
//! of each check is `irc_library.py CHECK`, which prints the events the
//! library reported; these tests say which it must have reported.

use std::net::SocketAddr;
use std::process::Command;

use crate::run::{add_account, ChatServer, STUCK};
use crate::support;

/// Run `irc_library.py CHECK ADDR ARGS` and return what it printed; fail
/// with its stderr (and the server's) if it failed.
fn check(server: &mut ChatServer, irc: SocketAddr, name: &str, args: &[&str]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/chat_server/irc_library.py"
    );
    let output = support::output_bounded(
        Command::new("python3")
            .arg(script)
            .arg(name)
            .arg(irc.to_string())
            .args(args),
        STUCK,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "irc_library.py {name} failed (it needs python3 with the irc library: \
         python3 -m pip install irc==20.5.0, which .ci/run does)\n{stderr}\n{}",
        server.describe()
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn irc_library_clients_chat_in_two_rooms_and_a_casefolded_nick_is_taken() {
    let mut server = ChatServer::start(&[]);
    let irc = server.irc;
    assert_eq!(
        check(&mut server, irc, "rooms", &[]),
        "Alice: welcome to Alice\n\
         bob[m]: welcome to bob[m]\n\
         bob[m] got pubmsg in #one from Alice: alice in one\n\
         Alice got pubmsg in #two from bob[m]: bob in two\n\
         alice: nicknameinuse alice\n\
         BOB{M}: nicknameinuse BOB{M}\n\
         bob[m] saw Alice quit\n"
    );
    server.stop();
}

#[test]
fn irc_library_wrong_password_gets_464_and_is_closed_right_one_registers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let db = db.to_str().unwrap();
    add_account(db, "dana", "correct-horse");
    let mut server = ChatServer::start(&["--db", db]);
    let irc = server.irc;
    assert_eq!(
        check(&mut server, irc, "accounts", &["dana", "correct-horse"]),
        "wrong password: passwdmismatch Password incorrect (invalid account or password)\n\
         wrong password: ERROR Closing link: 127.0.0.1 (Bad password)\n\
         wrong password: disconnected by the server\n\
         right password: welcome to dana\n\
         sasl plain: saslsuccess, welcome to dana\n\
         sasl plain, wrong password: login_failed\n"
    );
    server.stop();
}

#[test]
fn irc_library_sees_the_history_replayed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let db = db.to_str().unwrap();
    let mut server = ChatServer::start(&["--db", db]);
    let irc = server.irc;
    assert_eq!(
        check(
            &mut server,
            irc,
            "say",
            &["#log", "before the restart", "a :colon too"]
        ),
        "said 2 lines in #log\n"
    );
    server.restart();
    let irc = server.irc;
    assert_eq!(
        check(&mut server, irc, "replay", &["#log"]),
        "plain replay from writer tags []: before the restart\n\
         plain replay from writer tags []: a :colon too\n\
         timed: CAP ACK server-time\n\
         timed replay from writer tags ['time']: before the restart\n\
         timed replay from writer tags ['time']: a :colon too\n"
    );
    server.stop();
}
