//! The URL queue: what is still to fetch, one FIFO queue per host, and the
//! seen-set that makes every URL enter it at most once.
//!
//! Only the scheduler touches a `Frontier`, so nothing here is locked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use regex::Regex;
use url::Url;

// ANCHOR: normalise
/// Why a link is not a URL the crawler would fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Not a URL even relative to its page (`http://[`, `http://a b/`).
    Invalid,
    /// Not http or https (`mailto:`, `javascript:`, `ftp:`).
    Scheme,
    /// Longer than `--max-url-len`.
    TooLong,
    /// Another host, with `--same-host`.
    OtherHost,
    /// Not matched by `--include`.
    NotIncluded,
    /// Matched by `--exclude`.
    Excluded,
    /// Deeper than `--depth` links from a seed.
    TooDeep,
    /// The end of a redirect chain longer than `--max-redirects`.
    RedirectChain,
}

impl Skip {
    /// The name the summary counts it under.
    pub fn name(self) -> &'static str {
        match self {
            Skip::Invalid => "invalid_url",
            Skip::Scheme => "not_http",
            Skip::TooLong => "url_too_long",
            Skip::OtherHost => "other_host",
            Skip::NotIncluded => "not_included",
            Skip::Excluded => "excluded",
            Skip::TooDeep => "too_deep",
            Skip::RedirectChain => "redirect_chain",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Resolve `href` against the page it was found on and bring it to the
/// one spelling the seen-set compares. The `url` crate already follows
/// the WHATWG URL rules: it lower-cases the scheme and host, removes a
/// default port (`:80`, `:443`), resolves `.` and `..` segments, gives an
/// empty path `/`, and percent-encodes what must be encoded (a space
/// becomes `%20`) without decoding anything. On top of that the fragment
/// goes (`#top` names a place in the same document, which the server
/// never sees). The query stays as written: servers may care about the
/// order of its parameters, so sorting them could name another page.
pub fn normalise(href: &str, base: &Url) -> Result<Url, Skip> {
    let mut url = base.join(href).map_err(|_| Skip::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Skip::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Skip::Invalid);
    }
    url.set_fragment(None);
    Ok(url)
}

/// The key of a host's queue and of its politeness state: scheme, host
/// and port (`http://127.0.0.1:8080`), the unit robots.txt applies to
/// (RFC 9309 section 2.3: one robots.txt per scheme, host and port).
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}
// ANCHOR_END: normalise

// ANCHOR: fingerprint
/// A URL's entry in the seen-set: 64-bit FNV-1a of its normalised text.
/// Written out here rather than taken from std's `DefaultHasher`, whose
/// output is allowed to change between Rust releases: the seen-set is
/// saved in checkpoints, and a `--resume` built by another compiler must
/// compute the same fingerprints. With `n` URLs the chance that any two
/// share a fingerprint is at most n(n-1)/2 / 2^64: about 3e-10 for 100,000
/// URLs, 3e-8 for a million, 3e-4 for 100 million. A collision makes the
/// crawler skip one URL as already seen, nothing worse.
pub fn fingerprint(url: &Url) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    url.as_str().bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
// ANCHOR_END: fingerprint

// ANCHOR: scope
/// Which URLs the crawl may enter at all: the flags `--same-host`,
/// `--include`, `--exclude`, `--max-url-len`, `--depth` and
/// `--max-redirects`.
#[derive(Debug)]
pub struct Scope {
    /// The seeds' origins, with `--same-host`; `None` lets the crawl
    /// wander to any host.
    pub hosts: Option<HashSet<String>>,
    pub include: Option<Regex>,
    pub exclude: Option<Regex>,
    pub max_url_len: usize,
    pub max_depth: u32,
    pub max_redirects: u32,
}

impl Scope {
    /// Whether `entry` may be queued, checked in the order a reader would
    /// ask: is it short enough, on a host we crawl, wanted, near enough.
    pub fn admits(&self, entry: &Entry) -> Result<(), Skip> {
        let url = entry.url.as_str();
        if url.len() > self.max_url_len {
            return Err(Skip::TooLong);
        }
        if let Some(hosts) = &self.hosts {
            if !hosts.contains(&origin(&entry.url)) {
                return Err(Skip::OtherHost);
            }
        }
        if self.include.as_ref().is_some_and(|re| !re.is_match(url)) {
            return Err(Skip::NotIncluded);
        }
        if self.exclude.as_ref().is_some_and(|re| re.is_match(url)) {
            return Err(Skip::Excluded);
        }
        if entry.depth > self.max_depth {
            return Err(Skip::TooDeep);
        }
        if entry.hops > self.max_redirects {
            return Err(Skip::RedirectChain);
        }
        Ok(())
    }
}
// ANCHOR_END: scope

// ANCHOR: frontier
/// One URL to fetch and how the crawl got to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub url: Url,
    /// Links followed from a seed (a seed is 0). A redirect's target keeps
    /// the depth of the page that redirected: it is the same page, moved.
    pub depth: u32,
    /// Redirects followed to get here in one chain (0 for a link).
    pub hops: u32,
    /// Failed attempts so far (a transient error, 429 or 503).
    pub retries: u32,
}

impl Entry {
    /// A URL found as a link on a page at `depth - 1`, or a seed at 0.
    pub fn new(url: Url, depth: u32) -> Entry {
        Entry {
            url,
            depth,
            hops: 0,
            retries: 0,
        }
    }
}

/// The URLs still to fetch, queued per host in the order they were found,
/// and the fingerprints of every URL ever queued.
#[derive(Debug, Default)]
pub struct Frontier {
    queues: HashMap<String, VecDeque<Entry>>,
    /// Origins that have queued entries, in round-robin order: the next
    /// pick starts after the origin picked last, so one big host cannot
    /// starve the others.
    turns: VecDeque<String>,
    seen: HashSet<u64>,
    queued: usize,
}

/// What [`Frontier::offer`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// Its fingerprint was in the seen-set: queued or fetched before.
    Duplicate,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Queue `entry` unless its URL was queued before.
    pub fn offer(&mut self, entry: Entry) -> Offered {
        if !self.seen.insert(fingerprint(&entry.url)) {
            return Offered::Duplicate;
        }
        self.push(entry, false);
        Offered::Queued
    }

    /// Queue an entry that was taken out and must come back without a
    /// seen-check: a retry (at the head of its host's queue, so it goes
    /// next once the host may be asked again) or one restored from a
    /// checkpoint (at the tail, in its saved order).
    pub fn put_back(&mut self, entry: Entry, first: bool) {
        self.seen.insert(fingerprint(&entry.url));
        self.push(entry, first);
    }

    fn push(&mut self, entry: Entry, first: bool) {
        let key = origin(&entry.url);
        let queue = self.queues.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(key);
        }
        if first {
            queue.push_front(entry);
        } else {
            queue.push_back(entry);
        }
        self.queued += 1;
    }

    // ANCHOR: next_ready
    /// Take the next entry of the first host, in round-robin order, that
    /// `ready` says may be asked now.
    pub fn next_ready(&mut self, mut ready: impl FnMut(&str) -> bool) -> Option<Entry> {
        for _ in 0..self.turns.len() {
            let key = self.turns.pop_front()?;
            if !ready(&key) {
                self.turns.push_back(key);
                continue;
            }
            let queue = self.queues.get_mut(&key).expect("a turn has a queue");
            let entry = queue.pop_front().expect("a turn's queue is not empty");
            self.queued -= 1;
            if queue.is_empty() {
                self.queues.remove(&key);
            } else {
                self.turns.push_back(key);
            }
            return Some(entry);
        }
        None
    }
    // ANCHOR_END: next_ready

    /// The origins that have something queued.
    pub fn waiting_origins(&self) -> impl Iterator<Item = &str> {
        self.turns.iter().map(String::as_str)
    }

    /// Remove and return everything queued for `origin` (its robots.txt
    /// turned out to disallow it all).
    pub fn take_host(&mut self, origin: &str) -> Vec<Entry> {
        self.turns.retain(|key| key != origin);
        let entries: Vec<Entry> = self.queues.remove(origin).unwrap_or_default().into();
        self.queued -= entries.len();
        entries
    }

    /// Entries queued, all hosts together.
    pub fn len(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Fingerprints in the seen-set.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Add saved fingerprints (a resumed crawl's seen-set).
    pub fn restore_seen(&mut self, fingerprints: impl IntoIterator<Item = u64>) {
        self.seen.extend(fingerprints);
    }

    /// Everything a checkpoint needs: the queued `(url, depth)` pairs,
    /// host by host, and the seen-set, sorted so the file is stable.
    pub fn snapshot(&self) -> (Vec<(String, u32)>, Vec<u64>) {
        let queued = self
            .turns
            .iter()
            .flat_map(|key| &self.queues[key])
            .map(|e| (e.url.to_string(), e.depth))
            .collect();
        let mut seen: Vec<u64> = self.seen.iter().copied().collect();
        seen.sort_unstable();
        (queued, seen)
    }
}
// ANCHOR_END: frontier

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn scope() -> Scope {
        Scope {
            hosts: None,
            include: None,
            exclude: None,
            max_url_len: 100,
            max_depth: 3,
            max_redirects: 5,
        }
    }

    #[test]
    fn normalisation_gives_one_spelling_per_page() {
        let base = url("http://Example.COM:80/a/b.html?x=1#top");
        let same = [
            "http://EXAMPLE.com/a/c.html",
            "c.html",
            "./c.html#part",
            "../a/./c.html",
            "HTTP://example.com:80/a/c.html",
        ];
        for href in same {
            assert_eq!(
                normalise(href, &base).unwrap().as_str(),
                "http://example.com/a/c.html",
                "{href}"
            );
        }
        assert_eq!(
            normalise("https://example.com", &base).unwrap().as_str(),
            "https://example.com/"
        );
        assert_eq!(
            normalise("?b=2&a=1", &base).unwrap().as_str(),
            "http://example.com/a/b.html?b=2&a=1",
            "the query keeps its order"
        );
        assert_eq!(
            normalise("/a b", &base).unwrap().as_str(),
            "http://example.com/a%20b"
        );
        assert_eq!(
            normalise("/%7Euser", &base).unwrap().as_str(),
            "http://example.com/%7Euser",
            "nothing is decoded"
        );
    }

    #[test]
    fn links_that_are_not_web_pages_are_refused_with_a_reason() {
        let base = url("http://example.com/");
        assert_eq!(normalise("mailto:a@b.c", &base), Err(Skip::Scheme));
        assert_eq!(normalise("javascript:void(0)", &base), Err(Skip::Scheme));
        assert_eq!(normalise("ftp://example.com/f", &base), Err(Skip::Scheme));
        assert_eq!(normalise("http://[::1", &base), Err(Skip::Invalid));
        assert_eq!(normalise("http://a b/", &base), Err(Skip::Invalid));
        assert_eq!(normalise("http:///", &base), Err(Skip::Invalid));
    }

    #[test]
    fn fingerprints_are_stable_and_differ() {
        // FNV-1a's published test vector: "a" hashes to 0xaf63dc4c8601ec8c.
        // A URL's text is hashed the same way, so this pins the function.
        let fnv = |s: &str| {
            s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        let u = url("http://example.com/");
        assert_eq!(fingerprint(&u), fnv("http://example.com/"));
        assert_ne!(fingerprint(&u), fingerprint(&url("http://example.com/?")));
    }

    #[test]
    fn a_url_enters_once_and_hosts_take_turns() {
        let mut f = Frontier::new();
        for u in ["http://a/1", "http://a/2", "http://a/3", "http://b/1"] {
            assert_eq!(f.offer(Entry::new(url(u), 1)), Offered::Queued);
        }
        assert_eq!(
            f.offer(Entry::new(url("http://a/1"), 2)),
            Offered::Duplicate
        );
        assert_eq!((f.len(), f.seen_len()), (4, 4));
        let order: Vec<String> = std::iter::from_fn(|| f.next_ready(|_| true))
            .map(|e| e.url.to_string())
            .collect();
        assert_eq!(
            order,
            ["http://a/1", "http://b/1", "http://a/2", "http://a/3"]
        );
        assert!(f.is_empty());
        assert_eq!(
            f.offer(Entry::new(url("http://b/1"), 1)),
            Offered::Duplicate
        );
    }

    #[test]
    fn a_host_that_is_not_ready_is_passed_over_not_lost() {
        let mut f = Frontier::new();
        f.offer(Entry::new(url("http://a/1"), 0));
        f.offer(Entry::new(url("http://b/1"), 0));
        let got = f.next_ready(|origin| origin == "http://b").unwrap();
        assert_eq!(got.url.as_str(), "http://b/1");
        assert_eq!(f.next_ready(|_| false), None);
        assert_eq!(f.waiting_origins().collect::<Vec<_>>(), ["http://a"]);
        let retry = Entry::new(url("http://a/0"), 0);
        f.put_back(retry.clone(), true);
        assert_eq!(f.next_ready(|_| true), Some(retry));
        assert_eq!(f.take_host("http://a").len(), 1);
        assert!(f.is_empty());
        assert_eq!(f.waiting_origins().count(), 0);
    }

    #[test]
    fn a_snapshot_restores_the_same_frontier() {
        let mut f = Frontier::new();
        f.offer(Entry::new(url("http://a/1"), 0));
        f.offer(Entry::new(url("http://a/2"), 1));
        f.offer(Entry::new(url("http://b/1"), 2));
        f.next_ready(|_| true);
        let (queued, seen) = f.snapshot();
        assert_eq!(queued.len(), 2);
        let mut again = Frontier::new();
        again.restore_seen(seen.iter().copied());
        for (u, depth) in &queued {
            again.put_back(Entry::new(url(u), *depth), false);
        }
        assert_eq!(again.snapshot(), (queued, seen));
        assert_eq!(
            again.offer(Entry::new(url("http://a/1"), 0)),
            Offered::Duplicate,
            "fetched before"
        );
    }

    #[test]
    fn the_scope_refuses_each_limit_by_name() {
        let mut s = scope();
        let entry = |u: &str, depth| Entry::new(url(u), depth);
        assert_eq!(s.admits(&entry("http://a/", 3)), Ok(()));
        assert_eq!(s.admits(&entry("http://a/", 4)), Err(Skip::TooDeep));
        let long = format!("http://a/{}", "x".repeat(100));
        assert_eq!(s.admits(&entry(&long, 0)), Err(Skip::TooLong));
        let mut moved = entry("http://a/", 0);
        moved.hops = 6;
        assert_eq!(s.admits(&moved), Err(Skip::RedirectChain));
        s.hosts = Some(HashSet::from(["http://a".to_owned()]));
        assert_eq!(s.admits(&entry("http://a:8080/", 0)), Err(Skip::OtherHost));
        assert_eq!(s.admits(&entry("https://a/", 0)), Err(Skip::OtherHost));
        s.include = Some(Regex::new("/docs/").unwrap());
        s.exclude = Some(Regex::new(r"\.pdf$").unwrap());
        assert_eq!(
            s.admits(&entry("http://a/blog/", 0)),
            Err(Skip::NotIncluded)
        );
        assert_eq!(
            s.admits(&entry("http://a/docs/x.pdf", 0)),
            Err(Skip::Excluded)
        );
        assert_eq!(s.admits(&entry("http://a/docs/x.html", 0)), Ok(()));
    }
}
