//! Building blocks for *Coroutine Patterns with May*.
//!
//! Each chapter of the book builds a small, reusable piece here the first time
//! it is needed, and later chapters call it instead of writing it again:
//!
//! - [`accept`]: wake a parked accept loop when its server is told to stop
//!   (the primer's echo server, and every server after it).
//! - [`alarm`]: many short timed waits kept by one OS thread, away from may
//!   0.3.51's timer races (the circuit breaker; the backend uses it).
//! - [`backend`]: a scriptable HTTP backend (latency, slow share, failures,
//!   hangs) for the clients, proxies and load balancers (scatter-gather).
//! - [`blocking`]: run blocking calls on a small pool of OS threads while the
//!   calling coroutine parks (the primer).
//! - [`breaker`]: a circuit breaker, retries with backoff and jitter, a
//!   retry budget and a bulkhead for calls to a dependency (the
//!   circuit-breaker chapter).
//! - [`bounded`]: the bounded channel may lacks, so producers feel
//!   backpressure (the producer-consumer chapter).
//! - [`clock`]: the time a limiter or breaker decides by, injectable so
//!   tests are exact (the rate-limiting chapter).
//! - [`cli`]: refuse a zero count on the command line with one sentence (the
//!   primer's echo server, and every program after it).
//! - [`http`]: bounded HTTP/1.1 reading and writing with httparse
//!   (scatter-gather, and every HTTP chapter after it).
//! - [`json`]: reject JSON nested deeper than a program's records need,
//!   before a recursive parser can overflow a coroutine's stack.
//! - [`machine`]: the machine and date a measured table names (the pitfalls
//!   appendix).
//! - [`net`]: connect a may `TcpStream` without may 0.3.51's `connect`, which
//!   races its own event loop (every program that connects).
//! - [`pace`]: simulated per-item waits without sub-millisecond coroutine
//!   sleeps (which may 0.3.51 gets wrong).
//! - [`pool`]: a worker pool between `min` and `max` coroutines, with a
//!   bounded queue, job handles, caught panics and drain-or-cancel shutdown
//!   (the worker-pool chapter).
//! - [`ratelimit`]: admit at most a quota per key and period, by six
//!   algorithms, with bounded memory per flood of keys (the rate-limiting
//!   chapter).
//! - [`reactive`]: reactive streams with demand (`request(n)`), cold
//!   sources on coroutines and operators (the reactive-pipeline chapter).
//! - [`runtime`]: configure may once, before anything starts it (the primer).
//! - [`server`]: the accept loop every server runs on: a connection cap,
//!   `EMFILE` backoff, TLS handshakes off the loop, timeouts, and a
//!   shutdown that closes every socket (the chat server).
//! - [`shutdown`]: a stop signal that coroutines and OS threads can both wait on
//!   (the primer's echo server, and every server after it).
//! - [`stage`]: run a chain's middle stages on worker coroutines, timed and
//!   counted (the multi-stage chapter; the data pipeline reuses it).
//! - [`testsite`]: a generated multi-host web site (robots.txt, redirects,
//!   a link trap, broken HTML), served in-process or by nginx, to test
//!   crawlers against (the web-crawler chapter).
//! - [`timeout`]: round a coroutine's timeout up to what may 0.3.51 can keep
//!   (it ignores one under 1 ms; scatter-gather).
//! - [`tls`]: rustls over may sockets, and a test CA for HTTPS on loopback
//!   (the web crawler).
//!
//! May's `go!` macro hides an `unsafe` spawn: a coroutine must not touch
//! thread-local storage that may change under it, and must not overflow its
//! stack. The primer chapter explains both rules; this library obeys them.

pub mod accept;
pub mod alarm;
pub mod backend;
pub mod balance;
pub mod blocking;
pub mod bounded;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod http;
pub mod json;
pub mod machine;
pub mod net;
mod oneshot;
pub mod pace;
pub mod pool;
pub mod ratelimit;
pub mod reactive;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod stage;
pub mod testsite;
pub mod timeout;
pub mod tls;
