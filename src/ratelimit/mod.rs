//! Rate limiting: admit at most a quota of work per key and period (the
//! rate-limiting chapter; the crawler, chat server, load balancer and
//! proxies reuse it).

// The algorithms (pure rules over a per-key state and `now`).
mod algorithm;
mod any;
mod decision;
mod fixed_window;
mod gcra;
mod leaky_queue;
mod quota;
mod sliding_counter;
mod sliding_log;
#[cfg(test)]
mod testing;
mod token_bucket;

pub use algorithm::Algorithm;
pub use any::{AlgorithmKind, AnyAlgorithm, AnyState, UnknownAlgorithm};
pub use decision::Decision;
pub use fixed_window::{FixedWindow, FixedWindowState};
pub use gcra::{Gcra, GcraState};
pub use leaky_queue::{LeakyQueue, LeakyQueueState};
pub use quota::{Quota, QuotaError};
pub use sliding_counter::{SlidingCounter, SlidingCounterState};
pub use sliding_log::{SlidingLog, SlidingLogState};
pub use token_bucket::{TokenBucket, TokenBucketState};

// The chapter's adversarial trace and its replay (steps 1-6, the bench).
pub mod trace;

// The keyed limiter (shared state, bounded memory, waiting in order).
mod acquire;
mod limiter;
mod shard;

pub use acquire::{AcquireError, Reservation};
pub use limiter::Limiter;
