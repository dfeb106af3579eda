//! Name resolution off the may workers: `getaddrinfo` blocks its thread,
//! so it runs on `may_patterns::blocking`'s pool while the coroutine parks.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Every address `host:port` resolves to (an IP literal without a lookup).
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if let Ok(ip) = host.parse() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> =
        may_patterns::blocking::run(move || (host.as_str(), port).to_socket_addrs())??.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost() {
        assert_eq!(
            resolve("[::1]", 443).unwrap(),
            vec!["[::1]:443".parse().unwrap()]
        );
        let local = resolve("localhost", 80).unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
