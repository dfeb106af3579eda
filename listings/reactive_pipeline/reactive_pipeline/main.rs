//! reactive_pipeline: live type-ahead search over a TCP line stream.
//!
//! **Purpose.** The search box of a web shop, as a reactive pipeline: every
//! keystroke sends the box's text; the server waits until the typing pauses
//! (debounce), ignores text it has just searched for (distinct until
//! changed), asks every search backend at once and writes each answer back
//! as it arrives, then a summary. A newer query cancels the older search,
//! down to the sockets of its backend calls.
//!
//! **Architecture.** `server` accepts clients (bounded in number) and runs
//! `session` for each: `keystrokes` is the source (a line is read from the
//! socket only when the pipeline asks for one, and never longer than
//! `--max-line`), then `debounce`, `distinct_until_changed` and
//! `switch_map` to `search`, whose backend calls are `Flux::from_call`s
//! that shut their socket when cancelled; the session's subscriber writes
//! the client's screen one event at a time. `demo` scripts a typist.
//!
//! **Usage.** `cargo run --example reactive_pipeline -- --demo` shows a
//! scripted session. With backends running (`cargo run --example
//! search_backend -- --listen 127.0.0.1:8001`), `cargo run --example
//! reactive_pipeline -- --backends 127.0.0.1:8001` listens on
//! 127.0.0.1:7700: `printf 'l\nla\nlam\nlamp\n' | nc -N 127.0.0.1 7700`
//! types four keystrokes, or type lines into `nc 127.0.0.1 7700`. Ctrl-C
//! stops it.
//!
//! **Performance.** Each operator costs a function call (`map`) or a
//! coroutine hop (`debounce`, `switch_map`); `cargo bench --bench
//! reactive_operators` measures them against an iterator chain and
//! channels between coroutines.
//!
//! **Customization.** Replace `search::call` with your backend's protocol
//! (keep the `on_cancel` that closes its socket), and `Screen::show` with
//! your client's format.

mod cli;
mod demo;
mod keystrokes;
mod search;
mod server;
mod session;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;

use crate::cli::Cli;
use crate::keystrokes::LineLimits;
use crate::search::Backends;
use crate::session::Config;

// ANCHOR: main
fn main() -> ExitCode {
    let cli = Cli::parse();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let outcome = match cli.demo {
        true => demo::run(&cli),
        false => serve(&cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(sentence) => {
            eprintln!("error: {sentence}");
            ExitCode::FAILURE
        }
    }
}

/// Listen until Ctrl-C, then print what was done.
fn serve(cli: &Cli) -> Result<(), String> {
    let listener = TcpListener::bind(cli.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {local}");
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    ctrlc::set_handler(move || on_ctrl_c.trigger())
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let config = Arc::new(Config {
        debounce: cli.debounce,
        limits: LineLimits {
            max_line: cli.max_line,
            idle: cli.idle_timeout,
        },
        json: cli.json,
        backends: Arc::new(Backends::new(cli.backends.clone(), cli.timeout)),
    });
    let summary = server::run(listener, shutdown, config, cli.max_connections)
        .map_err(|e| format!("stopped serving: {e}"))?;
    match cli.json {
        true => println!("{}", serde_json::to_string(&summary).expect("serialises")),
        false => println!("{summary}"),
    }
    Ok(())
}
// ANCHOR_END: main
