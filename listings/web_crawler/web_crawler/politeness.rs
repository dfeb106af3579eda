//! The rate limiter per host: at most `--per-host` requests in flight, one
//! request started per delay (`--delay`, raised by robots.txt's
//! `Crawl-delay`), pushed back by `429`/`503` with `Retry-After`, and the
//! host's robots.txt rules.
//!
//! Only the scheduler touches it, so nothing here is locked; time comes in
//! as an argument, so the tests run on made-up instants.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use url::Url;

use crate::robots::Rules;

/// The longest a host is pushed back by one `Retry-After` or backoff: a
/// server asking for a day would otherwise hold its URLs (and the crawl's
/// end) that long.
pub const MAX_PUSH_BACK: Duration = Duration::from_secs(60);

/// The first backoff of a host that answered 429 or 503 without a
/// `Retry-After`; it doubles with each such answer in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

// ANCHOR: host
/// What the scheduler may do with a host's next URL now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Fetch it.
    Go,
    /// Fetch the host's robots.txt first.
    FetchRobots,
    /// Not before this instant (the delay or a push-back).
    At(Instant),
    /// Wait for a request in flight to end (K in flight, or the robots.txt
    /// is being fetched).
    Busy,
}

/// One host's politeness state.
#[derive(Debug)]
struct Host {
    in_flight: usize,
    /// The earliest start of the next request.
    next_allowed: Option<Instant>,
    /// `--delay`, or the robots.txt's longer `Crawl-delay`.
    delay: Duration,
    /// 429/503 answers in a row without a `Retry-After`.
    backoffs: u32,
    /// robots.txt fetches that failed (unreachable, timed out).
    robots_failures: u32,
    robots: Robots,
}

#[derive(Debug)]
enum Robots {
    Unknown,
    Fetching,
    Known(Rules),
}

/// Every host's state, keyed by origin (see `frontier::origin`).
#[derive(Debug)]
pub struct Politeness {
    per_host: usize,
    delay: Duration,
    hosts: HashMap<String, Host>,
}

impl Politeness {
    pub fn new(per_host: usize, delay: Duration) -> Politeness {
        Politeness {
            per_host,
            delay,
            hosts: HashMap::new(),
        }
    }

    fn host(&mut self, origin: &str) -> &mut Host {
        let delay = self.delay;
        self.hosts.entry(origin.to_owned()).or_insert(Host {
            in_flight: 0,
            next_allowed: None,
            delay,
            backoffs: 0,
            robots_failures: 0,
            robots: Robots::Unknown,
        })
    }

    // ANCHOR: ready
    /// May a request to `origin` start at `now`, and which one?
    pub fn ready(&mut self, origin: &str, now: Instant) -> Ready {
        let per_host = self.per_host;
        let host = self.host(origin);
        if matches!(host.robots, Robots::Fetching) || host.in_flight >= per_host {
            return Ready::Busy;
        }
        match host.next_allowed {
            Some(at) if now < at => Ready::At(at),
            _ if matches!(host.robots, Robots::Unknown) => Ready::FetchRobots,
            _ => Ready::Go,
        }
    }

    /// A request to `origin` starts at `now` (the delay counts from a
    /// request's start: what the server sees as the gap between requests).
    pub fn start(&mut self, origin: &str, now: Instant, robots: bool) {
        let host = self.host(origin);
        host.in_flight += 1;
        host.next_allowed = Some(now + host.delay);
        if robots {
            host.robots = Robots::Fetching;
        }
    }
    // ANCHOR_END: ready

    /// A request to `origin` ended (answered, failed or given up).
    pub fn end(&mut self, origin: &str) {
        let host = self.host(origin);
        host.in_flight = host.in_flight.saturating_sub(1);
    }

    /// The host's robots.txt is known: its rules, and its `Crawl-delay`
    /// (which raises the delay, never lowers it under `--delay`).
    pub fn set_rules(&mut self, origin: &str, rules: Rules) {
        let host = self.host(origin);
        if let Some(asked) = rules.crawl_delay() {
            host.delay = host.delay.max(asked);
        }
        host.robots = Robots::Known(rules);
    }

    /// The host's robots.txt could not be fetched: how many times now.
    pub fn robots_failed(&mut self, origin: &str) -> u32 {
        let host = self.host(origin);
        host.robots_failures += 1;
        host.robots_failures
    }

    /// Fetch the host's robots.txt again when the host may be asked again.
    pub fn forget_rules(&mut self, origin: &str) {
        self.host(origin).robots = Robots::Unknown;
    }

    /// Whether the host's rules let `url` be fetched (`true` until they are
    /// known: the scheduler asks only after they are).
    pub fn allows(&self, origin: &str, url: &Url) -> bool {
        match self.hosts.get(origin).map(|h| &h.robots) {
            Some(Robots::Known(rules)) => rules.allows(url),
            _ => true,
        }
    }

    /// Whether the host disallows everything (its queue can be dropped).
    pub fn disallows_all(&self, origin: &str) -> bool {
        matches!(
            self.hosts.get(origin).map(|h| &h.robots),
            Some(Robots::Known(Rules::DisallowAll))
        )
    }

    // ANCHOR: push_back
    /// The host answered 429 or 503 at `now`: no request before
    /// `Retry-After` (when it said one), else before an exponential
    /// backoff (1 s, 2 s, 4 s, ...), both at most [`MAX_PUSH_BACK`].
    /// Returns how long the host is pushed back.
    pub fn push_back(
        &mut self,
        origin: &str,
        now: Instant,
        retry_after: Option<Duration>,
    ) -> Duration {
        let host = self.host(origin);
        let wait = match retry_after {
            Some(wait) => wait,
            None => {
                host.backoffs += 1;
                FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(host.backoffs - 1))
            }
        }
        .min(MAX_PUSH_BACK);
        host.defer(now + wait);
        wait
    }
    // ANCHOR_END: push_back

    /// A transient error at `now`: try the host again no earlier than
    /// `now + wait` (the retry policy's jittered delay).
    pub fn defer(&mut self, origin: &str, until: Instant) {
        self.host(origin).defer(until);
    }

    /// The host answered normally: its backoff starts over.
    pub fn answered(&mut self, origin: &str) {
        self.host(origin).backoffs = 0;
    }

    /// When `origin` may next be asked, if only time (not a request in
    /// flight) holds it back: the scheduler's next timed wake-up.
    pub fn waiting_until(&mut self, origin: &str, now: Instant) -> Option<Instant> {
        match self.ready(origin, now) {
            Ready::At(at) => Some(at),
            _ => None,
        }
    }

    /// Hosts seen so far.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }
}

impl Host {
    fn defer(&mut self, until: Instant) {
        self.next_allowed = Some(self.next_allowed.map_or(until, |at| at.max(until)));
    }
}
// ANCHOR_END: host

// ANCHOR: retry_after
/// A `Retry-After` value: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`, RFC 9110 section 10.2.3), as a wait
/// from `now`. A date in the past is no wait. The two obsolete date
/// formats HTTP still allows a recipient to read are not read: the value
/// is then `None`, and the host gets the exponential backoff instead.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = UNIX_EPOCH + Duration::from_secs(imf_fixdate(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds since the Unix epoch of an IMF-fixdate, `Sun, 06 Nov 1994
/// 08:49:37 GMT`.
fn imf_fixdate(value: &str) -> Option<u64> {
    let words: Vec<&str> = value.split(' ').collect();
    let [_weekday, day, month, year, time, "GMT"] = words[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let (day, year): (u64, u64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time
        .split(':')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days from 1970-01-01 to a date of the Gregorian calendar (Howard
/// Hinnant's `days_from_civil`, for years from 1970 on).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let month_index = (month + 9) % 12; // March is 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
// ANCHOR_END: retry_after

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "http://a";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A host whose robots.txt is known (allow all).
    fn polite(per_host: usize, delay: Duration) -> Politeness {
        let mut p = Politeness::new(per_host, delay);
        p.set_rules(ORIGIN, Rules::AllowAll);
        p
    }

    #[test]
    fn robots_txt_comes_first_and_alone() {
        let t0 = Instant::now();
        let mut p = Politeness::new(4, Duration::ZERO);
        assert_eq!(p.ready(ORIGIN, t0), Ready::FetchRobots);
        p.start(ORIGIN, t0, true);
        assert_eq!(
            p.ready(ORIGIN, t0),
            Ready::Busy,
            "no page while robots.txt is fetched"
        );
        p.end(ORIGIN);
        p.set_rules(ORIGIN, Rules::AllowAll);
        assert_eq!(p.ready(ORIGIN, t0), Ready::Go);
    }

    #[test]
    fn one_start_per_delay_and_k_in_flight() {
        let t0 = Instant::now();
        let mut p = polite(2, ms(100));
        p.start(ORIGIN, t0, false);
        assert_eq!(p.ready(ORIGIN, t0 + ms(99)), Ready::At(t0 + ms(100)));
        p.start(ORIGIN, t0 + ms(100), false);
        assert_eq!(p.ready(ORIGIN, t0 + ms(300)), Ready::Busy, "two in flight");
        p.end(ORIGIN);
        assert_eq!(p.ready(ORIGIN, t0 + ms(199)), Ready::At(t0 + ms(200)));
        assert_eq!(p.ready(ORIGIN, t0 + ms(200)), Ready::Go);
        assert_eq!(
            p.ready("http://b", t0),
            Ready::FetchRobots,
            "hosts are apart"
        );
    }

    #[test]
    fn crawl_delay_raises_the_delay_but_never_lowers_it() {
        let t0 = Instant::now();
        let mut p = Politeness::new(1, ms(500));
        p.set_rules(ORIGIN, Rules::from_response(200, b"Crawl-delay: 2", "x"));
        p.set_rules(
            "http://b",
            Rules::from_response(200, b"Crawl-delay: 0.1", "x"),
        );
        for (origin, delay) in [(ORIGIN, ms(2000)), ("http://b", ms(500))] {
            p.start(origin, t0, false);
            p.end(origin);
            assert_eq!(p.ready(origin, t0 + delay - ms(1)), Ready::At(t0 + delay));
            assert_eq!(p.ready(origin, t0 + delay), Ready::Go);
        }
    }

    #[test]
    fn push_backs_follow_retry_after_or_double() {
        let t0 = Instant::now();
        let mut p = polite(1, ms(100));
        assert_eq!(
            p.push_back(ORIGIN, t0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.ready(ORIGIN, t0), Ready::At(t0 + Duration::from_secs(3)));
        let waits: Vec<u64> = (0..8)
            .map(|_| p.push_back(ORIGIN, t0, None).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        p.answered(ORIGIN);
        assert_eq!(p.push_back(ORIGIN, t0, None), Duration::from_secs(1));
        assert_eq!(
            p.push_back(ORIGIN, t0, Some(Duration::from_secs(86_400))),
            MAX_PUSH_BACK
        );
        // A push-back never shortens a later one already set.
        assert_eq!(p.ready(ORIGIN, t0), Ready::At(t0 + MAX_PUSH_BACK));
    }

    #[test]
    fn disallow_all_is_known_per_host() {
        let mut p = Politeness::new(1, ms(1));
        p.set_rules("http://b", Rules::DisallowAll);
        assert!(p.disallows_all("http://b"));
        assert!(!p.allows("http://b", &Url::parse("http://b/x").unwrap()));
        assert!(!p.disallows_all("http://c"));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Sat, 01 Jan 1994 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            imf_fixdate("Wed, 21 Oct 2026 07:28:00 GMT"),
            Some(1_792_567_680)
        );
        assert_eq!(
            imf_fixdate("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        for junk in [
            "soon",
            "-5",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "",
        ] {
            assert_eq!(retry_after(junk, now), None, "{junk:?}");
        }
    }
}
