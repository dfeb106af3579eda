//! A snapshot of every backend, for a status page or `--json`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::pool::Pool;

/// A backend's state as a person reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    /// Up, but taking no new requests.
    Draining,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Draining => "draining",
        }
    }
}

/// One backend at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// The weight picks use now (below `weight` during slow start).
    pub effective_weight: u32,
    pub state: State,
    pub in_flight: u64,
    pub picks: u64,
    pub errors: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// On the pool's clock.
    pub last_change: Duration,
}

impl Pool {
    /// Every backend's counters, in pool order.
    pub fn stats(&self) -> Vec<BackendStats> {
        let now = self.shared.clock.now();
        self.shared
            .backends
            .iter()
            .map(|b| {
                let status = *b.status.lock().unwrap();
                let state = match (status.health.is_up(), status.draining) {
                    (false, _) => State::Down,
                    (true, true) => State::Draining,
                    (true, false) => State::Up,
                };
                BackendStats {
                    name: b.config.name.clone(),
                    addr: b.config.addr,
                    weight: b.config.weight,
                    effective_weight: self.effective(b, &status, now),
                    state,
                    in_flight: b.in_flight.load(Ordering::SeqCst),
                    picks: b.picks.load(Ordering::Relaxed),
                    errors: b.errors.load(Ordering::Relaxed),
                    checks_passed: b.checks_passed.load(Ordering::Relaxed),
                    checks_failed: b.checks_failed.load(Ordering::Relaxed),
                    last_change: status.last_change,
                }
            })
            .collect()
    }
}

/// The snapshot as a JSON array of objects, one per backend
/// (`last_change_ms` in whole milliseconds on the pool's clock).
pub fn to_json(stats: &[BackendStats]) -> String {
    let mut out = String::from("[");
    for (i, s) in stats.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_string(&mut out, &s.name);
        out.push_str(",\"addr\":");
        push_string(&mut out, &s.addr.to_string());
        let _ = write!(
            out,
            ",\"weight\":{},\"effective_weight\":{},\"state\":\"{}\",\"in_flight\":{},\
             \"picks\":{},\"errors\":{},\"checks_passed\":{},\"checks_failed\":{},\
             \"last_change_ms\":{}}}",
            s.weight,
            s.effective_weight,
            s.state.as_str(),
            s.in_flight,
            s.picks,
            s.errors,
            s.checks_passed,
            s.checks_failed,
            s.last_change.as_millis()
        );
    }
    out.push(']');
    out
}

/// `value` as a JSON string: quotes, backslashes and control characters
/// escaped (a name comes from configuration and may hold any of them).
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
