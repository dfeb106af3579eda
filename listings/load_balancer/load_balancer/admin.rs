//! The balancer's own paths: the stats page and draining a backend by
//! hand. They are answered only to clients on loopback, since anyone who
//! can drain every backend can take the service down.

use std::net::{IpAddr, SocketAddr};

use may_patterns::balance::{to_json, Pool};

/// Draining by hand: `POST /_lb/drain?backend=ADDR`.
pub const DRAIN_PATH: &str = "/_lb/drain";
/// `POST /_lb/undrain?backend=ADDR`.
pub const UNDRAIN_PATH: &str = "/_lb/undrain";

/// Which admin path a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Stats,
    Drain,
    Undrain,
}

/// The admin path `path` (without its query) names, if any.
pub fn route(path: &str, stats_path: &str) -> Option<Admin> {
    match path {
        p if p == stats_path => Some(Admin::Stats),
        DRAIN_PATH => Some(Admin::Drain),
        UNDRAIN_PATH => Some(Admin::Undrain),
        _ => None,
    }
}

/// Whether a client at `ip` may use the admin paths: loopback only (an
/// IPv4 client of a dual-stack listener shows as `::ffff:127.0.0.1`).
pub fn allowed(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// A complete answer, for the handler to write.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    /// For a 405: the method that is allowed.
    pub allow: Option<&'static str>,
    pub body: String,
}

fn text(status: u16, reason: &'static str, body: String) -> Answer {
    Answer {
        status,
        reason,
        content_type: "text/plain; charset=utf-8",
        allow: None,
        body,
    }
}

/// Answer `method` on `admin` (the request's query is `query`).
pub fn answer(admin: Admin, method: &str, query: Option<&str>, pool: &Pool) -> Answer {
    let wanted = match admin {
        Admin::Stats => "GET",
        Admin::Drain | Admin::Undrain => "POST",
    };
    if !method.eq_ignore_ascii_case(wanted) {
        return Answer {
            allow: Some(wanted),
            ..text(405, "Method Not Allowed", format!("use {wanted}\n"))
        };
    }
    if admin == Admin::Stats {
        return Answer {
            content_type: "application/json",
            ..text(200, "OK", to_json(&pool.stats()))
        };
    }
    let Some(backend) = query.and_then(|q| param(q, "backend")) else {
        return text(
            400,
            "Bad Request",
            "name the backend: ?backend=ADDR\n".to_owned(),
        );
    };
    let addrs = matching(pool, &backend);
    if addrs.is_empty() {
        return text(404, "Not Found", format!("no backend {backend}\n"));
    }
    let verb = match admin {
        Admin::Drain => "drained",
        _ => "undrained",
    };
    let mut body = String::new();
    for addr in addrs {
        match admin {
            Admin::Drain => pool.drain(addr),
            _ => pool.undrain(addr),
        };
        body.push_str(&format!("{verb} {addr}\n"));
    }
    text(200, "OK", body)
}

/// The backends `backend` names: one address, or every address of a name
/// given to `--backend`.
fn matching(pool: &Pool, backend: &str) -> Vec<SocketAddr> {
    if let Ok(addr) = backend.parse::<SocketAddr>() {
        return pool.addrs().into_iter().filter(|&a| a == addr).collect();
    }
    pool.stats()
        .into_iter()
        .filter(|s| s.name == backend)
        .map(|s| s.addr)
        .collect()
}

/// The first value of `name` in a query string, percent-decoded (curl
/// leaves `:` as it is, a browser form sends `%3A`).
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode(v))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::balance::{BackendConfig, PoolConfig, State};
    use may_patterns::clock::ManualClock;
    use std::sync::Arc;

    fn pool() -> Pool {
        let backends = vec![
            BackendConfig::new("127.0.0.1:9001".parse().unwrap()),
            BackendConfig {
                name: "web:9002".to_owned(),
                ..BackendConfig::new("127.0.0.1:9002".parse().unwrap())
            },
        ];
        Pool::new(
            backends,
            PoolConfig::default(),
            Arc::new(ManualClock::new()),
        )
    }

    fn states(pool: &Pool) -> Vec<State> {
        pool.stats().iter().map(|s| s.state).collect()
    }

    #[test]
    fn only_loopback_clients_may_use_admin_paths() {
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(allowed(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.2",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "0.0.0.0",
        ] {
            assert!(!allowed(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn routes_are_whole_paths() {
        assert_eq!(route("/_lb/stats", "/_lb/stats"), Some(Admin::Stats));
        assert_eq!(route("/status", "/status"), Some(Admin::Stats));
        assert_eq!(route("/_lb/drain", "/status"), Some(Admin::Drain));
        assert_eq!(route("/_lb/undrain", "/status"), Some(Admin::Undrain));
        assert_eq!(route("/_lb/stats/x", "/_lb/stats"), None);
        assert_eq!(route("/", "/_lb/stats"), None);
    }

    #[test]
    fn drain_and_undrain_by_address_or_name() {
        let pool = pool();
        let a = answer(
            Admin::Drain,
            "POST",
            Some("backend=127.0.0.1%3A9001"),
            &pool,
        );
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "drained 127.0.0.1:9001\n")
        );
        assert_eq!(states(&pool), [State::Draining, State::Up]);
        let a = answer(Admin::Drain, "POST", Some("x=1&backend=web:9002"), &pool);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(states(&pool), [State::Draining, State::Draining]);
        answer(
            Admin::Undrain,
            "POST",
            Some("backend=127.0.0.1:9001"),
            &pool,
        );
        assert_eq!(states(&pool), [State::Up, State::Draining]);
    }

    #[test]
    fn bad_admin_requests_say_why() {
        let pool = pool();
        let a = answer(Admin::Drain, "GET", Some("backend=127.0.0.1:9001"), &pool);
        assert_eq!((a.status, a.allow), (405, Some("POST")));
        assert_eq!(answer(Admin::Drain, "POST", None, &pool).status, 400);
        let a = answer(Admin::Drain, "POST", Some("backend=127.0.0.1:1"), &pool);
        assert_eq!(
            (a.status, a.body.as_str()),
            (404, "no backend 127.0.0.1:1\n")
        );
        assert_eq!(
            answer(Admin::Drain, "POST", Some("backend=%zz"), &pool).status,
            400
        );
        assert_eq!(answer(Admin::Stats, "POST", None, &pool).allow, Some("GET"));
        assert_eq!(states(&pool), [State::Up, State::Up], "nothing drained");
    }

    #[test]
    fn stats_are_the_pool_as_json() {
        let pool = pool();
        let a = answer(Admin::Stats, "GET", None, &pool);
        assert_eq!((a.status, a.content_type), (200, "application/json"));
        let parsed: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(parsed[1]["name"], "web:9002");
        assert_eq!(parsed[0]["state"], "up");
    }
}
