//! Pitfall: politeness kept by the fetchers themselves. Each fetcher takes
//! the next URL from one shared queue, reserves the host's next slot (one
//! request per delay per host) and sleeps until it. The delay is honoured,
//! but a sleeping fetcher holds its place in the global limit: the queue
//! comes host by host (a page's links mostly point to its own site), so
//! every fetcher ends up asleep on the same host while the other hosts'
//! URLs, all ready, wait behind it. The fix is the chapter's shape: one
//! scheduler owns the per-host state and hands a fetcher only a URL whose
//! host may be asked now.
//!
//! Run it: `cargo run --example pitfall_sleeping_fetchers`

use std::collections::VecDeque;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::go;
use may_patterns::alarm::{self, Call};
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::{bounded, http};

const HOSTS: usize = 4;
const PAGES_PER_HOST: usize = 10;
/// The global limit: fetches in flight at once, over all hosts.
const FETCHERS: usize = 4;
/// One request per host per this long, counted from a request's start.
const DELAY: Duration = Duration::from_millis(40);
/// How long each backend takes to answer a page.
const PAGE_LATENCY: Duration = Duration::from_millis(2);

/// One URL to fetch: which host, which page.
#[derive(Clone, Copy, Debug)]
struct Job {
    host: usize,
    page: usize,
}

/// When a fetch of `host` started, from the crawl's start.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub host: usize,
    pub at: Duration,
}

/// GET one page from a backend over a fresh loopback connection (a literal
/// address: no name to resolve).
fn fetch(addr: SocketAddr, page: usize) -> io::Result<u16> {
    let mut stream = may_patterns::net::connect(addr)?;
    let target = format!("/search?q=page{page}");
    http::write_request(&mut stream, "GET", &target, "127.0.0.1", &[], &[])?;
    let response = http::read_response(&mut BufReader::new(stream), &http::Limits::default())?;
    Ok(response.status)
}

/// The frontier as one queue, host after host, as a breadth-first crawl of
/// sites whose pages link mostly to themselves produces it.
fn frontier() -> Vec<Job> {
    (0..HOSTS)
        .flat_map(|host| (0..PAGES_PER_HOST).map(move |page| Job { host, page }))
        .collect()
}

// ANCHOR: sleeping
/// The pitfall: every fetcher reserves its host's next slot and sleeps
/// until it, holding its place among the `FETCHERS` while it sleeps.
fn sleeping_fetchers(addrs: &[SocketAddr]) -> Vec<Started> {
    let (queue, jobs) = bounded::channel(HOSTS * PAGES_PER_HOST);
    frontier()
        .into_iter()
        .for_each(|job| queue.send(job).unwrap());
    drop(queue);
    let crawl_start = Instant::now();
    // A std Mutex, held for a few hundred nanoseconds with no yield inside.
    let next_slot = Arc::new(Mutex::new(vec![crawl_start; HOSTS]));
    let fetchers: Vec<_> = (0..FETCHERS)
        .map(|_| {
            let (jobs, next_slot, addrs) = (jobs.clone(), next_slot.clone(), addrs.to_vec());
            go!(move || {
                let mut started = Vec::new();
                for job in &jobs {
                    let slot = {
                        let mut next = next_slot.lock().unwrap();
                        let slot = next[job.host].max(Instant::now());
                        next[job.host] = slot + DELAY;
                        slot
                    };
                    // An alarm, not may's sleep (see MAY_NOTES: short may
                    // timers race); the fetcher is parked either way.
                    alarm::shared().sleep(slot.saturating_duration_since(Instant::now()));
                    started.push(Started {
                        host: job.host,
                        at: crawl_start.elapsed(),
                    });
                    fetch(addrs[job.host], job.page).unwrap();
                }
                started
            })
        })
        .collect();
    fetchers
        .into_iter()
        .flat_map(|f| f.join().unwrap())
        .collect()
}
// ANCHOR_END: sleeping

/// What the scheduler hears: a fetch of a host, started at an instant,
/// finished; or a host's time has come.
enum Event {
    Done(usize, Instant),
    Wake,
}

// ANCHOR: scheduler
/// The fix: one scheduler coroutine owns per-host queues and each host's
/// next allowed time, and sends a fetcher only a job it can start now.
/// When no host is ready it asks the alarm for a wake-up at the earliest
/// one, and waits on its one event channel.
fn scheduler(addrs: &[SocketAddr]) -> Vec<Started> {
    let crawl_start = Instant::now();
    let mut queues: Vec<VecDeque<Job>> = vec![VecDeque::new(); HOSTS];
    frontier()
        .into_iter()
        .for_each(|job| queues[job.host].push_back(job));
    let mut next_allowed = [crawl_start; HOSTS];
    let mut in_flight = [false; HOSTS];
    let (jobs_tx, jobs) = bounded::channel::<Job>(FETCHERS);
    let (events_tx, events) = may::sync::mpsc::channel::<Event>();
    let fetchers: Vec<_> = (0..FETCHERS)
        .map(|_| {
            let (jobs, events_tx, addrs) = (jobs.clone(), events_tx.clone(), addrs.to_vec());
            go!(move || {
                let mut started = Vec::new();
                for job in &jobs {
                    let at = Instant::now();
                    started.push(Started {
                        host: job.host,
                        at: at - crawl_start,
                    });
                    fetch(addrs[job.host], job.page).unwrap();
                    events_tx.send(Event::Done(job.host, at)).unwrap();
                }
                started
            })
        })
        .collect();
    let mut remaining = HOSTS * PAGES_PER_HOST;
    let mut wake: Option<(Instant, Call)> = None;
    while remaining > 0 {
        let now = Instant::now();
        for host in 0..HOSTS {
            // At most FETCHERS hosts are in flight (one each), so this send
            // finds room in the channel and never blocks the scheduler.
            if !in_flight[host] && now >= next_allowed[host] {
                if let Some(job) = queues[host].pop_front() {
                    in_flight[host] = true;
                    jobs_tx.send(job).unwrap();
                }
            }
        }
        let earliest = (0..HOSTS)
            .filter(|&h| !in_flight[h] && !queues[h].is_empty() && next_allowed[h] > now)
            .map(|h| next_allowed[h])
            .min();
        if let Some(at) = earliest {
            if wake.as_ref().is_none_or(|(armed, _)| at < *armed) {
                let events_tx = events_tx.clone();
                let call = alarm::shared().call_at(at, move || {
                    let _ = events_tx.send(Event::Wake);
                });
                wake = Some((at, call));
            }
        }
        match events.recv().unwrap() {
            Event::Done(host, started) => {
                // The delay counts from the request's start, as the fetcher saw it.
                next_allowed[host] = started + DELAY;
                in_flight[host] = false;
                remaining -= 1;
            }
            Event::Wake => wake = None,
        }
    }
    drop(jobs_tx);
    fetchers
        .into_iter()
        .flat_map(|f| f.join().unwrap())
        .collect()
}
// ANCHOR_END: scheduler

/// What a run looked like.
#[derive(Debug)]
pub struct Summary {
    pub pages: usize,
    /// From the crawl's start to the last page's start.
    pub last_start: Duration,
    /// When the last host in the queue got its first request.
    pub last_host_first: Duration,
    /// The shortest gap between two requests to one host.
    pub min_gap: Duration,
}

fn summarise(mut started: Vec<Started>) -> Summary {
    started.sort_by_key(|s| s.at);
    let at = |host: usize| started.iter().filter(move |s| s.host == host).map(|s| s.at);
    let min_gap = (0..HOSTS)
        .flat_map(|host| {
            let times: Vec<Duration> = at(host).collect();
            times.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        })
        .min()
        .unwrap_or_default();
    Summary {
        pages: started.len(),
        last_start: started.last().map(|s| s.at).unwrap_or_default(),
        last_host_first: at(HOSTS - 1).next().unwrap_or_default(),
        min_gap,
    }
}

/// Start one backend per host, run both crawls, summarise each.
pub fn compare() -> io::Result<(Summary, Summary)> {
    let backends = (0..HOSTS)
        .map(|h| Backend::start(BackendConfig::new(&format!("h{h}"), PAGE_LATENCY)))
        .collect::<io::Result<Vec<_>>>()?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let sleeping = summarise(sleeping_fetchers(&addrs));
    let scheduled = summarise(scheduler(&addrs));
    Ok((sleeping, scheduled))
}

fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!(
        "{HOSTS} hosts x {PAGES_PER_HOST} pages, {FETCHERS} fetchers, one request per host every {DELAY:.1?}:"
    );
    let (sleeping, scheduled) = match compare() {
        Ok(both) => both,
        Err(e) => {
            eprintln!("cannot start the backends: {e}");
            std::process::exit(1);
        }
    };
    for (name, s) in [
        ("fetchers sleep out the delay", sleeping),
        ("a scheduler hands out ready hosts", scheduled),
    ] {
        println!("  {name}:");
        println!(
            "    {} pages, last one started after {:.1?}; host {}'s first page after {:.1?}; closest two requests to one host {:.1?} apart",
            s.pages,
            s.last_start,
            HOSTS - 1,
            s.last_host_first,
            s.min_gap
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_fetchers_serialise_the_hosts_and_the_scheduler_does_not() {
        may_patterns::runtime::configure_for_tests();
        let (sleeping, scheduled) = compare().unwrap();
        let all = HOSTS * PAGES_PER_HOST;
        assert_eq!((sleeping.pages, scheduled.pages), (all, all));
        // The scheduler starts a host's requests a full delay apart.
        assert!(scheduled.min_gap >= DELAY, "{scheduled:?}");
        // Sleeping fetchers reach the last host only once three hosts'
        // worth of slots have been slept through (about 18 delays; a
        // loaded machine makes it later, never earlier).
        assert!(sleeping.last_host_first >= DELAY * 12, "{sleeping:?}");
        assert!(
            scheduled.last_host_first < sleeping.last_host_first,
            "{scheduled:?}"
        );
        // With every host served side by side the crawl takes about one
        // host's worth of delays; one host after another, about three times that.
        assert!(
            scheduled.last_start < sleeping.last_start,
            "{scheduled:?} {sleeping:?}"
        );
    }
}
