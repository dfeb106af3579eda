//! The command line, and the checks that turn it into settings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use may_patterns::balance::{Algorithm, BackendConfig};
use may_patterns::cli::at_least_one;
use may_patterns::server::MIN_SOCKET_TIMEOUT;

/// An HTTP/1.1 load balancer: each request goes to one of the backends,
/// chosen by --algorithm among those up and not draining.
///
/// Durations are written 500ms, 2s, 1m or 1m30s; a bare number is seconds.
///
/// A backend is checked every --check-interval with GET --check-path (a
/// 2xx or 3xx answer within the interval passes, as HAProxy does without
/// `timeout check`): --fall failures in a row take it down, --rise passes
/// bring it back. Connect errors and timeouts of live requests count as
/// failures too.
///
/// Admin paths are answered only to clients connecting from loopback
/// (127.0.0.0/8 and ::1), others get 403: GET --stats-path (the backends
/// as JSON), POST /_lb/drain?backend=ADDR (no new requests to it) and POST
/// /_lb/undrain?backend=ADDR.
#[derive(Parser, Debug)]
#[command(name = "load_balancer")]
pub struct Args {
    /// Where the balancer listens (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A backend, HOST:PORT with an optional weight (repeatable, at least
    /// one). A name is resolved once, at start; each of its addresses
    /// becomes a backend of that weight, as in nginx.
    #[arg(long = "backend", value_name = "ADDR[,weight=N]", required = true)]
    pub backends: Vec<BackendSpec>,
    /// How a backend is chosen per request.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::RoundRobin)]
    pub algorithm: AlgorithmArg,
    /// The path health checks request.
    #[arg(long, default_value = "/", value_parser = check_path)]
    pub check_path: String,
    /// Time between health checks, which is also one check's timeout.
    #[arg(long, default_value = "2s", value_parser = nonzero_duration)]
    pub check_interval: Duration,
    /// Passing checks in a row that bring a down backend up.
    #[arg(long, default_value = "2", value_parser = at_least_one::<u32>)]
    pub rise: u32,
    /// Failures in a row that take an up backend down.
    #[arg(long, default_value = "3", value_parser = at_least_one::<u32>)]
    pub fall: u32,
    /// Other backends a request is sent to when its backend fails: after a
    /// refused or timed-out connect, any request; after a reset before the
    /// answer or a response timeout, only an idempotent one without a body.
    #[arg(long, default_value = "1")]
    pub retries: u32,
    /// A backend that comes back up gets its full weight only after this
    /// long, growing linearly (0: at once).
    #[arg(long, default_value = "0", value_parser = duration)]
    pub slow_start: Duration,
    /// Client connections served at once; more are answered 503.
    #[arg(long, default_value = "1000", value_parser = at_least_one::<usize>)]
    pub max_connections: usize,
    /// How long a connect to a backend may take.
    #[arg(long, default_value = "2s", value_parser = socket_duration)]
    pub connect_timeout: Duration,
    /// How long a backend may stay silent before its answer (and between
    /// two reads of it); then 504.
    #[arg(long, default_value = "30s", value_parser = socket_duration)]
    pub response_timeout: Duration,
    /// How long a client connection may stay silent between requests.
    #[arg(long, default_value = "60s", value_parser = socket_duration)]
    pub idle_timeout: Duration,
    /// How long a client has to send a request's head, once it has begun.
    #[arg(long, default_value = "10s", value_parser = socket_duration)]
    pub header_timeout: Duration,
    /// The path that answers the backends' stats as JSON.
    #[arg(long, default_value = "/_lb/stats", value_parser = admin_path)]
    pub stats_path: String,
    /// may's worker threads, which run every coroutine (default: one per
    /// core, as nginx's `worker_processes auto`).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Print the start and stop lines as JSON objects.
    #[arg(long)]
    pub json: bool,
}

/// `--algorithm`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlgorithmArg {
    /// Each backend in turn, weights ignored.
    RoundRobin,
    /// nginx's smooth weighted round-robin.
    Weighted,
    /// The fewest requests in flight per unit of weight.
    LeastConn,
    /// The less loaded of two random backends.
    P2c,
}

impl AlgorithmArg {
    pub fn algorithm(self) -> Algorithm {
        match self {
            AlgorithmArg::RoundRobin => Algorithm::RoundRobin,
            AlgorithmArg::Weighted => Algorithm::Weighted,
            AlgorithmArg::LeastConn => Algorithm::LeastConnections,
            AlgorithmArg::P2c => Algorithm::PowerOfTwo,
        }
    }
}

/// One `--backend` as written: not resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

impl FromStr for BackendSpec {
    type Err = String;

    /// `HOST:PORT`, `[V6]:PORT`, then optionally `,weight=N` (N at least 1).
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, options) = match text.split_once(',') {
            Some((addr, options)) => (addr, Some(options)),
            None => (text, None),
        };
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{addr:?} is not HOST:PORT"))?;
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !bracketed) {
            return Err(format!(
                "{addr:?} is not HOST:PORT (write an IPv6 address in brackets)"
            ));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{port:?} is not a port (1 to 65535)"))?;
        let weight = match options {
            None => 1,
            Some(option) => {
                let n = option
                    .strip_prefix("weight=")
                    .ok_or_else(|| format!("unknown option {option:?} (only weight=N)"))?;
                at_least_one::<u32>(n).map_err(|e| format!("weight {n:?}: {e}"))?
            }
        };
        Ok(BackendSpec {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            weight,
        })
    }
}

impl BackendSpec {
    /// As it was written (without the weight): the backends' name in stats.
    fn name(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

/// The pool's backends: every address of every `--backend`. Names are
/// looked up on `may_patterns::blocking`'s threads (getaddrinfo blocks the
/// thread it runs on), so this may be called from a coroutine too. An
/// address given twice is refused: the pool finds backends by address.
pub fn resolve(specs: &[BackendSpec]) -> Result<Vec<BackendConfig>, String> {
    let mut backends: Vec<BackendConfig> = Vec::new();
    for spec in specs {
        let (host, port, name) = (spec.host.clone(), spec.port, spec.name());
        let addrs: Vec<SocketAddr> = match host.parse() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => may_patterns::blocking::run(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>())
            })
            .map_err(|e| format!("{name}: {e:?}"))?
            .map_err(|e| format!("{name}: {e}"))?,
        };
        if addrs.is_empty() {
            return Err(format!("{name}: the name has no address"));
        }
        for addr in addrs {
            if let Some(twice) = backends.iter().find(|b| b.addr == addr) {
                return Err(format!(
                    "{name}: {addr} is also backend {} (each address once)",
                    twice.name
                ));
            }
            backends.push(BackendConfig {
                name: name.clone(),
                addr,
                weight: spec.weight,
            });
        }
    }
    Ok(backends)
}

/// A duration: `500ms`, `2s`, `1m30s`; a bare number is seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("{e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (write 500ms, 2s or 1m)"))
}

fn nonzero_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be more than zero".to_owned()),
        d => Ok(d),
    }
}

/// A duration may keeps as a socket timeout (see `MIN_SOCKET_TIMEOUT`).
fn socket_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d < MIN_SOCKET_TIMEOUT => Err(format!(
            "must be at least {}ms (may's socket timers race below that)",
            MIN_SOCKET_TIMEOUT.as_millis()
        )),
        d => Ok(d),
    }
}

/// A path that goes into a request line as it is.
fn check_path(text: &str) -> Result<String, String> {
    match text.starts_with('/') && !text.bytes().any(|b| b <= b' ' || b == 0x7f) {
        true => Ok(text.to_owned()),
        false => Err("must start with / and hold no space or control character".to_owned()),
    }
}

/// An admin path: a plain path, compared with the request's path whole.
fn admin_path(text: &str) -> Result<String, String> {
    let path = check_path(text)?;
    match path.contains('?') {
        true => Err("a path without a query".to_owned()),
        false => Ok(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<BackendSpec, String> {
        text.parse()
    }

    #[test]
    fn backends_with_and_without_weights() {
        let b = spec("127.0.0.1:9001").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.weight), ("127.0.0.1", 9001, 1));
        let b = spec("web1.internal:80,weight=5").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.weight),
            ("web1.internal", 80, 5)
        );
        let b = spec("[::1]:8080,weight=2").unwrap();
        assert_eq!(
            (b.host.as_str(), b.weight, b.name()),
            ("::1", 2, "[::1]:8080".into())
        );
    }

    #[test]
    fn bad_backends_are_refused_with_a_reason() {
        let cases = [
            ("localhost", "not HOST:PORT"),
            (":80", "not HOST:PORT"),
            ("::1:80", "brackets"),
            ("h:0", "not a port"),
            ("h:99999", "not a port"),
            ("h:80,weight=0", "at least 1"),
            ("h:80,weight=x", "weight \"x\""),
            ("h:80,max_fails=3", "unknown option"),
        ];
        for (text, why) in cases {
            let e = spec(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn names_resolve_to_every_address_and_duplicates_are_refused() {
        let specs = [spec("localhost:9001,weight=3").unwrap()];
        let backends = resolve(&specs).unwrap();
        assert!(!backends.is_empty());
        for b in &backends {
            assert!(b.addr.ip().is_loopback() && b.addr.port() == 9001);
            assert_eq!((b.name.as_str(), b.weight), ("localhost:9001", 3));
        }
        let twice = [
            spec("127.0.0.1:9001").unwrap(),
            spec("127.0.0.1:9001").unwrap(),
        ];
        assert!(resolve(&twice).unwrap_err().contains("each address once"));
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("soon").is_err());
        assert!(socket_duration("100ms")
            .unwrap_err()
            .contains("at least 250ms"));
        assert!(nonzero_duration("0").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let args = Args::try_parse_from(["load_balancer", "--backend", "127.0.0.1:1"]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.algorithm.algorithm(), Algorithm::RoundRobin);
        assert_eq!((args.rise, args.fall, args.retries), (2, 3, 1));
        assert_eq!(args.check_interval, Duration::from_secs(2));
        assert_eq!(args.stats_path, "/_lb/stats");
        assert_eq!(args.workers, None, "one per core");
        let args = Args::try_parse_from([
            "load_balancer",
            "--backend",
            "127.0.0.1:1,weight=3",
            "--backend",
            "127.0.0.1:2",
            "--algorithm",
            "least-conn",
            "--check-interval",
            "200ms",
            "--workers",
            "1",
        ])
        .unwrap();
        assert_eq!(args.backends.len(), 2);
        assert_eq!(args.algorithm.algorithm(), Algorithm::LeastConnections);
        assert_eq!(args.check_interval, Duration::from_millis(200));
        assert_eq!(args.workers, Some(1));
        let p2c = ["load_balancer", "--backend", "h:1", "--algorithm", "p2c"];
        assert_eq!(
            Args::try_parse_from(p2c).unwrap().algorithm.algorithm(),
            Algorithm::PowerOfTwo
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        let bad: [&[&str]; 6] = [
            &[],
            &["--backend", "h:1", "--workers", "0"],
            &["--backend", "h:1", "--check-path", "health"],
            &["--backend", "h:1", "--stats-path", "/s?x=1"],
            &["--backend", "h:1", "--connect-timeout", "10ms"],
            &["--backend", "h:1", "--fall", "0"],
        ];
        for flags in bad {
            let argv = std::iter::once("load_balancer").chain(flags.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{flags:?}");
        }
    }
}
