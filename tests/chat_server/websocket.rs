//! The WebSocket transport spoken by Python's `websockets` (a client nobody
//! here wrote): the page, the Origin check, a chat with a TCP IRC client,
//! frame limits, binary frames, and a client that vanishes without a close.
//! The client side of each check is `ws_client.py CHECK`, which prints what
//! it saw; these tests say what it must have seen.

use std::process::Command;

use crate::run::{ChatServer, STUCK};
use crate::support;

/// Start a server with a WebSocket listener, run one check against it,
/// stop the server (which fails on a panic or an unclean exit), and return
/// the check's output.
fn check(name: &str) -> String {
    let mut server = ChatServer::start(&["--ws-listen", "127.0.0.1:0"]);
    let ws = server.ws.expect("a ws address in the listening line");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/chat_server/ws_client.py"
    );
    let output = support::output_bounded(
        Command::new("python3")
            .arg(script)
            .arg(name)
            .arg(ws.to_string())
            .arg(server.irc.to_string()),
        STUCK,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ws_client.py {name} failed (it needs python3 with websockets: \
         .ci/run runs python3 -m pip install websockets)\n{stderr}\n{}",
        server.describe()
    );
    server.stop();
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_page_is_served_at_the_root_and_nothing_else_is() {
    let seen = check("page");
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines[0].starts_with("GET / 200 text/html; charset=utf-8 cache: no-store")
            && lines[0].ends_with("has <script>: True | asks for text.ircv3.net True"),
        "{seen}"
    );
    assert!(
        lines[1].starts_with("GET /favicon.ico 404 text/plain"),
        "{seen}"
    );
    assert!(lines[2].starts_with("POST / 405 text/plain"), "{seen}");
}

#[test]
fn a_page_from_another_site_may_not_open_a_chat_connection() {
    assert_eq!(
        check("origin"),
        "foreign origin: 403\nown origin: open, subprotocol text.ircv3.net\n"
    );
}

#[test]
fn a_websocket_client_and_a_tcp_client_chat_in_one_room() {
    let seen = check("chat");
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines[0].starts_with("irc got: :webby!")
            && lines[0].ends_with(" PRIVMSG #room :hello from the web"),
        "{seen}"
    );
    assert!(
        lines[1].starts_with("ws got: :tcpy!")
            && lines[1].ends_with(" PRIVMSG #room :hello from irc"),
        "{seen}"
    );
    // QUIT ends with a WebSocket close frame, 1000 (normal closure).
    assert_eq!(lines[2], "ws closed after QUIT: 1000", "{seen}");
}

#[test]
fn binary_frames_are_lines_and_a_frame_over_8_kib_closes_with_1009() {
    assert_eq!(
        check("limits"),
        "binary UTF-8: binary-utf8\n\
         binary not UTF-8, then: after\n\
         websocket ping: answered\n\
         9000-byte message: closed with 1009\n"
    );
}

#[test]
fn a_websocket_client_that_vanishes_without_a_close_quits_its_rooms() {
    assert_eq!(check("abrupt"), "irc saw: :vanish QUIT\n");
}
