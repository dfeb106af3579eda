//! Rate limiting: admit at most a quota of work per key and period (the
//! rate-limiting chapter; the crawler, chat server, load balancer and
//! proxies reuse it).
