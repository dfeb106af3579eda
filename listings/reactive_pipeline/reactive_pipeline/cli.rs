//! The command line: what the server listens on, how it debounces, which
//! backends it searches, and the bounds it holds every connection to.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use may_patterns::cli::at_least_one;

// ANCHOR: cli
/// Live type-ahead search: each line a client sends is the search box's
/// text after a keystroke; the server debounces them, drops repeats, asks
/// every backend and writes the results back as they come.
#[derive(Parser, Debug, Clone)]
#[command(name = "reactive_pipeline")]
pub struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Search only after the text has not changed for this long.
    #[arg(long, default_value = "150ms", value_parser = positive)]
    pub debounce: Duration,
    /// Search backends, as IP:PORT,IP:PORT,... (names are not resolved).
    #[arg(long, value_delimiter = ',', required_unless_present = "demo")]
    pub backends: Vec<SocketAddr>,
    /// Start demo backends and a scripted typist, print what the typist
    /// sees, and exit.
    #[arg(long, conflicts_with_all = ["backends", "listen"])]
    pub demo: bool,
    /// Write one JSON object per line to clients instead of text.
    #[arg(long)]
    pub json: bool,
    /// Longest line a client may send, in bytes; a longer one gets an
    /// error line and the connection is closed.
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    pub max_line: usize,
    /// Close a connection that sends nothing for this long.
    #[arg(long, default_value = "60s", value_parser = positive)]
    pub idle_timeout: Duration,
    /// Connections served at once; one more gets an error line and is closed.
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    pub max_connections: usize,
    /// How long one backend may take to answer one search.
    #[arg(long, default_value = "1s", value_parser = positive)]
    pub timeout: Duration,
}
// ANCHOR_END: cli

/// A duration that is not zero (a zero debounce or deadline means nothing).
fn positive(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be longer than 0".to_owned()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let argv = std::iter::once("reactive_pipeline").chain(args.iter().copied());
        Cli::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_lists_parse() {
        let cli = parse(&["--backends", "127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!(cli.backends.len(), 2);
        assert_eq!(cli.debounce, Duration::from_millis(150));
        assert_eq!(cli.max_line, 256);
        assert!(parse(&["--demo"]).unwrap().demo);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (args, why) in [
            (
                &["--backends", "127.0.0.1:1", "--debounce", "0ms"][..],
                "longer than 0",
            ),
            (
                &["--backends", "127.0.0.1:1", "--max-line", "0"],
                "at least 1",
            ),
            (
                &["--backends", "127.0.0.1:1", "--idle-timeout", "0s"],
                "longer than 0",
            ),
            (&["--backends", "localhost:80"], "invalid socket address"),
            (&["--debounce", "80ms"], "--backends"),
            (
                &["--demo", "--backends", "127.0.0.1:1"],
                "cannot be used with",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }
}
