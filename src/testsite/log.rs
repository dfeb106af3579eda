//! nginx's access log, parsed, and the politeness measures taken from it.

use std::io::{self, ErrorKind};
use std::time::Duration;

/// One line of the harness's access log (its `log_format crawl`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLine {
    /// When nginx finished the request: Unix time in seconds, to the millisecond.
    pub msec: f64,
    /// How long the request took, in seconds, to the millisecond.
    pub request_time: f64,
    /// Which host of the site (by its port).
    pub host: usize,
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    pub status: u16,
    /// Body bytes sent (compressed, if gzip was on).
    pub bytes: u64,
    pub user_agent: String,
}

impl AccessLine {
    /// When the request started (nginx logs at its end): `msec - request_time`.
    pub fn started(&self) -> f64 {
        self.msec - self.request_time
    }

    /// Start and end in whole milliseconds, the log's resolution.
    fn span_ms(&self) -> (i64, i64) {
        let end = (self.msec * 1000.0).round() as i64;
        (end - (self.request_time * 1000.0).round() as i64, end)
    }

    /// Parse one line; `ports[i]` is host `i`'s port.
    pub(crate) fn parse(line: &str, ports: &[u16]) -> io::Result<AccessLine> {
        let bad = |what: &str| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("access log: {what} in {line:?}"),
            )
        };
        let mut rest = line;
        let mut word = || -> io::Result<&str> {
            let trimmed = rest.trim_start();
            let (w, tail) = match trimmed.strip_prefix('"') {
                // nginx escapes a `"` inside a field as `\x22`, so the next
                // `"` ends it.
                Some(quoted) => quoted
                    .split_once('"')
                    .ok_or_else(|| bad("an unclosed quote"))?,
                None => trimmed.split_once(' ').unwrap_or((trimmed, "")),
            };
            rest = tail;
            Ok(w)
        };
        let msec = word()?.parse().map_err(|_| bad("a bad $msec"))?;
        let request_time = word()?.parse().map_err(|_| bad("a bad $request_time"))?;
        let port: u16 = word()?.parse().map_err(|_| bad("a bad port"))?;
        let host = ports
            .iter()
            .position(|&p| p == port)
            .ok_or_else(|| bad("a port of no host"))?;
        let method = word()?.to_owned();
        let path = word()?.to_owned();
        let status = word()?.parse().map_err(|_| bad("a bad status"))?;
        let bytes = word()?.parse().map_err(|_| bad("a bad byte count"))?;
        let user_agent = word()?.to_owned();
        Ok(AccessLine {
            msec,
            request_time,
            host,
            method,
            path,
            status,
            bytes,
            user_agent,
        })
    }
}

/// Number of hosts a log speaks of: one more than the highest index in it.
fn hosts_in(log: &[AccessLine]) -> usize {
    log.iter().map(|l| l.host + 1).max().unwrap_or(0)
}

// ANCHOR: politeness
/// For each host, the shortest time between the starts of two consecutive
/// requests to it (`None`: fewer than two requests). The log's resolution
/// is 1 ms, so a gap is exact to about ±2 ms. Filter `log` first to leave
/// out what the delay does not cover (a crawler may fetch `/robots.txt`
/// without waiting, for instance).
pub fn min_gap_per_host(log: &[AccessLine]) -> Vec<Option<Duration>> {
    (0..hosts_in(log))
        .map(|host| {
            let mut starts: Vec<i64> = log
                .iter()
                .filter(|l| l.host == host)
                .map(|l| l.span_ms().0)
                .collect();
            starts.sort_unstable();
            starts
                .windows(2)
                .map(|w| w[1] - w[0])
                .min()
                .map(|gap| Duration::from_millis(gap as u64))
        })
        .collect()
}

/// For each host, the most requests it was serving at one moment. A
/// request ending in the millisecond another starts does not overlap it
/// (at 1 ms resolution the two cannot be told apart).
pub fn max_concurrency_per_host(log: &[AccessLine]) -> Vec<usize> {
    (0..hosts_in(log))
        .map(|host| {
            // (time, +1 start / -1 end); ends sort before starts at a tie.
            let mut events: Vec<(i64, i32)> = log
                .iter()
                .filter(|l| l.host == host)
                .flat_map(|l| {
                    let (start, end) = l.span_ms();
                    [(start, 1), (end, -1)]
                })
                .collect();
            events.sort_unstable();
            let (mut now, mut most) = (0i32, 0i32);
            for (_, change) in events {
                now += change;
                most = most.max(now);
            }
            most as usize
        })
        .collect()
}

// ANCHOR_END: politeness

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: usize, started_ms: u64, took_ms: u64) -> AccessLine {
        AccessLine {
            msec: (started_ms + took_ms) as f64 / 1000.0,
            request_time: took_ms as f64 / 1000.0,
            host,
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            bytes: 0,
            user_agent: String::new(),
        }
    }

    #[test]
    fn a_log_line_parses_with_quotes_and_spaces() {
        let text =
            r#"1764652800.125 0.020 8002 GET "/p/1.html?a=b" 200 1234 "crawler/1.0 (+https://x)""#;
        let parsed = AccessLine::parse(text, &[8001, 8002]).unwrap();
        assert_eq!(
            (
                parsed.host,
                parsed.path.as_str(),
                parsed.status,
                parsed.bytes
            ),
            (1, "/p/1.html?a=b", 200, 1234)
        );
        assert_eq!(parsed.user_agent, "crawler/1.0 (+https://x)");
        assert!((parsed.started() - 1764652800.105).abs() < 1e-6);
        let error = AccessLine::parse(text, &[8001]).unwrap_err();
        assert!(error.to_string().contains("a port of no host"), "{error}");
    }

    #[test]
    fn gaps_are_between_starts_and_concurrency_counts_overlaps() {
        // Host 0: starts 0, 100, 250 (each 30 ms long). Host 1: three at
        // once, then one that starts as the first of them ends.
        let log = [
            line(0, 0, 30),
            line(0, 100, 30),
            line(0, 250, 30),
            line(1, 10, 50),
            line(1, 20, 50),
            line(1, 30, 50),
            line(1, 60, 5),
        ];
        assert_eq!(
            min_gap_per_host(&log),
            [
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(10))
            ]
        );
        assert_eq!(max_concurrency_per_host(&log), [1, 3]);
        assert_eq!(min_gap_per_host(&log[..1]), [None]);
    }
}
