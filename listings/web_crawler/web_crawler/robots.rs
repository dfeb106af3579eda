//! robots.txt: what one host lets this crawler fetch, by the rules of
//! RFC 9309 for a file that is there, missing, failing or unreachable,
//! parsed by texting_robots.

use std::time::Duration;

use texting_robots::Robot;
use url::Url;

/// Bytes of a robots.txt that are read; the rest is ignored. RFC 9309
/// section 2.5 asks crawlers to parse at least 500 KiB; Google stops there.
pub const MAX_ROBOTS_BYTES: usize = 500 * 1024;

/// Redirects followed to find a robots.txt (RFC 9309 section 2.3.1.2: at
/// least five; past them the file counts as unavailable).
pub const MAX_ROBOTS_REDIRECTS: u32 = 5;

/// The longest `Crawl-delay` honoured. The field is not in RFC 9309; a
/// site asking for an hour between requests would stall the crawl, so it
/// gets this instead (and the summary says how many hosts asked).
pub const MAX_CRAWL_DELAY: Duration = Duration::from_secs(60);

/// Where the robots.txt of `url`'s host is: `/robots.txt` at its origin.
pub fn robots_url(url: &Url) -> Url {
    url.join("/robots.txt")
        .expect("an http(s) URL takes a path")
}

/// The token robots.txt groups are matched against: the product name at
/// the start of the user agent (`may-crawler` of `may-crawler/0.1
/// (+https://example.com/bot)`), as RFC 9309 section 2.2.1 describes.
pub fn product_token(user_agent: &str) -> &str {
    let end = user_agent
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(user_agent.len());
    &user_agent[..end]
}

// ANCHOR: rules
/// What a host's robots.txt allows.
#[derive(Debug)]
pub enum Rules {
    /// No rules apply: the file is missing or unavailable (a 4xx status,
    /// RFC 9309 section 2.3.1.3), or it is empty or holds no rule for us.
    AllowAll,
    /// Nothing may be fetched: the server failed (5xx) or could not be
    /// reached (section 2.3.1.4, "MUST assume complete disallow").
    DisallowAll,
    /// The parsed groups for our product token (or for `*`).
    Parsed(Robot),
}

impl Rules {
    /// The rules a robots.txt fetch gives: `status` and the first
    /// [`MAX_ROBOTS_BYTES`] of its body. A 429 counts with the 5xx: the
    /// server is asking for less traffic, not saying the file is absent
    /// (Google reads it the same way; RFC 9309 lists 429 with the 4xx).
    pub fn from_response(status: u16, body: &[u8], user_agent: &str) -> Rules {
        match status {
            200..=299 => {
                let body = &body[..body.len().min(MAX_ROBOTS_BYTES)];
                // texting_robots skips lines it cannot read; it fails only
                // when it finds no line at all, which garbage can cause: a
                // file with no readable rule restricts nothing.
                match Robot::new(product_token(user_agent), body) {
                    Ok(robot) => Rules::Parsed(robot),
                    Err(_) => Rules::AllowAll,
                }
            }
            429 | 500..=599 => Rules::DisallowAll,
            // 4xx, and 3xx past the redirects followed: unavailable.
            _ => Rules::AllowAll,
        }
    }

    /// Whether `url` may be fetched. The robots.txt itself always may.
    pub fn allows(&self, url: &Url) -> bool {
        match self {
            Rules::AllowAll => true,
            Rules::DisallowAll => url.path() == "/robots.txt",
            Rules::Parsed(robot) => robot.allowed(url.as_str()),
        }
    }

    /// The `Crawl-delay` asked for, at most [`MAX_CRAWL_DELAY`].
    pub fn crawl_delay(&self) -> Option<Duration> {
        match self {
            Rules::Parsed(Robot {
                delay: Some(seconds),
                ..
            }) if seconds.is_finite() && *seconds > 0.0 => Some(Duration::from_secs_f32(
                seconds.min(MAX_CRAWL_DELAY.as_secs_f32()),
            )),
            _ => None,
        }
    }
}
// ANCHOR_END: rules

#[cfg(test)]
mod tests {
    use super::*;

    const UA: &str = "may-crawler/0.1 (+https://example.com/bot)";

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn the_product_token_is_matched_not_the_whole_agent() {
        assert_eq!(product_token(UA), "may-crawler");
        assert_eq!(product_token("Wget/1.21"), "Wget");
        let txt = b"User-agent: may-crawler\nDisallow: /private\n\nUser-agent: *\nDisallow: /\n";
        let rules = Rules::from_response(200, txt, UA);
        assert!(rules.allows(&url("http://a/page")));
        assert!(!rules.allows(&url("http://a/private/x")));
        let other = Rules::from_response(200, txt, "OtherBot/2");
        assert!(!other.allows(&url("http://a/page")), "others fall to *");
    }

    #[test]
    fn rfc_9309_rules_for_missing_failing_and_garbage_files() {
        let page = url("http://a/page");
        for status in [400, 401, 403, 404, 410] {
            assert!(
                Rules::from_response(status, b"Disallow: /", UA).allows(&page),
                "{status}"
            );
        }
        for status in [429, 500, 503] {
            let rules = Rules::from_response(status, b"", UA);
            assert!(!rules.allows(&page), "{status}");
            assert!(rules.allows(&url("http://a/robots.txt")));
        }
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(Rules::from_response(200, &garbage, UA).allows(&page));
        assert!(Rules::from_response(200, b"", UA).allows(&page));
    }

    #[test]
    fn only_the_first_500_kib_count() {
        let mut txt = b"User-agent: *\nDisallow: /early\n".to_vec();
        txt.resize(MAX_ROBOTS_BYTES, b'#');
        txt.extend_from_slice(b"\nDisallow: /late\n");
        let rules = Rules::from_response(200, &txt, UA);
        assert!(!rules.allows(&url("http://a/early")));
        assert!(rules.allows(&url("http://a/late")));
    }

    #[test]
    fn crawl_delay_is_read_and_capped() {
        let rules = Rules::from_response(200, b"User-agent: *\nCrawl-delay: 2.5\n", UA);
        assert_eq!(rules.crawl_delay(), Some(Duration::from_millis(2500)));
        let greedy = Rules::from_response(200, b"User-agent: *\nCrawl-delay: 86400\n", UA);
        assert_eq!(greedy.crawl_delay(), Some(MAX_CRAWL_DELAY));
        assert_eq!(Rules::AllowAll.crawl_delay(), None);
    }

    #[test]
    fn robots_txt_is_at_the_origins_root() {
        assert_eq!(
            robots_url(&url("https://a:8443/x/y?z")).as_str(),
            "https://a:8443/robots.txt"
        );
    }
}
