//! The command line, and the checks that turn it into a configuration the
//! gateway can run with: every refusal is one sentence and exit status 2,
//! before anything listens or connects.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use may_patterns::cli::at_least_one;
use may_patterns::ratelimit::{AlgorithmKind, Quota};

use crate::keys::KeySpec;

// ANCHOR: cli
/// An HTTP gateway that limits each client's request rate and forwards
/// what it admits to an upstream.
#[derive(Parser, Debug)]
#[command(name = "rate_limiter")]
pub struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The upstream to forward admitted requests to (IP:port; names are
    /// not resolved).
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    pub upstream: Option<SocketAddr>,
    /// Start a demo upstream in this process (`GET /search?q=WORD`) and
    /// forward to it.
    #[arg(long)]
    pub demo: bool,
    /// fixed-window, sliding-log, sliding-counter, token-bucket, gcra or
    /// leaky-bucket (which queues instead of rejecting).
    #[arg(long, default_value = "gcra", value_parser = algorithm)]
    pub algorithm: AlgorithmKind,
    /// Requests admitted per key per --period.
    #[arg(long, default_value = "10", value_parser = count, allow_hyphen_values = true)]
    pub rate: u64,
    /// The period --rate is counted over.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub period: Duration,
    /// Requests a key may send at once (for leaky-bucket: how many may
    /// wait). At least 1, the cost of one request.
    #[arg(long, default_value = "10", value_parser = burst, allow_hyphen_values = true)]
    pub burst: u64,
    /// What a limit is per: `ip` (the client's address) or `header:NAME`
    /// (an API key; a request without it gets 400).
    #[arg(long, default_value = "ip")]
    pub key: KeySpec,
    /// Keys remembered at once; beyond it the key quiet longest is
    /// forgotten (it starts over with a full burst).
    #[arg(long, default_value = "100000", value_parser = at_least_one::<usize>)]
    pub max_keys: usize,
    /// Client connections served at once; one more gets 503 and is closed.
    #[arg(long, default_value = "1024", value_parser = at_least_one::<usize>)]
    pub max_connections: usize,
    /// A client connection with no request for this long is closed.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// A request must arrive whole (head and body) within this long of its
    /// first byte, or it gets 408.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Connecting to the upstream, and each exchange with it (request
    /// sent, response read); past it the client gets 504.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub upstream_timeout: Duration,
    /// Idle upstream connections kept for reuse (0: one per request).
    #[arg(long, default_value_t = 32)]
    pub upstream_idle: usize,
    /// Start even if the upstream is down, answering 502 until it is up
    /// (without it: exit with status 1).
    #[arg(long)]
    pub allow_upstream_down: bool,
    /// Print the summary at exit as one JSON line.
    #[arg(long)]
    pub json: bool,
}
// ANCHOR_END: cli

/// `--algorithm`: one of the six names; the error lists them.
fn algorithm(name: &str) -> Result<AlgorithmKind, String> {
    name.parse().map_err(|e| format!("{e}"))
}

/// A whole number of at least 1, with a sentence for zero and for a
/// negative number (clap would take `-5` for a flag).
fn count(text: &str) -> Result<u64, String> {
    match text.parse::<i128>() {
        Ok(n) if n < 1 => Err(format!(
            "{n} is not a rate: it must be a whole number of at least 1"
        )),
        Ok(n) => u64::try_from(n).map_err(|_| format!("{n} is too large")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// `--burst`: at least one request's cost, or no request could ever pass.
fn burst(text: &str) -> Result<u64, String> {
    count(text).map_err(|_| {
        format!(
            "{text:?}: the burst must be at least 1, the cost of one request, or nothing passes"
        )
    })
}

/// A duration that is not zero (may reads a zero timeout as "none").
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be longer than 0".to_owned()),
        d => Ok(d),
    }
}

// ANCHOR: validate
/// What the gateway runs with, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None` with `--demo`: the demo upstream's address is known later.
    pub upstream: Option<SocketAddr>,
    pub algorithm: AlgorithmKind,
    pub quota: Quota,
    pub key: KeySpec,
    pub max_keys: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_idle: usize,
    pub allow_upstream_down: bool,
    pub json: bool,
}

impl Config {
    /// The checks clap cannot make flag by flag: the quota as a whole.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let quota = Quota::new(args.rate, args.period, args.burst).map_err(|e| {
            format!(
                "--rate {} --period {:?} --burst {}: {e}",
                args.rate, args.period, args.burst
            )
        })?;
        Ok(Config {
            listen: args.listen,
            upstream: args.upstream,
            algorithm: args.algorithm,
            quota,
            key: args.key,
            max_keys: args.max_keys,
            max_connections: args.max_connections,
            idle_timeout: args.idle_timeout,
            header_timeout: args.header_timeout,
            upstream_timeout: args.upstream_timeout,
            upstream_idle: args.upstream_idle,
            allow_upstream_down: args.allow_upstream_down,
            json: args.json,
        })
    }
}
// ANCHOR_END: validate

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let args = ["rate_limiter", "--demo"].iter().chain(extra);
        let args = Args::try_parse_from(args).map_err(|e| e.to_string())?;
        Config::from_args(args)
    }

    #[test]
    fn the_defaults_run() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.algorithm, AlgorithmKind::Gcra);
        assert_eq!((config.quota.rate(), config.quota.burst()), (10, 10));
        assert_eq!(config.key, KeySpec::Ip);
    }

    #[test]
    fn bad_input_is_refused_with_a_sentence() {
        let cases: [(&[&str], &str); 8] = [
            (&["--rate", "0"], "must be a whole number of at least 1"),
            (&["--rate", "-5"], "must be a whole number of at least 1"),
            (&["--rate", "ten"], "is not a whole number"),
            (&["--burst", "0"], "the cost of one request"),
            (&["--algorithm", "magic"], "gcra"),
            (&["--key", "header:X Y"], "is not a header name"),
            (&["--key", "cookie"], "expected `ip` or `header:NAME`"),
            (&["--period", "0s"], "must be longer than 0"),
        ];
        for (args, why) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
        let e = Args::try_parse_from(["rate_limiter", "--upstream", "localhost:80"]).unwrap_err();
        assert!(e.to_string().contains("invalid socket address"), "{e}");
        let e = Args::try_parse_from(["rate_limiter"]).unwrap_err();
        assert!(e.to_string().contains("--upstream"), "{e}");
    }
}
