//! Who may use the proxy and where it may go: CIDR blocks matched by hand
//! (a prefix compare on the address's bits is ten lines of std `IpAddr`;
//! a crate would add a dependency for less code than its own docs), and the
//! destination policy, checked on the *resolved* address so that a name
//! that resolves to 127.0.0.1 is refused like 127.0.0.1 itself (DNS
//! rebinding).

use std::net::IpAddr;
use std::str::FromStr;

/// An address block: `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or
/// a /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block. An IPv4 address mapped into IPv6
    /// (`::ffff:127.0.0.1`) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, unmap(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                same_prefix(u32::from(n).into(), u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                same_prefix(u128::from(n), u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The first `prefix` of `width` bits of `a` and `b` are equal.
fn same_prefix(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(width - prefix);
    a >> shift == b >> shift
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{p:?} is not a prefix length from 0 to {width}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

/// Whether a destination the proxy connects to is in a range the outside
/// world should not reach through it: loopback, private (RFC 1918, IPv6
/// unique local), link-local, unspecified, or carrier-grade NAT.
pub fn is_internal(ip: IpAddr) -> bool {
    match unmap(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || first & 0xfe00 == 0xfc00 // unique local fc00::/7
                || first & 0xffc0 == 0xfe80 // link-local fe80::/10
        }
    }
}

/// Where the proxy may connect.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Client addresses served.
    pub clients: Vec<Cidr>,
    /// Internal destinations that are allowed anyway.
    pub allowed_dests: Vec<Cidr>,
    /// Ports CONNECT may open.
    pub connect_ports: Vec<u16>,
    /// Ports a plain HTTP request may not go to.
    pub denied_ports: Vec<u16>,
}

impl Policy {
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.clients.iter().any(|c| c.contains(ip))
    }

    /// A resolved destination: public, or internal and listed.
    pub fn dest_allowed(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allowed_dests.iter().any(|c| c.contains(ip))
    }

    pub fn port_allowed(&self, port: u16, connect: bool) -> bool {
        if connect {
            self.connect_ports.contains(&port)
        } else {
            port != 0 && !self.denied_ports.contains(&port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_matches_its_prefix_only() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("::1")));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
    }

    #[test]
    fn mapped_ipv4_matches_as_ipv4() {
        let c: Cidr = "127.0.0.1/32".parse().unwrap();
        assert!(c.contains(ip("::ffff:127.0.0.1")));
        assert!(is_internal(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn bad_cidrs_are_refused() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn internal_ranges() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_internal(ip(s)), "{s}");
        }
        for s in ["93.184.216.34", "100.128.0.1", "2001:db8::1", "172.32.0.1"] {
            assert!(!is_internal(ip(s)), "{s}");
        }
    }

    #[test]
    fn policy_allows_listed_internal_destinations_and_ports() {
        let p = Policy {
            clients: vec!["127.0.0.1".parse().unwrap()],
            allowed_dests: vec!["127.0.0.0/8".parse().unwrap()],
            connect_ports: vec![443],
            denied_ports: vec![25],
        };
        assert!(p.dest_allowed(ip("127.0.0.2")));
        assert!(!p.dest_allowed(ip("10.0.0.1")));
        assert!(p.dest_allowed(ip("93.184.216.34")));
        assert!(p.client_allowed(ip("127.0.0.1")));
        assert!(!p.client_allowed(ip("127.0.0.2")));
        assert!(p.port_allowed(443, true));
        assert!(!p.port_allowed(80, true));
        assert!(p.port_allowed(80, false));
        assert!(!p.port_allowed(25, false));
    }
}
