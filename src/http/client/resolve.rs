//! Host names to addresses, never on a may worker: `getaddrinfo` blocks the
//! OS thread it runs on, and with it every coroutine of that worker (may's
//! own `TcpStream::connect(name)` does exactly that, and tries only the
//! first address).

use std::net::{SocketAddr, ToSocketAddrs};

use url::Host;

use super::config::Resolve;
use crate::blocking;

// ANCHOR: resolve
/// Every address of `host:port`, in the order to try them. An IP literal
/// needs no lookup; a name goes to the static table or to `getaddrinfo` on
/// the blocking pool, while the calling coroutine parks.
pub(super) fn addresses(
    host: &Host<&str>,
    port: u16,
    resolve: &Resolve,
) -> Result<Vec<SocketAddr>, String> {
    let name = match host {
        Host::Ipv4(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        Host::Ipv6(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        Host::Domain(name) => name.to_string(),
    };
    let found = match resolve {
        Resolve::Static(table) => {
            let key = format!("{name}:{port}");
            let addr = table.get(&key).copied();
            return addr
                .map(|a| vec![a])
                .ok_or_else(|| format!("{key} is not in the static table"));
        }
        Resolve::System => blocking::run(move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map(|found| found.collect::<Vec<_>>())
        }),
    };
    match found {
        Ok(Ok(addrs)) if addrs.is_empty() => Err("the name has no address".to_owned()),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
// ANCHOR_END: resolve
