//! `Proxy-Authorization: Basic` against the users of `--auth-file`
//! (lines `user:password`; empty lines and lines starting with `#` skipped).

use base64::Engine;

/// The accepted `user:password` pairs, kept joined, as a client's Basic
/// credentials decode to.
#[derive(Debug, Clone)]
pub struct Users {
    pairs: Vec<String>,
}

impl Users {
    /// Parse an auth file's text; a line without `:` is an error naming it.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !line.contains(':') {
                return Err(format!("line {}: expected user:password", n + 1));
            }
            pairs.push(line.to_owned());
        }
        if pairs.is_empty() {
            return Err("no user:password line".to_owned());
        }
        Ok(Users { pairs })
    }

    /// The listed user a `Proxy-Authorization` header value names with the
    /// right password (for the access log), or `None`.
    pub fn check(&self, header: Option<&str>) -> Option<&str> {
        let (scheme, token) = header?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let given = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        // Every pair is compared, in full, so the time taken does not say
        // which user or how many leading bytes matched.
        let matched = self.pairs.iter().fold(None, |found, pair| {
            match constant_time_eq(pair.as_bytes(), &given) {
                true => Some(pair.as_str()),
                false => found,
            }
        })?;
        // A Basic user name holds no `:` (RFC 7617 2): the first one ends it.
        matched.split_once(':').map(|(user, _)| user)
    }
}

/// Equal bytes, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn right_and_wrong_credentials() {
        let users = Users::parse("# users\nalice:s3cret\n\nbob:pw:with:colons\n").unwrap();
        assert_eq!(users.check(Some(&basic("alice:s3cret"))), Some("alice"));
        assert_eq!(users.check(Some(&basic("bob:pw:with:colons"))), Some("bob"));
        assert_eq!(users.check(Some(&basic("alice:wrong"))), None);
        assert_eq!(users.check(Some(&basic("alice:s3cre"))), None);
        assert_eq!(users.check(Some(&basic("carol:s3cret"))), None);
        assert_eq!(users.check(None), None);
        assert_eq!(users.check(Some("Bearer abc")), None);
        assert_eq!(users.check(Some("Basic !!!")), None);
        let lower = basic("alice:s3cret").replace("Basic", "basic");
        assert_eq!(users.check(Some(&lower)), Some("alice"));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Users::parse("alice\n").unwrap_err().contains("line 1"));
        assert!(Users::parse("# nobody\n").is_err());
    }

    #[test]
    fn constant_time_eq_compares_everything() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
