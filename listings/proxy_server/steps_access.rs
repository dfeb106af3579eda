//! Who may use the proxy and where to, from step 5 on: client ranges, a
//! password, ports, and the *resolved* destination checked against the
//! internal ranges. A step includes this file with `#[path =
//! "steps_access.rs"] mod steps_access;`.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use may_patterns::blocking;

use crate::steps_request::Target;
use crate::steps_streaming::Failure;

// ANCHOR: parse_authority
impl Target {
    /// A `CONNECT` target: `host:port`, `[v6]:port`.
    pub fn parse_authority(target: &str) -> Option<Target> {
        let (host, port) = target.rsplit_once(':')?;
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !bracketed) {
            return None;
        }
        Some(Target {
            host: host.to_owned(),
            port: port.parse().ok().filter(|&p| p != 0)?,
            path: String::new(),
        })
    }
}
// ANCHOR_END: parse_authority

// ANCHOR: policy
/// An address range, `10.0.0.0/8` or `fc00::/7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (net, bits) = text.split_once('/')?;
        let (net, bits): (IpAddr, u8) = (net.parse().ok()?, bits.parse().ok()?);
        let width = if net.is_ipv4() { 32 } else { 128 };
        (bits <= width).then_some(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.net, unmapped(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift == 128 || net >> shift == ip >> shift
    }
}

/// `::ffff:127.0.0.1` is 127.0.0.1: check it as the IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Inside the network: what a proxy must not reach because someone asked.
pub fn internal(ip: IpAddr) -> bool {
    match unmapped(ip) {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified()
        }
        // Unique local fc00::/7 and link-local fe80::/10.
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
        }
    }
}

/// Who may use the proxy, and where to.
pub struct Policy {
    pub clients: Vec<Cidr>,
    pub ports: Vec<u16>,
    /// Internal destinations allowed all the same: a range and a port.
    pub exceptions: Vec<(Cidr, u16)>,
    /// `user:password` pairs; none: no password is asked.
    pub users: Vec<String>,
}

impl Policy {
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.clients.iter().any(|net| net.contains(ip))
    }

    pub fn destination_allowed(&self, addr: SocketAddr) -> bool {
        !internal(addr.ip())
            || self
                .exceptions
                .iter()
                .any(|(net, port)| *port == addr.port() && net.contains(addr.ip()))
    }

    /// `Basic <base64 of user:password>`, compared in constant time so the
    /// answer's timing does not tell how much of a guess was right.
    pub fn authorized(&self, credentials: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let decoded = credentials
            .and_then(|c| c.strip_prefix("Basic "))
            .and_then(|b| BASE64.decode(b.trim()).ok())
            .unwrap_or_default();
        self.users
            .iter()
            .fold(false, |found, user| found | same(user.as_bytes(), &decoded))
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

impl Default for Policy {
    /// Clients on this machine, to ports 80 and 443 of public addresses.
    fn default() -> Policy {
        Policy {
            clients: ["127.0.0.1/32", "::1/128"]
                .iter()
                .filter_map(|c| Cidr::parse(c))
                .collect(),
            ports: vec![80, 443],
            exceptions: Vec::new(),
            users: Vec::new(),
        }
    }
}
// ANCHOR_END: policy

// ANCHOR: admit
/// Where `target` may be reached: its port must be allowed, and of the
/// addresses its host resolves to (by `resolve`: step 6 puts a cache in
/// front), those the policy allows (none: `403`).
pub fn admit(
    target: &Target,
    policy: &Policy,
    resolve: impl FnOnce(&str, u16) -> io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, Failure> {
    let forbidden = |why: String| Failure::Refuse(403, "Forbidden", why);
    if !policy.ports.contains(&target.port) {
        return Err(forbidden(format!("port {} is not allowed", target.port)));
    }
    let resolved = resolve(&target.host, target.port)
        .map_err(|e| Failure::Refuse(502, "Bad Gateway", format!("{}: {e}", target.host)))?;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| policy.destination_allowed(*addr))
        .collect();
    match allowed.is_empty() {
        true => Err(forbidden(format!("{} is an internal address", target.host))),
        false => Ok(allowed),
    }
}

/// `host`'s addresses: an IP literal as it is; a name through the system
/// resolver, on a thread of the blocking pool, since `getaddrinfo`
/// blocks its thread.
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = host.to_owned();
    blocking::run(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter))
        .map_err(io::Error::other)?
}
// ANCHOR_END: admit
