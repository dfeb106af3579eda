//! End-to-end: the finished `proxy_server` run as a user runs it, with
//! curl and nc as its clients (and a raw socket for what no real client
//! sends), in front of a real nginx and of origins served on loopback by
//! this test process (HTTPS with a throwaway CA, a TCP echo, an HTTP
//! server that checks bodies as they stream). Each test starts its own
//! proxy with `--listen 127.0.0.1:0` and stops it with Ctrl-C (SIGINT),
//! checking the summary it prints.
//!
//! Needs curl, nc and nginx (`.ci/run` installs them: Debian packages
//! `curl`, `netcat-openbsd` and `nginx`), and util-linux's `prlimit` where
//! the open-file limit is under what 5,000 connections need; a test whose
//! tool is missing fails and says so.

#[path = "support/mod.rs"]
mod support;

#[path = "proxy_server/access_log.rs"]
mod access_log;
#[path = "proxy_server/big.rs"]
mod big;
#[path = "proxy_server/clients.rs"]
mod clients;
#[path = "proxy_server/command_line.rs"]
mod command_line;
#[path = "proxy_server/forwarding.rs"]
mod forwarding;
#[path = "proxy_server/limits.rs"]
mod limits;
#[path = "proxy_server/many_idle.rs"]
mod many_idle;
#[path = "proxy_server/origins.rs"]
mod origins;
#[path = "proxy_server/pattern.rs"]
mod pattern;
#[path = "proxy_server/proxy.rs"]
mod proxy;
#[path = "proxy_server/refusals.rs"]
mod refusals;
#[path = "proxy_server/slow_clients.rs"]
mod slow_clients;
#[path = "proxy_server/tunnels.rs"]
mod tunnels;
