//! One call as a stream: [`Flux::from_call`] and the [`Cancelled`] token
//! that tells a call in flight that nobody wants its answer any more.
//!
//! The call runs on a coroutine of its own, started at subscribe, and it
//! starts only when the first unit of demand arrives. Cancelling the
//! subscription fires the token: a call that checks
//! [`Cancelled::is_cancelled`] between steps stops at the next check, and a
//! call parked in a socket read registers [`Cancelled::on_cancel`] to shut
//! that socket down, so the read returns at once instead of when the peer
//! answers. `switch_map` cancels a stale inner stream this way (the final
//! program of the chapter shuts the search request's socket in it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Control, Demand, Error, Flux, Publisher, Subscriber, Subscription};

type Callback = Box<dyn FnOnce() + Send + 'static>;

// ANCHOR: cancelled
/// A cancel signal a call can look at or hook into. Clones share one signal;
/// it fires once, when the subscriber cancels (or the stream is over before
/// the call ran).
#[derive(Clone, Default)]
pub struct Cancelled {
    shared: Arc<Token>,
}

#[derive(Default)]
struct Token {
    fired: AtomicBool,
    /// Run once, at the fire. A std `Mutex`: held only to push or take the
    /// list (no call runs under it, no yield), a few hundred ns at most.
    callbacks: Mutex<Vec<Callback>>,
}

impl Cancelled {
    /// A token that has not fired.
    pub fn new() -> Cancelled {
        Cancelled::default()
    }

    /// Whether the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Run `callback` when the token fires, on the coroutine or thread that
    /// cancels (so keep it short: shut a socket, set a flag); at once, here,
    /// if it has already fired.
    pub fn on_cancel(&self, callback: impl FnOnce() + Send + 'static) {
        let mut callbacks = self.lock();
        if self.is_cancelled() {
            drop(callbacks);
            return callback();
        }
        callbacks.push(Box::new(callback));
    }

    /// Fire the token: later checks see it, and every callback registered so
    /// far runs now, once. Firing again does nothing.
    pub fn cancel(&self) {
        let callbacks = {
            let mut callbacks = self.lock();
            if self.shared.fired.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut *callbacks)
        };
        for callback in callbacks {
            callback();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Callback>> {
        // A callback never runs under the lock, so nothing can poison it.
        self.shared
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
// ANCHOR_END: cancelled

impl std::fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancelled")
            .field("fired", &self.is_cancelled())
            .finish()
    }
}

impl<T: Send + 'static> Flux<T> {
    /// A stream of one item: the answer of `f`, called on a coroutine of its
    /// own once the subscriber has requested it. `Ok` is emitted and the
    /// stream completes; `Err` ends it with that error. Cancelling fires the
    /// token `f` is handed; whatever `f` returns after that is dropped (no
    /// signal follows a cancel, rule 3.6). The coroutine has may's
    /// configured stack size: size it for the call.
    pub fn from_call(
        f: impl Fn(&Cancelled) -> Result<T, Error> + Send + Sync + 'static,
    ) -> Flux<T> {
        Flux::new(FromCall { f: Arc::new(f) })
    }
}

struct FromCall<F> {
    f: Arc<F>,
}

/// The subscription of a call: demand goes to the coroutine's [`Demand`],
/// cancel also fires the token at once, so a call already running hears of
/// it without waiting for the coroutine to look.
struct CallControl {
    demand: Subscription,
    token: Cancelled,
}

impl Control for CallControl {
    fn request(&self, n: u64) {
        self.demand.request(n)
    }
    fn cancel(&self) {
        self.demand.cancel();
        self.token.cancel();
    }
}

// ANCHOR: from_call
impl<T, F> Publisher<T> for FromCall<F>
where
    T: Send + 'static,
    F: Fn(&Cancelled) -> Result<T, Error> + Send + Sync + 'static,
{
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<T>>) {
        let f = self.f.clone();
        may::go!(move || {
            let (demand_side, demand) = Demand::new();
            let token = Cancelled::new();
            subscriber.on_subscribe(Subscription::new(CallControl {
                demand: demand_side,
                token: token.clone(),
            }));
            match demand.take_one() {
                Ok(true) => {}
                Ok(false) => return token.cancel(), // cancelled before it ran
                Err(error) => return subscriber.on_error(error),
            }
            let answer = f(&token);
            if token.is_cancelled() || demand.is_cancelled() {
                return; // nobody wants it: no signal after a cancel
            }
            match answer {
                Ok(item) => {
                    subscriber.on_next(item);
                    subscriber.on_complete();
                }
                Err(error) => subscriber.on_error(error),
            }
        });
    }
}
// ANCHOR_END: from_call
