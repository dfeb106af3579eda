//! Step 5: who may go where. Before anything is forwarded or tunnelled,
//! the proxy checks, cheapest first: the client's address against the
//! allowed ranges; the `Proxy-Authorization: Basic` password (`407` with
//! `Proxy-Authenticate` without it); the destination port; and last the
//! destination's *resolved* addresses: loopback, private, link-local and
//! unspecified ones are refused unless an exception names their range and
//! port. Checking the address a name resolves to, not the name, is what
//! stops a name that points at `127.0.0.1` (DNS rebinding); an IPv4-mapped
//! IPv6 address is checked as the IPv4 address it carries.
//!
//! Names are resolved now, on `may_patterns::blocking`'s threads, since
//! `getaddrinfo` blocks its thread and must not block a may worker. The
//! demo is a table of attempts and the status each got.

#[path = "steps_access.rs"]
mod steps_access;
#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_pool.rs"]
mod steps_pool;
#[path = "steps_request.rs"]
mod steps_request;
#[path = "steps_streaming.rs"]
mod steps_streaming;
#[path = "steps_tunnel.rs"]
mod steps_tunnel;

use std::io;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use may_patterns::http::{header, write_error};
use may_patterns::server::Conn;
use steps_access::{admit, resolve, Cidr, Policy};
use steps_common::{show, start_origin, Client, Service, BUF};
use steps_pool::{connect_first, Pool};
use steps_request::{client_halves, next_head, Target};
use steps_streaming::{forward, refuse, Failure, Io};
use steps_tunnel::open_tunnel;

/// This hop's name in `Via`.
const VIA: &str = "step5";

// ANCHOR: handle
/// One client connection, as in step 4, with the checks in front of each
/// request: the client, the password, then where it goes ([`admit`]).
fn handle(conn: Conn, policy: &Policy, pool: &Pool) -> io::Result<()> {
    let peer = conn.peer().ip();
    let (mut client_in, mut client_out) = client_halves(conn)?;
    let mut buf = vec![0u8; BUF];
    while let Some(head) = next_head(&mut client_in, &mut client_out)? {
        // Refused after its head is read, so the answer is not lost to a
        // reset (closing a socket with unread bytes sends one).
        if !policy.client_allowed(peer) {
            let why = format!("{peer} may not use this proxy");
            return write_error(&mut client_out, 403, "Forbidden", &[], &why, true);
        }
        if !policy.authorized(header(&head.headers, "proxy-authorization")) {
            let challenge = [("Proxy-Authenticate", "Basic realm=\"step5\"")];
            let (status, reason) = (407, "Proxy Authentication Required");
            return write_error(&mut client_out, status, reason, &challenge, "", true);
        }
        let tunnel = head.method.eq_ignore_ascii_case("CONNECT");
        let admitted = match tunnel {
            true => Target::parse_authority(&head.target),
            false => Target::parse(&head.target),
        }
        .ok_or_else(|| Failure::Refuse(400, "Bad Request", "not a target".to_owned()))
        .and_then(|target| admit(&target, policy, resolve).map(|addrs| (target, addrs)));
        let (target, addrs) = match admitted {
            Ok(admitted) => admitted,
            Err(failure) => return refuse(&mut client_out, failure),
        };
        if tunnel {
            return match connect_first(&addrs) {
                Ok((_, origin)) => open_tunnel(origin, client_in, client_out).map(drop),
                Err(e) => refuse(&mut client_out, Failure::Upstream(e)),
            };
        }
        let io = Io {
            client_in: &mut client_in,
            client_out: &mut client_out,
            buf: &mut buf,
        };
        match forward(head, &target, &addrs, io, pool) {
            Ok((true, ..)) => continue,
            Ok((false, ..)) => break,
            Err(failure) => return refuse(&mut client_out, failure),
        }
    }
    Ok(())
}
// ANCHOR_END: handle

/// The proxy: `policy` decides, `pool` keeps origin connections.
fn start_proxy(addr: &str, policy: Policy, pool: Arc<Pool>) -> io::Result<Service> {
    Service::start(addr, move |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn, &policy, &pool) {
            eprintln!("{peer}: {e}");
        }
    })
}

const USER: &str = "alice:wonderland";

// ANCHOR: demo
/// One attempt of the table: what it is, the request, and whether it
/// carries the right password, a wrong one, or none.
struct Attempt {
    what: String,
    request: String,
}

fn attempt(what: &str, request_line: &str, credentials: Option<&str>) -> Attempt {
    let auth = credentials
        .map(|c| format!("Proxy-Authorization: Basic {}\r\n", BASE64.encode(c)))
        .unwrap_or_default();
    Attempt {
        what: what.to_owned(),
        request: format!("{request_line} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    }
}

/// The table: each attempt on a new connection, and the status it got.
fn demo() -> io::Result<Vec<String>> {
    let web = start_origin()?;
    let admin = start_origin()?; // the internal service nobody may reach
    let (w, a) = (web.addr().port(), admin.addr().port());
    let loopback = Cidr::parse("127.0.0.1/32").expect("a range");
    let policy = Policy {
        ports: vec![80, 443, w, a],
        exceptions: vec![(loopback, w)],
        users: vec![USER.to_owned()],
        ..Policy::default()
    };
    let proxy = start_proxy("127.0.0.1:0", policy, Arc::default())?;
    let ok = Some(USER);
    let attempts = [
        attempt(
            "GET http://127.0.0.1:WEB/, the exception",
            &format!("GET http://127.0.0.1:{w}/"),
            ok,
        ),
        attempt(
            "the same without a password",
            &format!("GET http://127.0.0.1:{w}/"),
            None,
        ),
        attempt(
            "the same with a wrong one",
            &format!("GET http://127.0.0.1:{w}/"),
            Some("alice:guess"),
        ),
        attempt(
            "GET http://127.0.0.1:25/, a port not allowed",
            "GET http://127.0.0.1:25/",
            ok,
        ),
        attempt(
            "GET http://127.0.0.1:ADMIN/, loopback",
            &format!("GET http://127.0.0.1:{a}/"),
            ok,
        ),
        attempt(
            "GET http://localhost:ADMIN/, a name for it",
            &format!("GET http://localhost:{a}/"),
            ok,
        ),
        attempt(
            "GET http://[::ffff:127.0.0.1]:ADMIN/, mapped",
            &format!("GET http://[::ffff:127.0.0.1]:{a}/"),
            ok,
        ),
        attempt(
            "GET http://10.1.2.3/, a private address",
            "GET http://10.1.2.3/",
            ok,
        ),
        attempt(
            "CONNECT localhost:ADMIN",
            &format!("CONNECT localhost:{a}"),
            ok,
        ),
        attempt(
            "CONNECT 127.0.0.1:WEB, the exception",
            &format!("CONNECT 127.0.0.1:{w}"),
            ok,
        ),
    ];
    let mut table = Vec::new();
    for Attempt { what, request } in attempts {
        let mut client = Client::connect(proxy.addr)?;
        client.send(request.as_bytes())?;
        let head = client.head()?;
        table.push(format!("{what:<48} {} {}", head.status, head.reason));
    }
    // A proxy for 10.0.0.0/8 only, asked from 127.0.0.1.
    let office = Policy {
        clients: vec![Cidr::parse("10.0.0.0/8").expect("a range")],
        ..Policy::default()
    };
    let elsewhere = start_proxy("127.0.0.1:0", office, Arc::default())?;
    let mut client = Client::connect(elsewhere.addr)?;
    client.send(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")?;
    let head = client.head()?;
    let what = "a client outside 10.0.0.0/8, its only range";
    table.push(format!("{what:<48} {} {}", head.status, head.reason));
    Ok(table)
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step5_access_control",
        || {
            show(
                "attempt, and the status it got",
                &demo().expect("the demo runs"),
            )
        },
        |addr| start_proxy(addr, Policy::default(), Arc::default()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::net::{IpAddr, SocketAddr};
    use steps_access::internal;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_match_by_prefix_and_mapped_addresses_as_ipv4() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")) && !net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(Cidr::parse("fc00::/7").unwrap().contains(ip("fd12::1")));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("10.0.0.0"), None);
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(internal(ip(inside)), "{inside}");
        }
        for outside in ["93.184.216.34", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!internal(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        let policy = Policy {
            users: vec![USER.to_owned()],
            ..Policy::default()
        };
        let basic = |c: &str| format!("Basic {}", BASE64.encode(c));
        assert!(policy.authorized(Some(&basic(USER))));
        for wrong in ["alice:wonderlan", "alice:wonderland!", "bob:wonderland", ""] {
            assert!(!policy.authorized(Some(&basic(wrong))), "{wrong}");
        }
        assert!(!policy.authorized(None));
        assert!(!policy.authorized(Some("Bearer x")));
        assert!(Policy::default().authorized(None));
    }

    #[test]
    fn the_table_refuses_every_way_in_but_the_exception() {
        configure_for_tests();
        let table = demo().unwrap();
        let statuses: Vec<&str> = table
            .iter()
            .map(|row| {
                row.split_whitespace()
                    .rev()
                    .find(|w| w.parse::<u16>().is_ok())
                    .unwrap()
            })
            .collect();
        assert_eq!(
            statuses,
            ["200", "407", "407", "403", "403", "403", "403", "403", "403", "200", "403"],
            "{table:#?}"
        );
    }

    #[test]
    fn an_unreachable_address_is_passed_over_for_the_next() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pool = Pool::default();
        let upstream = pool.connect(&[closed, origin.addr()]).unwrap();
        assert_eq!(upstream.addr, origin.addr());
        assert!(pool.connect(&[closed]).is_err());
    }

    #[test]
    fn a_name_is_resolved_off_the_workers_and_checked_after() {
        configure_for_tests();
        // On a coroutine: the lookup parks it, and its worker runs others.
        let addrs = may::go!(|| resolve("localhost", 80))
            .join()
            .unwrap()
            .unwrap();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| internal(a.ip())),
            "{addrs:?}"
        );
        let target = Target::parse("http://localhost/").unwrap();
        let refused = admit(&target, &Policy::default(), resolve);
        assert!(matches!(refused, Err(Failure::Refuse(403, _, _))));
    }
}
