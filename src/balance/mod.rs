//! Load balancing: a pool of backends, the algorithms that pick one per
//! request, health (active checks and passive marks from live traffic, with
//! HAProxy's `rise`/`fall`), slow start, draining and stats (the
//! load-balancer chapter; the reverse proxy reuses it).
//!
//! A forwarding coroutine calls [`Pool::pick`], sends the request to the
//! [`Lease`]'s address, and ends with [`Lease::done`]; the lease counts the
//! request in flight meanwhile, which least-connections and power-of-two
//! read.

mod algorithm;
mod check;
mod health;
mod pool;
mod slow_start;
mod stats;

pub use algorithm::Algorithm;
pub use check::{check_once, spawn_checker, CheckConfig};
pub use health::{Health, HealthRule, Transition};
pub use pool::{BackendConfig, Lease, Outcome, Pool, PoolConfig};
pub use slow_start::effective_weight;
pub use stats::{to_json, BackendStats, State};

#[cfg(test)]
mod tests;
