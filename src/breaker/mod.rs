//! Fault tolerance for calls to a dependency: a circuit breaker, a retry
//! policy with backoff and jitter, a retry budget and a bulkhead (the
//! circuit-breaker chapter; the crawler, load balancer and reverse proxy
//! reuse it).
