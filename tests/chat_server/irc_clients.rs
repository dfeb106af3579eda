//! Registered clients chatting through the built program, history kept
//! across a restart and across `kill -9`, and the numerics for misuse.

use std::time::Duration;

use crate::client::{Client, Line};
use crate::run::ChatServer;

fn privmsg_text(line: &Line) -> Option<&str> {
    (line.command == "PRIVMSG").then(|| line.params.last().map(String::as_str))?
}

#[test]
fn two_clients_chat_in_two_rooms_and_a_taken_nick_gets_433() {
    let mut server = ChatServer::start(&[]);
    let mut alice = Client::register(server.irc, "alice");
    let mut bob = Client::register(server.irc, "bob");
    for room in ["#one", "#two"] {
        alice.send(&format!("JOIN {room}"));
        alice.expect(|m| m.command == "366");
        bob.send(&format!("JOIN {room}"));
        bob.expect(|m| m.command == "366");
    }
    alice.send("PRIVMSG #one :hello in one");
    alice.send("PRIVMSG #two :hello in two");
    for text in ["hello in one", "hello in two"] {
        let got = bob.expect(|m| privmsg_text(m) == Some(text));
        assert_eq!(got.nick(), "alice");
    }
    // The same nick in another case is the same nick (rfc1459 casemapping).
    let mut third = Client::connect(server.irc);
    third.send("NICK ALICE");
    third.send("USER x 0 * :x");
    third.expect(|m| m.command == "433");
    let stopped = server.stop();
    assert_eq!(stopped["event"], "stopped");
}

#[test]
fn every_line_a_client_received_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let db = db.to_str().unwrap();
    let mut server =
        ChatServer::start(&["--db", db, "--history", "500", "--flood-rate", "1000/1s"]);
    let mut alice = Client::register(server.irc, "alice");
    let mut bob = Client::register(server.irc, "bob");
    alice.send("JOIN #log");
    alice.expect(|m| m.command == "366");
    bob.send("JOIN #log");
    bob.expect(|m| m.command == "366");
    let sent = 200;
    for i in 0..sent {
        alice.send(&format!("PRIVMSG #log :line {i}"));
    }
    // Bob reads part of it; the server dies with the rest in flight.
    let mut received = Vec::new();
    while received.len() < sent / 2 {
        let line = bob.expect(|m| m.command == "PRIVMSG");
        received.push(privmsg_text(&line).unwrap().to_owned());
    }
    server.kill9();
    server.restart();
    let mut carol = Client::register(server.irc, "carol");
    carol.send("JOIN #log");
    let mut replayed = Vec::new();
    loop {
        let line = carol.expect(|m| m.command == "PRIVMSG" || m.command == "366");
        match privmsg_text(&line) {
            Some(text) => replayed.push(text.to_owned()),
            // Replay follows the names list; one more quiet moment ends it.
            None => {
                while let Some(raw) = carol.line_within(Duration::from_millis(500)) {
                    if let Some(text) = privmsg_text(&Line::parse(&raw)) {
                        replayed.push(text.to_owned());
                    }
                }
                break;
            }
        }
    }
    for line in &received {
        assert!(
            replayed.contains(line),
            "{line:?} was received but is not in the history: {replayed:?}"
        );
    }
    server.assert_no_crash();
}

#[test]
fn a_wrong_password_gets_464_and_the_right_one_registers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let db = db.to_str().unwrap();
    crate::run::add_account(db, "dana", "correct horse");
    let server = ChatServer::start(&["--db", db]);
    let mut wrong = Client::connect(server.irc);
    wrong.send("PASS wrong");
    wrong.send("NICK dana");
    wrong.send("USER dana 0 * :dana");
    wrong.expect(|m| m.command == "464");
    wrong.expect_closed();
    // Without any password the registered nick is refused.
    let mut none = Client::connect(server.irc);
    none.send("NICK dana");
    none.send("USER dana 0 * :dana");
    none.expect(|m| m.command == "433");
    let mut right = Client::connect(server.irc);
    right.send("PASS :correct horse");
    right.send("NICK dana");
    right.send("USER dana 0 * :dana");
    right.expect(|m| m.command == "001");
}
