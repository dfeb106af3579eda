//! A real browser: Debian's Chromium, headless, loads the server's page,
//! joins a room, sends a line that an IRC client receives, and shows a
//! line the IRC client sent. `browser.py` drives it over the DevTools
//! protocol and plays the IRC client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::run::ChatServer;
use crate::support;

/// Chromium's start is the slow part (a second or two on this machine).
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

/// `$CHROMIUM`, or `chromium` / `chromium-browser` on `PATH`. A missing
/// browser fails the test (CI installs it; so should you to run this).
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| Path::new(candidate).is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test drives a real browser and found none: install Debian's chromium \
                 (.ci/run does: apt-get install chromium) or set CHROMIUM to its path"
            )
        })
}

#[test]
fn chromium_on_the_page_chats_with_an_irc_client() {
    let browser = chromium();
    let mut server = ChatServer::start(&["--ws-listen", "127.0.0.1:0"]);
    let ws = server.ws.expect("a ws address in the listening line");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chat_server/browser.py");
    let output = support::output_bounded(
        Command::new("python3")
            .arg(script)
            .arg(&browser)
            .arg(ws.to_string())
            .arg(server.irc.to_string()),
        BROWSER_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser.py failed (it needs python3 with websockets and {})\n{stderr}\n{}",
        browser.display(),
        server.describe()
    );
    let seen = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "page title: chat", "{seen}");
    assert_eq!(lines[1], "irc saw: :chromium JOIN #browsers", "{seen}");
    assert_eq!(
        lines[2], "irc got: :chromium PRIVMSG #browsers :typed in a browser",
        "{seen}"
    );
    assert_eq!(
        lines[3], "page shows: #browsers <ircfan> sent from irc",
        "{seen}"
    );
    server.stop();
}
