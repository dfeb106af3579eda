//! The command line, and the checks that turn it into the settings every
//! part of the server reads: a refusal is one sentence and exit status 2,
//! before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use may_patterns::cli::at_least_one;
use may_patterns::ratelimit::Quota;

use crate::irc::{self, MAX_LINE};

// ANCHOR: args
/// A multi-room IRC server (plain, TLS and WebSocket) with accounts and
/// history kept in SQLite.
#[derive(Parser, Debug)]
#[command(name = "chat_server")]
pub struct Args {
    /// Plain IRC listener (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:6667")]
    pub listen: SocketAddr,
    /// WebSocket listener (IRCv3 WebSocket transport) that also serves the
    /// chat page at `/`.
    #[arg(long)]
    pub ws_listen: Option<SocketAddr>,
    /// TLS IRC listener; needs --cert and --key (or --demo).
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// SQLite database for accounts and room history (without it: history
    /// in memory until exit, no accounts).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Lines of a room's history replayed on JOIN (0: none).
    #[arg(long, default_value_t = 50)]
    pub history: usize,
    /// Connections served at once over every listener together.
    #[arg(long, default_value = "10000", value_parser = at_least_one::<usize>)]
    pub max_clients: usize,
    /// Bytes queued for one client before it is cut with "SendQ exceeded".
    #[arg(long, default_value = "65536", value_parser = sendq)]
    pub sendq: usize,
    /// Lines a client may send: COUNT/PERIOD ("10/2s"), bursts of COUNT.
    #[arg(long, default_value = "10/2s", value_parser = flood_rate)]
    pub flood_rate: Quota,
    /// How far a flooding client's lines may be delayed before it is cut
    /// with "Excess Flood".
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub flood_max_lag: Duration,
    /// Silence before the server sends PING; as long again without an
    /// answer and the client is cut ("Ping timeout").
    #[arg(long, default_value = "90s", value_parser = ping_interval)]
    pub ping_interval: Duration,
    /// The server's name in prefixes, PING and the welcome numerics.
    #[arg(long, default_value = "chat.local", value_parser = server_name)]
    pub server_name: String,
    /// Rooms one client may be in at once.
    #[arg(long, default_value = "20", value_parser = at_least_one::<usize>)]
    pub max_rooms_per_client: usize,
    /// Rooms that may exist at once on the server.
    #[arg(long, default_value = "10000", value_parser = at_least_one::<usize>)]
    pub max_rooms: usize,
    /// Print the start and stop lines as JSON objects.
    #[arg(long)]
    pub json: bool,
    /// Create a temporary database with the account demo / demo-password
    /// and a test certificate, listen on every transport, and print how to
    /// connect.
    #[arg(long, conflicts_with_all = ["db", "add_account"])]
    pub demo: bool,
    /// Add account NAME to --db (refused if it exists), the password read
    /// from the first line of stdin, and exit.
    #[arg(long, requires = "db", value_name = "NAME")]
    pub add_account: Option<String>,
}
// ANCHOR_END: args

/// A sendq must hold at least one whole IRC line, or nobody can be sent
/// anything.
fn sendq(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of bytes"))?;
    if n < MAX_LINE {
        return Err(format!(
            "{n} bytes cannot hold one IRC line ({} bytes)",
            MAX_LINE
        ));
    }
    Ok(n)
}

/// `COUNT/PERIOD`, e.g. `10/2s`: COUNT lines per PERIOD, in bursts of COUNT.
fn flood_rate(text: &str) -> Result<Quota, String> {
    let (count, period) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected COUNT/PERIOD, e.g. 10/2s"))?;
    let count: u64 = count
        .trim()
        .parse()
        .map_err(|_| format!("{count:?} is not a whole number of lines"))?;
    let period = positive_duration(period.trim())?;
    Quota::new(count, period, count).map_err(|e| format!("{text:?}: {e}"))
}

/// A duration that is not zero (may reads a zero timeout as "none").
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))? {
        Duration::ZERO => Err("must be longer than 0".to_owned()),
        d => Ok(d),
    }
}

/// A client needs a round trip to answer a PING: below 250 ms a healthy
/// client on a slow link would be cut. (Tests use 1s; ircds use minutes.)
fn ping_interval(text: &str) -> Result<Duration, String> {
    let d = positive_duration(text)?;
    if d < Duration::from_millis(250) {
        return Err(format!("{text:?} is too short: at least 250ms"));
    }
    Ok(d)
}

/// A server name goes into every prefix: no spaces, no ':' first, not empty.
fn server_name(text: &str) -> Result<String, String> {
    let bad = text.is_empty()
        || text.starts_with(':')
        || text.len() > 63
        || text.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!(
            "{text:?} is not a server name (1-63 characters, no spaces)"
        ));
    }
    Ok(text.to_owned())
}

// ANCHOR: settings
/// What every connection and the router read, fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The name in prefixes (`:chat.local 001 ...`) and in PING.
    pub server_name: String,
    /// Bytes queued for one client before it is cut.
    pub sendq: usize,
    /// Lines per period a client may send, with its burst.
    pub flood: Quota,
    /// Past this much delay (fake lag) a flooding client is cut.
    pub flood_max_lag: Duration,
    /// Silence before PING; as long again before "Ping timeout".
    pub ping_interval: Duration,
    /// A client that has not registered (NICK + USER) by then is cut.
    pub registration_timeout: Duration,
    /// Lines of history replayed on JOIN.
    pub history: usize,
    pub max_rooms_per_client: usize,
    pub max_rooms: usize,
    /// NICKLEN, CHANNELLEN, TOPICLEN in 005 (ISUPPORT).
    pub nick_len: usize,
    pub channel_len: usize,
    pub topic_len: usize,
}
// ANCHOR_END: settings

/// What `main` acts on: where to listen and what to do, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub ws_listen: Option<SocketAddr>,
    pub tls_listen: Option<SocketAddr>,
    /// (certificate chain, private key) PEM files.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub db: Option<PathBuf>,
    pub max_clients: usize,
    pub json: bool,
    pub demo: bool,
    pub add_account: Option<String>,
    pub settings: Settings,
}

impl Config {
    /// The checks clap cannot make flag by flag.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let tls_files = args.cert.zip(args.key);
        if args.tls_listen.is_some() && tls_files.is_none() && !args.demo {
            return Err("--tls-listen needs --cert and --key (PEM files)".to_owned());
        }
        if let Some(name) = &args.add_account {
            if !irc::valid_nick(name, NICK_LEN) {
                return Err(format!(
                    "{name:?} is not a valid account name (an IRC nick of at most {NICK_LEN})"
                ));
            }
        }
        Ok(Config {
            listen: args.listen,
            ws_listen: args.ws_listen,
            tls_listen: args.tls_listen,
            tls_files,
            db: args.db,
            max_clients: args.max_clients,
            json: args.json,
            demo: args.demo,
            add_account: args.add_account,
            settings: Settings {
                server_name: args.server_name,
                sendq: args.sendq,
                flood: args.flood_rate,
                flood_max_lag: args.flood_max_lag,
                ping_interval: args.ping_interval,
                registration_timeout: args.ping_interval,
                history: args.history,
                max_rooms_per_client: args.max_rooms_per_client,
                max_rooms: args.max_rooms,
                nick_len: NICK_LEN,
                channel_len: 50,
                topic_len: 390,
            },
        })
    }
}

/// NICKLEN: 30 as Libera.Chat and most ircds today (RFC 2812 said 9).
const NICK_LEN: usize = 30;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let args = ["chat_server"].iter().chain(extra);
        let args = Args::try_parse_from(args).map_err(|e| e.to_string())?;
        Config::from_args(args)
    }

    #[test]
    fn the_defaults_run() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.port(), 6667);
        assert_eq!(c.settings.sendq, 65536);
        assert_eq!(c.settings.history, 50);
        assert_eq!(c.settings.ping_interval, Duration::from_secs(90));
        let q = c.settings.flood;
        assert_eq!(
            (q.rate(), q.period(), q.burst()),
            (10, Duration::from_secs(2), 10)
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_sentence() {
        let cases: [(&[&str], &str); 11] = [
            (&["--sendq", "0"], "cannot hold one IRC line"),
            (&["--sendq", "lots"], "not a whole number of bytes"),
            (&["--flood-rate", "10"], "expected COUNT/PERIOD"),
            (&["--flood-rate", "0/2s"], "rate"),
            (&["--flood-rate", "10/0s"], "must be longer than 0"),
            (&["--ping-interval", "10ms"], "at least 250ms"),
            (&["--max-clients", "0"], "must be at least 1"),
            (&["--server-name", "a b"], "not a server name"),
            (&["--tls-listen", "127.0.0.1:0"], "needs --cert and --key"),
            (&["--add-account", "bob"], "--db"),
            (
                &["--db", "x.db", "--add-account", "1bob"],
                "not a valid account name",
            ),
        ];
        for (args, why) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }
}
