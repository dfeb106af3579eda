//! Which limit a request counts against: its client's IP address, or the
//! value of a header (an API key).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use may_patterns::http::header;

// ANCHOR: keys
/// What `--key` says a limit is per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// The client's IP address (not its port: one client, many connections).
    Ip,
    /// The value of this request header.
    Header(String),
}

/// The longest header value used as a key. Every key the limiter holds is
/// at most this long, so `--max-keys` bounds the memory keys take.
pub const MAX_KEY_BYTES: usize = 128;

/// One client, as the limiter counts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    Header(Box<str>),
}

/// The key of a request from `peer`, or why the request has none: a
/// missing or oversized key header is the client's error (400), not a
/// shared anonymous bucket that every key-less client would fight over.
pub fn key_of(spec: &KeySpec, peer: IpAddr, headers: &[(String, String)]) -> Result<Key, String> {
    match spec {
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d;
        // count it as a.b.c.d, the address it has on IPv4.
        KeySpec::Ip => Ok(Key::Ip(peer.to_canonical())),
        KeySpec::Header(name) => match header(headers, name).map(str::trim) {
            None | Some("") => Err(format!("missing the {name} header this gateway limits by")),
            Some(value) if value.len() > MAX_KEY_BYTES => Err(format!(
                "the {name} header is longer than {MAX_KEY_BYTES} bytes"
            )),
            Some(value) => Ok(Key::Header(value.into())),
        },
    }
}
// ANCHOR_END: keys

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ip(ip) => write!(f, "{ip}"),
            Key::Header(value) => write!(f, "{value:?}"),
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Ip => write!(f, "client address"),
            KeySpec::Header(name) => write!(f, "{name} header"),
        }
    }
}

/// A character HTTP allows in a header name (RFC 9110's `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<KeySpec, String> {
        if text == "ip" {
            return Ok(KeySpec::Ip);
        }
        let Some(name) = text.strip_prefix("header:") else {
            return Err(format!("expected `ip` or `header:NAME`, not {text:?}"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(format!(
                "{name:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
            ));
        }
        Ok(KeySpec::Header(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_ip_key_ignores_the_port_and_the_v4_mapping() {
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let plain: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            key_of(&KeySpec::Ip, mapped, &[]),
            key_of(&KeySpec::Ip, plain, &[])
        );
    }

    #[test]
    fn a_header_key_is_the_trimmed_value_and_must_be_there() {
        let spec: KeySpec = "header:X-Api-Key".parse().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let found = key_of(&spec, ip, &headers(&[("x-api-key", " alice ")]));
        assert_eq!(found, Ok(Key::Header("alice".into())));
        let missing = key_of(&spec, ip, &headers(&[("X-Other", "1")])).unwrap_err();
        assert!(
            missing.contains("missing the X-Api-Key header"),
            "{missing}"
        );
        let empty = key_of(&spec, ip, &headers(&[("X-Api-Key", "  ")])).unwrap_err();
        assert!(empty.contains("missing"), "{empty}");
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let too_long = key_of(&spec, ip, &headers(&[("X-Api-Key", &long)])).unwrap_err();
        assert!(too_long.contains("longer than 128 bytes"), "{too_long}");
    }

    #[test]
    fn a_key_spec_is_ip_or_a_header_name() {
        assert_eq!("ip".parse(), Ok(KeySpec::Ip));
        assert!("header:".parse::<KeySpec>().is_err());
        assert!("header:a:b".parse::<KeySpec>().is_err());
        assert!("IP".parse::<KeySpec>().is_err());
    }
}
