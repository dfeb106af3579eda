//! End-to-end: the finished `chat_server` run as a user runs it, spoken to
//! by clients nobody here wrote (Python's `irc` library, Chromium, Python's
//! `websockets`) and by a raw line client for the bad input a real client
//! would never send.
//!
//! Needs `python3` with the `irc` and `websockets` packages, `chromium` and
//! `nc` (`.ci/run` installs them: Debian `python3-irc`, `chromium`,
//! `netcat-openbsd`, and `python3 -m pip install websockets`); a test whose
//! tool is missing fails and says so.

#[path = "support/mod.rs"]
mod support;

#[path = "chat_server/bad_input.rs"]
mod bad_input;
#[path = "chat_server/browser.rs"]
mod browser;
#[path = "chat_server/client.rs"]
mod client;
#[path = "chat_server/frozen_client.rs"]
mod frozen_client;
#[path = "chat_server/irc_clients.rs"]
mod irc_clients;
#[path = "chat_server/irc_library.rs"]
mod irc_library;
#[path = "chat_server/run.rs"]
mod run;
#[path = "chat_server/websocket.rs"]
mod websocket;
