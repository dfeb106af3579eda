//! One connection, one pipeline: the client's lines, debounced, without
//! repeats, each switched to a search whose events are written back.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::net::TcpStream;
use may::sync::mpsc;
use may_patterns::reactive::{Error, Subscriber, Subscription};

use crate::keystrokes::{self, End, LineLimits};
use crate::search::{self, Answer, Backends, Event, Offer};

/// How long a write to a client may wait for the client to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How every session runs.
pub struct Config {
    pub debounce: Duration,
    pub limits: LineLimits,
    pub json: bool,
    pub backends: Arc<Backends>,
}

/// What every session adds to, for the server's summary.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines read from clients (keystrokes).
    pub lines: AtomicU64,
    /// Lines that came out of the debounce.
    pub debounced: AtomicU64,
    /// Queries searched (after dropping repeats).
    pub searched: AtomicU64,
    /// Searches replaced by a newer query before every backend answered.
    pub superseded: AtomicU64,
    pub too_long: AtomicU64,
    pub idle: AtomicU64,
}

/// How the server ends a session early (at shutdown): cancel its pipeline,
/// which cancels its search in flight, and wake the session.
#[derive(Clone)]
pub struct Stop {
    /// The pipeline's subscription, once it has one. A std mutex, held to
    /// put or take it, never across a call.
    slot: Arc<Mutex<Slot>>,
    done: mpsc::Sender<()>,
}

enum Slot {
    Starting,
    Running(Subscription),
    Stopped,
}

impl Stop {
    pub fn stop(&self) {
        let slot = std::mem::replace(&mut *self.slot.lock().unwrap(), Slot::Stopped);
        if let Slot::Running(subscription) = slot {
            subscription.cancel();
        }
        let _ = self.done.send(());
    }

    /// Hand over the pipeline's subscription; cancelled at once if the
    /// session was stopped before its pipeline had started.
    fn running(&self, subscription: &Subscription) {
        let stopped = {
            let mut slot = self.slot.lock().unwrap();
            let stopped = matches!(*slot, Slot::Stopped);
            if !stopped {
                *slot = Slot::Running(subscription.clone());
            }
            stopped
        };
        if stopped {
            subscription.cancel();
        }
    }
}

/// A session before it serves: the server keeps its [`Stop`].
pub struct Session {
    stop: Stop,
    finished: mpsc::Receiver<()>,
}

impl Session {
    pub fn new() -> Session {
        let (done, finished) = mpsc::channel();
        let stop = Stop {
            slot: Arc::new(Mutex::new(Slot::Starting)),
            done,
        };
        Session { stop, finished }
    }

    pub fn stopper(&self) -> Stop {
        self.stop.clone()
    }

    /// Serve one client until its keystroke stream ends and the last
    /// search has been written, the client goes away, or [`Stop::stop`].
    pub fn serve(
        self,
        stream: TcpStream,
        writer: TcpStream,
        config: &Config,
        counters: &Arc<Counters>,
    ) {
        pipeline(stream, writer, config, counters, self)
    }
}

// ANCHOR: pipeline
/// The pipeline of one connection, from its keystrokes to its screen.
fn pipeline(
    stream: TcpStream,
    writer: TcpStream,
    config: &Config,
    counters: &Arc<Counters>,
    session: Session,
) {
    // A client that stops reading would park a write for ever. A may socket
    // timeout, armed only when a write has to wait: long, so it stays clear
    // of may 0.3.51's timer race (the Pitfalls reference).
    if writer.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let (lines, end) = keystrokes::lines(stream, config.limits);
    let (seen, debounced, searched) = (counters.clone(), counters.clone(), counters.clone());
    let backends = config.backends.clone();
    let events = lines
        .map(move |line| count(&seen.lines, line.trim().to_owned()))
        .debounce(config.debounce)
        .map(move |text| count(&debounced.debounced, text))
        .distinct_until_changed()
        .switch_map(move |text| {
            if search::valid(&text) {
                searched.searched.fetch_add(1, Ordering::SeqCst);
            }
            search::search(&backends, text)
        });
    events.subscribe(Screen {
        out: writer,
        json: config.json,
        current: None,
        subscription: None,
        counters: counters.clone(),
        stop: session.stop,
    });
    let _ = session.finished.recv(); // parks this connection's coroutine
    match end.get() {
        Some(End::TooLong) => counters.too_long.fetch_add(1, Ordering::SeqCst),
        Some(End::Idle) => counters.idle.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
}
// ANCHOR_END: pipeline

/// `item`, after adding one to `counter`.
fn count<T>(counter: &AtomicU64, item: T) -> T {
    counter.fetch_add(1, Ordering::SeqCst);
    item
}

/// The search being shown: its answers so far.
struct Shown {
    query: Arc<str>,
    backends: usize,
    answers: Vec<Answer>,
    started: Instant,
}

// ANCHOR: screen
/// The subscriber at the end of the pipeline: the client's screen. It asks
/// for one event at a time and for the next only once this one is written,
/// so a client that reads slowly slows the pipeline, not the server's memory.
struct Screen {
    out: TcpStream,
    json: bool,
    current: Option<Shown>,
    subscription: Option<Subscription>,
    counters: Arc<Counters>,
    stop: Stop,
}

impl Subscriber<Event> for Screen {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.stop.running(&subscription);
        subscription.request(1);
        self.subscription = Some(subscription);
    }

    fn on_next(&mut self, event: Event) {
        let lines = self.show(event);
        if self.out.write_all(lines.as_bytes()).is_err() {
            // The client is gone: stop everything upstream, searches too.
            if let Some(subscription) = self.subscription.take() {
                subscription.cancel();
            }
            self.finish();
        } else if let Some(subscription) = &self.subscription {
            subscription.request(1);
        }
    }

    fn on_error(&mut self, error: Error) {
        let line = match self.json {
            true => format!("{{\"error\":{}}}\n", json_string(&error.to_string())),
            false => format!("error: {error}; closing\n"),
        };
        let _ = self.out.write_all(line.as_bytes());
        self.finish();
    }

    fn on_complete(&mut self) {
        self.finish();
    }
}
// ANCHOR_END: screen

impl Screen {
    /// Close the connection and wake the session.
    fn finish(&mut self) {
        let _ = self.out.shutdown(Shutdown::Both);
        let _ = self.stop.done.send(());
    }

    /// The lines `event` shows, and what it changes in the current search.
    fn show(&mut self, event: Event) -> String {
        let mut text = String::new();
        let new_query = !matches!(event, Event::Answer(_));
        if let Some(shown) = self.current.take_if(|_| new_query) {
            if shown.answers.len() < shown.backends {
                self.counters.superseded.fetch_add(1, Ordering::SeqCst);
                text += &self.superseded(&shown);
            }
        }
        match event {
            Event::Started { query, backends } => {
                text += &match self.json {
                    true => format!("{{\"searching\":{}}}\n", json_string(&query)),
                    false => format!("> {query}\n"),
                };
                self.current = Some(Shown {
                    query,
                    backends,
                    answers: Vec::new(),
                    started: Instant::now(),
                });
            }
            Event::Answer(answer) => {
                text += &self.answer(&answer);
                if let Some(shown) = &mut self.current {
                    shown.answers.push(answer);
                    if shown.answers.len() == shown.backends {
                        text += &summary(shown, self.json);
                    }
                }
            }
            Event::Cleared => {
                text += match self.json {
                    true => "{\"cleared\":true}\n",
                    false => "(cleared)\n",
                };
            }
            Event::Rejected { query } => {
                text += &match self.json {
                    true => format!("{{\"rejected\":{}}}\n", json_string(&query)),
                    false => {
                        format!("! {query:?} is not a query: letters, digits, - or _, at most 64\n")
                    }
                };
            }
        }
        text
    }

    fn answer(&self, answer: &Answer) -> String {
        let ms = answer.took.as_secs_f64() * 1000.0;
        match (&answer.outcome, self.json) {
            (Ok((shop, offers)), false) => {
                let list: Vec<String> = offers.iter().map(price).collect();
                format!("  {shop}  {ms:.1}ms  {}\n", list.join(", "))
            }
            (Err(why), false) => format!("  {}  failed: {why}\n", answer.backend),
            (Ok((shop, offers)), true) => format!(
                "{{\"query\":{},\"backend\":{},\"ms\":{ms:.3},\"offers\":{}}}\n",
                json_string(&answer.query),
                json_string(shop),
                serde_json::to_string(offers).expect("offers serialise")
            ),
            (Err(why), true) => format!(
                "{{\"query\":{},\"backend\":\"{}\",\"ms\":{ms:.3},\"failed\":{}}}\n",
                json_string(&answer.query),
                answer.backend,
                json_string(why)
            ),
        }
    }

    fn superseded(&self, shown: &Shown) -> String {
        let (had, of) = (shown.answers.len(), shown.backends);
        match self.json {
            true => format!(
                "{{\"superseded\":{},\"answered\":{had},\"backends\":{of}}}\n",
                json_string(&shown.query)
            ),
            false => format!(
                "  ({:?} superseded with {had} of {of} backends in; the rest cancelled)\n",
                &*shown.query
            ),
        }
    }
}

fn price(offer: &Offer) -> String {
    let (euros, cents) = (offer.price_cents / 100, offer.price_cents % 100);
    format!("{} {euros}.{cents:02}", offer.sku)
}

// ANCHOR: summary
/// The line that closes a search: how many backends answered, and the best
/// offer per product (the scatter-gather chapter's merge, in small).
fn summary(shown: &Shown, json: bool) -> String {
    let mut best: BTreeMap<&str, &Offer> = BTreeMap::new();
    for (_, offers) in shown.answers.iter().filter_map(|a| a.outcome.as_ref().ok()) {
        for offer in offers {
            let entry = best.entry(&offer.sku).or_insert(offer);
            if (offer.price_cents, &offer.shop) < (entry.price_cents, &entry.shop) {
                *entry = offer;
            }
        }
    }
    let answered = shown.answers.iter().filter(|a| a.outcome.is_ok()).count();
    let ms = shown.started.elapsed().as_secs_f64() * 1000.0;
    let cheapest = best.values().min_by_key(|o| (o.price_cents, &o.sku));
    match json {
        true => format!(
            "{{\"done\":{},\"answered\":{answered},\"backends\":{},\"ms\":{ms:.3},\"products\":{}}}\n",
            json_string(&shown.query),
            shown.backends,
            best.len()
        ),
        false => format!(
            "= {}: {answered} of {} backends answered in {ms:.1}ms, {} products{}\n",
            shown.query,
            shown.backends,
            best.len(),
            cheapest.map_or(String::new(), |o| format!(
                ", cheapest {} at {}",
                price(o),
                o.shop
            ))
        ),
    }
}
// ANCHOR_END: summary

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}
