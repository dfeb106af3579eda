//! Reactive streams on may coroutines: a [`Flux`] is a recipe for a stream
//! of items that a [`Subscriber`] receives as four signals: `on_subscribe`
//! first, then `on_next` for each item, then `on_error` or `on_complete`.
//! The subscriber controls the pace: it calls `request(n)` on its
//! [`Subscription`], and a publisher never sends more items than were
//! requested (Reactive Streams rule 1.1).
//!
//! Where code runs:
//!
//! - a source ([`Flux::from_iter`], [`Flux::range`], ...) gives each
//!   subscription its own coroutine, and runs every callback of that
//!   subscriber on it, one after another; while there is no demand the
//!   coroutine parks on [`Demand`] (no spinning, no thread held);
//! - synchronous operators (`map`, `filter`, `scan`, `take`,
//!   `distinct_until_changed`) add no coroutine: they run inline inside the
//!   upstream's `on_next`, on the source's coroutine and its stack;
//! - operators that wait on time or on several upstreams add one coroutine
//!   per subscription (a [`funnel`]) and hand signals over one channel, whose
//!   contents demand bounds;
//! - [`Flux::iter`] turns the stream into a blocking iterator for the
//!   calling thread or coroutine.
//!
//! So a subscriber's callbacks must not block the thread: they run on a may
//! worker.
//!
//! ```
//! use may_patterns::reactive::Flux;
//!
//! let evens = Flux::range(1, 10).filter(|n| n % 2 == 0).map(|n| n * 10);
//! assert_eq!(evens.collect_vec(), Ok(vec![20, 40, 60, 80, 100]));
//! ```

mod bridge;
mod call;
mod combine;
mod error;
mod flat_map;
mod flux;
pub mod funnel;
mod hot;
mod ops;
mod probe;
mod retry;
mod signal;
mod subscriber;
mod subscription;
mod switch_map;
mod time;

pub use bridge::{Iter, COLLECT_PREFETCH};
pub use call::Cancelled;
pub use combine::PER_SOURCE;
pub use error::Error;
pub use flux::{Flux, Publisher};
pub use hot::{Backpressure, Hot, HotStats, StrategyStats};
pub use probe::{Probe, ProbeSubscriber, SerialCheck, SerialGuard};
pub use signal::Signal;
pub use subscriber::Subscriber;
pub use subscription::{Control, Demand, Subscription};
