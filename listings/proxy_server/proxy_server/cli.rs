//! The command line, and the checks that turn it into settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use may_patterns::cli::at_least_one;

use crate::access::{Cidr, Policy};
use crate::resolve::DnsConfig;
use crate::upstream::PoolLimits;

/// A forward HTTP proxy: plain http:// requests and CONNECT tunnels.
///
/// Allowed by default: clients from 127.0.0.1 and ::1 only; CONNECT to
/// port 443 only; plain requests to any port but 25; destinations anywhere except loopback, private,
/// link-local and unspecified addresses (checked after name resolution),
/// which need --allow-dest.
#[derive(Parser, Debug)]
#[command(name = "proxy_server")]
pub struct Args {
    /// Where the proxy listens (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// Client addresses served (repeatable; default 127.0.0.1/32 and ::1/128).
    #[arg(long, value_name = "CIDR")]
    pub allow_client: Vec<Cidr>,
    /// Internal destinations (loopback, private, link-local, unspecified)
    /// the proxy may reach anyway (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub allow_dest: Vec<Cidr>,
    /// Ports CONNECT may open (repeatable; default 443 only).
    #[arg(long, value_name = "PORT")]
    pub allow_connect_port: Vec<u16>,
    /// Ports plain HTTP requests may not go to (repeatable; default 25,
    /// SMTP, so the proxy is no mail relay).
    #[arg(long, value_name = "PORT")]
    pub deny_port: Vec<u16>,
    /// File of `user:password` lines; with it, Proxy-Authorization: Basic
    /// is required (407 otherwise).
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,
    /// Client connections served at once.
    #[arg(long, default_value = "1000", value_parser = at_least_one::<usize>)]
    pub max_connections: usize,
    /// Seconds to wait for an origin's TCP connect before 504.
    #[arg(long, default_value = "10", value_parser = at_least_one::<u64>)]
    pub connect_timeout: u64,
    /// Seconds a client may stay silent between requests or mid-body, an
    /// origin mid-body, or a tunnel both ways, before it is closed.
    #[arg(long, default_value = "300", value_parser = at_least_one::<u64>)]
    pub idle_timeout: u64,
    /// Seconds to wait for an origin's answer head once the request is sent
    /// (504 after it).
    #[arg(long, default_value = "30", value_parser = at_least_one::<u64>)]
    pub response_timeout: u64,
    /// Idle keep-alive connections kept to one origin address.
    // With 4, 50 clients at once through one origin (hey -c 50) opened a
    // fresh origin connection for over half of 5000 requests: every answer
    // beyond the 4th found no room. With 32, for under a tenth.
    #[arg(long, default_value = "32", value_parser = at_least_one::<usize>)]
    pub origin_idle_per_host: usize,
    /// Idle keep-alive origin connections kept in all (each holds two
    /// descriptors and its buffers).
    #[arg(long, default_value = "256", value_parser = at_least_one::<usize>)]
    pub origin_idle_total: usize,
    /// Seconds an idle origin connection is kept: under the 5 s after which
    /// Apache closes its side, so a reused one is rarely found closed.
    #[arg(long, default_value = "4", value_parser = at_least_one::<u64>)]
    pub origin_idle_timeout: u64,
    /// Seconds a client has to send a request head.
    #[arg(long, default_value = "30", value_parser = at_least_one::<u64>)]
    pub header_timeout: u64,
    /// Seconds a name's addresses are reused before it is looked up again
    /// (the system resolver reports no TTL); 0 turns the DNS cache off.
    #[arg(long, default_value = "60")]
    pub dns_ttl: u64,
    /// Seconds a failed lookup is reused, so requests to a dead name do
    /// not each wait for the resolver.
    #[arg(long, default_value = "5")]
    pub dns_negative_ttl: u64,
    /// Names the DNS cache holds at most (the oldest goes first).
    #[arg(long, default_value = "1024", value_parser = at_least_one::<usize>)]
    pub dns_cache_entries: usize,
    /// Write an access log (combined log format) to PATH, `-` for standard
    /// output; none by default.
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,
    /// Print the start and stop lines as JSON objects.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The access policy, defaults filled in.
    pub fn policy(&self) -> Policy {
        let clients = if self.allow_client.is_empty() {
            vec![
                "127.0.0.1/32".parse().expect("a valid CIDR"),
                "::1/128".parse().expect("a valid CIDR"),
            ]
        } else {
            self.allow_client.clone()
        };
        Policy {
            clients,
            allowed_dests: self.allow_dest.clone(),
            connect_ports: if self.allow_connect_port.is_empty() {
                vec![443]
            } else {
                self.allow_connect_port.clone()
            },
            denied_ports: if self.deny_port.is_empty() {
                vec![25]
            } else {
                self.deny_port.clone()
            },
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(self.response_timeout)
    }

    pub fn pool_limits(&self) -> PoolLimits {
        PoolLimits {
            per_dest: self.origin_idle_per_host,
            total: self.origin_idle_total,
            idle_for: Duration::from_secs(self.origin_idle_timeout),
        }
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout)
    }

    pub fn dns(&self) -> DnsConfig {
        DnsConfig {
            ttl: Duration::from_secs(self.dns_ttl),
            negative_ttl: Duration::from_secs(self.dns_negative_ttl),
            entries: self.dns_cache_entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_allow_local_clients_and_connect_to_443() {
        let args = Args::try_parse_from(["proxy_server"]).unwrap();
        let p = args.policy();
        assert!(p.client_allowed("::1".parse().unwrap()));
        assert!(!p.client_allowed("10.0.0.1".parse().unwrap()));
        assert!(p.port_allowed(443, true));
        assert!(!p.port_allowed(8443, true));
        assert!(!p.dest_allowed("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn flags_replace_the_defaults() {
        let args = Args::try_parse_from([
            "proxy_server",
            "--allow-dest",
            "127.0.0.0/8",
            "--allow-connect-port",
            "8443",
            "--allow-client",
            "10.0.0.0/8",
        ])
        .unwrap();
        let p = args.policy();
        assert!(p.dest_allowed("127.0.0.1".parse().unwrap()));
        assert!(p.port_allowed(8443, true));
        assert!(!p.port_allowed(443, true));
        assert!(!p.client_allowed("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Args::try_parse_from(["proxy_server", "--allow-dest", "10.0.0.0/40"]).is_err());
        assert!(Args::try_parse_from(["proxy_server", "--connect-timeout", "0"]).is_err());
        assert!(Args::try_parse_from(["proxy_server", "--dns-cache-entries", "0"]).is_err());
        assert!(Args::try_parse_from(["proxy_server", "--origin-idle-total", "0"]).is_err());
        assert!(Args::try_parse_from(["proxy_server", "--response-timeout", "0"]).is_err());
    }

    #[test]
    fn origin_pool_and_response_defaults() {
        let args = Args::try_parse_from(["proxy_server"]).unwrap();
        let pool = args.pool_limits();
        assert_eq!((pool.per_dest, pool.total), (32, 256));
        assert_eq!(pool.idle_for, Duration::from_secs(4));
        assert_eq!(args.response_timeout(), Duration::from_secs(30));
        let args = Args::try_parse_from(["proxy_server", "--origin-idle-per-host", "2"]).unwrap();
        assert_eq!(args.pool_limits().per_dest, 2);
    }

    #[test]
    fn dns_and_log_defaults() {
        let args = Args::try_parse_from(["proxy_server"]).unwrap();
        let dns = args.dns();
        assert_eq!(dns.ttl, Duration::from_secs(60));
        assert_eq!(dns.negative_ttl, Duration::from_secs(5));
        assert_eq!(dns.entries, 1024);
        assert_eq!(args.access_log, None);
        let args =
            Args::try_parse_from(["proxy_server", "--dns-ttl", "0", "--access-log", "-"]).unwrap();
        assert!(args.dns().ttl.is_zero());
        assert_eq!(args.access_log, Some(PathBuf::from("-")));
    }
}
