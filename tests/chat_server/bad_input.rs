//! Input no real client sends: each gets its numeric, and the connection
//! (and the server) lives on.

use crate::client::Client;
use crate::run::ChatServer;

#[test]
fn long_lines_bad_utf8_and_unknown_commands_get_numerics_and_keep_the_connection() {
    let mut server = ChatServer::start(&[]);
    let mut eve = Client::register(server.irc, "eve");
    eve.send(&format!("PRIVMSG #x :{}", "a".repeat(2000)));
    eve.expect(|m| m.command == "417");
    eve.send_raw(b"PRIVMSG eve :\xff\xfe not utf-8\r\n");
    eve.expect(|m| m.command == "FAIL" && m.params.iter().any(|p| p == "INVALID_UTF8"));
    eve.send("FROBNICATE now");
    eve.expect(|m| m.command == "421");
    eve.send("PING :still-here");
    eve.expect(|m| m.command == "PONG");
    server.assert_no_crash();
}

#[test]
fn a_flood_of_joins_is_capped_per_client_and_in_total() {
    let server = ChatServer::start(&[
        "--max-rooms-per-client",
        "5",
        "--max-rooms",
        "8",
        "--flood-rate",
        "1000/1s",
    ]);
    let mut mallory = Client::register(server.irc, "mallory");
    for i in 0..6 {
        mallory.send(&format!("JOIN #r{i}"));
    }
    mallory.expect(|m| m.command == "405");
    let mut trent = Client::register(server.irc, "trent");
    for i in 0..5 {
        trent.send(&format!("JOIN #t{i}"));
    }
    // 5 of mallory's and 3 of trent's fill the server's 8.
    trent.expect(|m| m.command == "403");
}

#[test]
fn five_thousand_idle_connections_are_held_and_a_new_client_still_chats() {
    let mut server = ChatServer::start_with_fd_limit(&["--ping-interval", "60s"], 12_000);
    let before = server.status_kib("VmRSS");
    let idle: Vec<_> = (0..5_000).map(|_| Client::connect(server.irc)).collect();
    let mut alice = Client::register(server.irc, "alice");
    let mut bob = Client::register(server.irc, "bob");
    alice.send("PRIVMSG bob :still answering");
    bob.expect(|m| m.command == "PRIVMSG");
    let after = server.status_kib("VmRSS");
    eprintln!(
        "5,000 idle connections: VmRSS {before} KiB -> {after} KiB ({} KiB each)",
        (after.saturating_sub(before)) / 5_000
    );
    assert!(!server.stderr_lines().iter().any(|l| l.contains("panicked")));
    drop(idle);
    assert_eq!(server.stop()["event"], "stopped");
}
