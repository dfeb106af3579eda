//! The scheduler: one coroutine that owns every piece of crawl state (the
//! frontier, each host's politeness, the counters, the storage) and hands
//! URLs to the fetchers when their host may be asked. It waits on exactly
//! one channel: fetchers' outcomes, timed wake-ups from the alarm thread
//! and Ctrl-C all arrive there, so no may timer is armed in its loop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::bounded;
use may_patterns::breaker::RetryPolicy;
use may_patterns::shutdown::Shutdown;
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::fetcher::{robots_job, Answer, Done, Job, Page};
use crate::frontier::{origin, Entry, Frontier, Offered, Scope, Skip};
use crate::politeness::{Politeness, Ready};
use crate::progress::Counts as Shown;
use crate::robots::Rules;
use crate::storage::{Exchange, PageRecord, Storage};

/// The retry policy's first delay and its cap (full jitter in between):
/// a transient error gets a second chance after a moment, and a host that
/// keeps failing is left alone for up to half a minute.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// What arrives on the scheduler's one channel.
#[derive(Debug)]
pub enum Event {
    Done(Done),
    /// A host's delay or push-back may have passed (the alarm thread), or
    /// Ctrl-C was pressed: look again.
    Wake,
}

/// The crawl's settings, from the command line.
pub struct Settings {
    pub scope: Scope,
    pub max_pages: u64,
    pub max_concurrent: usize,
    pub retries: u32,
    /// Seed of the retry delays' jitter.
    pub seed: u64,
}

/// Why the crawl ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Nothing left to fetch.
    Done,
    /// `--max-pages` pages were fetched.
    MaxPages,
    /// Ctrl-C.
    Interrupted,
}

// ANCHOR: summary
/// What the crawl did, for the summary (`--json` prints it as it is).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub ended: Ended,
    /// Pages fetched and recorded (robots.txt files not counted), those of
    /// the crawl this one resumed included.
    pub pages: u64,
    /// Of `pages`, those recorded before `--resume`.
    pub pages_before: u64,
    /// This run's pages recorded with an error, by its kind.
    pub errors: BTreeMap<String, u64>,
    /// This run's responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Body bytes of this run's pages, decoded.
    pub bytes: u64,
    pub elapsed_s: f64,
    /// This run's pages per second.
    pub pages_per_s: f64,
    /// Hosts (scheme, host, port) the crawl asked for robots.txt or pages.
    pub hosts: usize,
    /// URLs not fetched because a robots.txt disallowed them.
    pub robots_denied: u64,
    /// Hosts whose robots.txt failed (5xx, 429) or could not be reached,
    /// after the retries: RFC 9309 has them disallow everything.
    pub robots_unreachable: u64,
    /// Why, for the first `ROBOTS_REASONS_KEPT` of those hosts: the origin
    /// and the last answer or error (a TLS failure, a refused connection),
    /// so a crawl that fetched nothing says why.
    pub robots_reasons: Vec<(String, String)>,
    /// Fetches tried again (transient errors, 429, 503).
    pub retries: u64,
    /// Links to URLs already queued or fetched.
    pub duplicates_skipped: u64,
    /// Links not queued, by why (scope, limits, not http).
    pub skipped: BTreeMap<String, u64>,
    /// URLs still queued (saved in the checkpoint).
    pub queued: usize,
    /// URLs in the seen-set.
    pub seen: usize,
}
// ANCHOR_END: summary

/// How many hosts' robots.txt failures the summary explains one by one.
const ROBOTS_REASONS_KEPT: usize = 20;

/// The scheduler's state. Nothing here is shared: fetchers get jobs by
/// value and send outcomes by value.
pub struct Scheduler {
    settings: Settings,
    frontier: Frontier,
    politeness: Politeness,
    storage: Storage,
    retry: RetryPolicy,
    rng: fastrand::Rng,
    jobs: bounded::Sender<Job>,
    events: may::sync::mpsc::Sender<Event>,
    /// The pending timed wake-up, and when.
    wake: Option<(Instant, alarm::Call)>,
    in_flight: usize,
    started_pages: u64,
    counts: Counts,
}

/// The summary's counters while the crawl runs.
#[derive(Default)]
struct Counts {
    pages: u64,
    pages_before: u64,
    errors: BTreeMap<String, u64>,
    error_total: u64,
    statuses: BTreeMap<u16, u64>,
    bytes: u64,
    robots_denied: u64,
    robots_unreachable: u64,
    robots_reasons: Vec<(String, String)>,
    retries: u64,
    duplicates: u64,
    skipped: BTreeMap<String, u64>,
}

impl Scheduler {
    pub fn new(
        settings: Settings,
        politeness: Politeness,
        storage: Storage,
        jobs: bounded::Sender<Job>,
        events: may::sync::mpsc::Sender<Event>,
    ) -> Scheduler {
        let retry = RetryPolicy::full_jitter(settings.retries, RETRY_BASE, RETRY_CAP);
        let rng = fastrand::Rng::with_seed(settings.seed);
        Scheduler {
            settings,
            frontier: Frontier::new(),
            politeness,
            storage,
            retry,
            rng,
            jobs,
            events,
            wake: None,
            in_flight: 0,
            started_pages: 0,
            counts: Counts::default(),
        }
    }

    /// Continue a saved crawl: its queue, its seen-set and its counts.
    pub fn restore(&mut self, saved: Checkpoint) -> Result<(), String> {
        self.frontier.restore_seen(saved.seen);
        for (url, depth) in saved.frontier {
            let url =
                url::Url::parse(&url).map_err(|e| format!("the checkpoint holds {url:?}: {e}"))?;
            self.frontier.put_back(Entry::new(url, depth), false);
        }
        self.counts.pages = saved.pages;
        self.counts.pages_before = saved.pages;
        self.counts.error_total = saved.errors;
        self.started_pages = saved.pages;
        Ok(())
    }

    /// Queue a seed (depth 0); a seed crawled before is a duplicate.
    pub fn seed(&mut self, url: url::Url) {
        self.offer(Entry::new(url, 0));
    }

    // ANCHOR: run
    /// Crawl until nothing is left, `--max-pages` is reached or `stop` is
    /// triggered; then wait for the fetches in flight (each ends within
    /// the client's total timeout) so every page fetched is recorded.
    pub fn run(
        &mut self,
        events: &may::sync::mpsc::Receiver<Event>,
        stop: &Shutdown,
        shown: &Shown,
    ) -> Result<Ended, String> {
        loop {
            let ended = if stop.is_triggered() {
                Some(Ended::Interrupted)
            } else if self.frontier.is_empty() && self.in_flight == 0 {
                Some(Ended::Done)
            } else if self.started_pages >= self.settings.max_pages {
                Some(Ended::MaxPages)
            } else {
                None
            };
            match ended {
                Some(ended) if self.in_flight == 0 => return Ok(ended),
                Some(_) => {} // no new work; wait for the fetches in flight
                None => {
                    self.dispatch(Instant::now());
                    self.arm_wake(Instant::now());
                }
            }
            let c = &self.counts;
            shown.update(c.pages, self.frontier.len(), c.error_total);
            match events.recv() {
                Ok(Event::Done(done)) => self.finished(done, Instant::now())?,
                Ok(Event::Wake) => {}
                Err(_) => return Err("the event channel closed".to_owned()),
            }
        }
    }
    // ANCHOR_END: run

    // ANCHOR: dispatch
    /// Hand out work while a fetcher is free and some host may be asked.
    fn dispatch(&mut self, now: Instant) {
        while self.in_flight < self.settings.max_concurrent
            && self.started_pages < self.settings.max_pages
        {
            let Scheduler {
                frontier,
                politeness,
                jobs,
                in_flight,
                settings,
                ..
            } = self;
            // A host seen for the first time gets its robots.txt fetched
            // (one fetcher); its pages wait until the rules are known.
            let entry = frontier.next_ready(|origin| match politeness.ready(origin, now) {
                Ready::Go => true,
                Ready::FetchRobots if *in_flight < settings.max_concurrent => {
                    let url = url::Url::parse(origin).expect("an origin is a URL");
                    politeness.start(origin, now, true);
                    send(jobs, robots_job(origin.to_owned(), &url));
                    *in_flight += 1;
                    false
                }
                _ => false,
            });
            let Some(entry) = entry else { return };
            if self.in_flight >= self.settings.max_concurrent {
                // The robots.txt fetch above took the last free fetcher.
                self.frontier.put_back(entry, true);
                return;
            }
            let origin = origin(&entry.url);
            if !self.politeness.allows(&origin, &entry.url) {
                self.counts.robots_denied += 1;
                continue;
            }
            self.politeness.start(&origin, now, false);
            if entry.retries == 0 {
                self.started_pages += 1;
            }
            self.in_flight += 1;
            send(&self.jobs, Job::Page { origin, entry });
        }
    }

    /// Ask the alarm thread for an `Event::Wake` when the earliest host
    /// that waits only for time may be asked again.
    fn arm_wake(&mut self, now: Instant) {
        let Scheduler {
            frontier,
            politeness,
            ..
        } = self;
        let earliest = frontier
            .waiting_origins()
            .filter_map(|origin| politeness.waiting_until(origin, now))
            .min();
        let Some(at) = earliest else { return };
        if self
            .wake
            .as_ref()
            .is_some_and(|(armed, _)| *armed <= at && *armed > now)
        {
            return; // an earlier wake-up is still to come
        }
        let events = self.events.clone();
        let call = alarm::shared().call_at(at, move || {
            let _ = events.send(Event::Wake);
        });
        self.wake = Some((at, call)); // dropping the old Call cancels it
    }
    // ANCHOR_END: dispatch

    // ANCHOR: finished
    /// A fetcher is done with a job.
    fn finished(&mut self, done: Done, now: Instant) -> Result<(), String> {
        self.in_flight -= 1;
        match done {
            Done::Robots { origin, result } => {
                self.politeness.end(&origin);
                // A failing (5xx, 429) or unreachable robots.txt is asked
                // for again, --retries times; then the host is refused.
                let rules = match result {
                    Ok(answer) if !answer.failed() => answer.rules,
                    Ok(answer) if self.robots_retry(&origin, now, Some(answer.retry_after)) => {
                        return Ok(())
                    }
                    Err(e) if e.is_transient() && self.robots_retry(&origin, now, None) => {
                        return Ok(())
                    }
                    Ok(answer) => {
                        self.robots_given_up(&origin, format!("answered {}", answer.status))
                    }
                    Err(e) => self.robots_given_up(&origin, e.to_string()),
                };
                self.politeness.set_rules(&origin, rules);
                if self.politeness.disallows_all(&origin) {
                    let denied = self.frontier.take_host(&origin).len();
                    self.counts.robots_denied += denied as u64;
                }
                Ok(())
            }
            Done::Page(page) => {
                self.politeness.end(&page.origin);
                self.page_done(*page, now)
            }
        }
    }

    /// A host whose robots.txt could not be had: counted, its reason kept
    /// (for a bounded number of hosts), and every path disallowed.
    fn robots_given_up(&mut self, origin: &str, why: String) -> Rules {
        self.counts.robots_unreachable += 1;
        if self.counts.robots_reasons.len() < ROBOTS_REASONS_KEPT {
            self.counts.robots_reasons.push((origin.to_owned(), why));
        }
        Rules::DisallowAll
    }

    /// Whether a robots.txt that failed is asked for again: it is,
    /// `--retries` times, after the host's push-back for a 5xx or 429
    /// (`answered`, with its `Retry-After`) or the retry policy's delay for
    /// a transient error.
    fn robots_retry(
        &mut self,
        origin: &str,
        now: Instant,
        answered: Option<Option<Duration>>,
    ) -> bool {
        let tries = self.politeness.robots_failed(origin);
        if tries > self.settings.retries {
            return false;
        }
        let wait = match answered {
            Some(retry_after) => self.politeness.push_back(origin, now, retry_after),
            None => self.retry.delay(tries - 1, &mut self.rng),
        };
        self.politeness.forget_rules(origin);
        self.politeness.defer(origin, now + wait);
        self.counts.retries += 1;
        true
    }

    fn page_done(&mut self, page: Page, now: Instant) -> Result<(), String> {
        let Page {
            origin,
            mut entry,
            fetched_at_ms,
            elapsed,
            result,
        } = page;
        // ANCHOR: retry
        let retry_left = entry.retries < self.settings.retries;
        // Transient: try again after the policy's jittered delay. 429 and
        // 503: after Retry-After, or the host's own backoff.
        let wait = match &result {
            Err(e) if e.is_transient() && retry_left => {
                Some(self.retry.delay(entry.retries, &mut self.rng))
            }
            Ok(a) if matches!(a.status, 429 | 503) && retry_left => {
                Some(self.politeness.push_back(&origin, now, a.retry_after))
            }
            _ => None,
        };
        if let Some(wait) = wait {
            self.politeness.defer(&origin, now + wait);
            entry.retries += 1;
            self.counts.retries += 1;
            self.frontier.put_back(entry, true);
            return Ok(());
        }
        // ANCHOR_END: retry
        let mut record = PageRecord {
            url: entry.url.to_string(),
            status: 0,
            fetched_at_ms,
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
            bytes: 0,
            title: None,
            links: Vec::new(),
            error: None,
            depth: entry.depth,
        };
        self.counts.pages += 1;
        let exchange = match result {
            Err(e) => {
                *self.counts.errors.entry(e.kind.to_string()).or_default() += 1;
                self.counts.error_total += 1;
                record.error = Some(e.to_string());
                None
            }
            Ok(answer) => {
                if !matches!(answer.status, 429 | 503) {
                    self.politeness.answered(&origin);
                }
                self.answered(&entry, answer, &mut record)
            }
        };
        let exchange = exchange.as_ref().map(|x| Exchange {
            request_head: &x.request_head,
            response_head: &x.response_head,
            body: &x.body,
            ip: None,
        });
        self.storage
            .record(&record, exchange.as_ref())
            .map_err(|e| format!("cannot write the crawl's records: {e}"))
    }

    /// Count a response, queue its links, fill its record; the exchange, for
    /// the WARC file.
    fn answered(
        &mut self,
        entry: &Entry,
        answer: Answer,
        record: &mut PageRecord,
    ) -> Option<crate::fetcher::Exchange> {
        *self.counts.statuses.entry(answer.status).or_default() += 1;
        self.counts.bytes += answer.bytes;
        record.status = answer.status;
        record.bytes = answer.bytes;
        record.title = answer.title;
        for skip in answer.bad_links {
            self.skip(skip);
        }
        if let Some(why) = answer.html_error {
            *self.counts.errors.entry("html".to_owned()).or_default() += 1;
            self.counts.error_total += 1;
            record.error = Some(why);
        }
        if matches!(answer.status, 429 | 503) {
            record.error = Some(format!("gave up after {} retries", entry.retries));
        }
        // A redirect's one out-link is its target: the same page, moved, so
        // it keeps the depth and adds a hop to the chain.
        match answer.location {
            Some(Ok(target)) => {
                record.links.push(target.to_string());
                self.offer(Entry {
                    url: target,
                    depth: entry.depth,
                    hops: entry.hops + 1,
                    retries: 0,
                });
            }
            Some(Err(skip)) => self.skip(skip),
            None => {}
        }
        for url in answer.links {
            record.links.push(url.to_string());
            self.offer(Entry::new(url, entry.depth + 1));
        }
        answer.exchange
    }

    /// Queue `entry` if the scope admits it and it is new.
    fn offer(&mut self, entry: Entry) {
        if let Err(skip) = self.settings.scope.admits(&entry) {
            self.skip(skip);
            return;
        }
        if self.frontier.offer(entry) == Offered::Duplicate {
            self.counts.duplicates += 1;
        }
    }
    // ANCHOR_END: finished

    fn skip(&mut self, skip: Skip) {
        *self
            .counts
            .skipped
            .entry(skip.name().to_owned())
            .or_default() += 1;
    }

    /// Write what is buffered; the summary, and the checkpoint to save.
    /// The scheduler is gone after it, and with it the fetchers' job queue.
    pub fn finish(
        mut self,
        ended: Ended,
        elapsed: Duration,
    ) -> Result<(Summary, Checkpoint), String> {
        self.storage
            .flush()
            .map_err(|e| format!("cannot write the crawl's records: {e}"))?;
        let (frontier, seen) = self.frontier.snapshot();
        let checkpoint = Checkpoint {
            frontier,
            seen,
            pages: self.counts.pages,
            errors: self.counts.error_total,
        };
        let c = &self.counts;
        let summary = Summary {
            ended,
            pages: c.pages,
            pages_before: c.pages_before,
            errors: c.errors.clone(),
            statuses: c.statuses.clone(),
            bytes: c.bytes,
            elapsed_s: elapsed.as_secs_f64(),
            pages_per_s: (c.pages - c.pages_before) as f64 / elapsed.as_secs_f64().max(1e-3),
            hosts: self.politeness.hosts(),
            robots_denied: c.robots_denied,
            robots_unreachable: c.robots_unreachable,
            robots_reasons: c.robots_reasons.clone(),
            retries: c.retries,
            duplicates_skipped: c.duplicates,
            skipped: c.skipped.clone(),
            queued: self.frontier.len(),
            seen: self.frontier.seen_len(),
        };
        Ok((summary, checkpoint))
    }
}

/// Send a job to the fetchers. The queue holds `--max-concurrent` jobs and
/// the scheduler never has more out than that, so this never waits; it
/// fails only if every fetcher is gone, which the next event shows.
fn send(jobs: &bounded::Sender<Job>, job: Job) {
    let _ = jobs.send(job);
}
