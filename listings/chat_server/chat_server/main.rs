//! chat_server: a multi-room IRC server that real IRC clients (irssi,
//! WeeChat, python-irc) and a browser (over WebSocket) can use.
//!
//! (Being wired: H3 integrates the modules as they land.)

mod broadcast;
mod cli;
mod history;
mod irc;
mod outbox;

use std::process::ExitCode;

use clap::Parser;

use cli::{Args, Config};

// ANCHOR: main
fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            return ExitCode::from(2);
        }
    };
    eprintln!("error: not wired yet ({:?})", config.listen);
    ExitCode::FAILURE
}
// ANCHOR_END: main
