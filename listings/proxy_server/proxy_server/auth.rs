//! `Proxy-Authorization: Basic` against the users of `--auth-file`
//! (lines `user:password`; empty lines and lines starting with `#` skipped).

use base64::Engine;

/// The accepted `user:password` pairs, kept as the joined bytes a client's
/// Basic credentials decode to.
#[derive(Debug, Clone)]
pub struct Users {
    pairs: Vec<Vec<u8>>,
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
            pairs.push(line.as_bytes().to_vec());
        }
        if pairs.is_empty() {
            return Err("no user:password line".to_owned());
        }
        Ok(Users { pairs })
    }

    /// Whether a `Proxy-Authorization` header value names a listed user
    /// with the right password.
    pub fn check(&self, header: Option<&str>) -> bool {
        let Some(value) = header else { return false };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return false;
        };
        // Every pair is compared, in full, so the time taken does not say
        // which user or how many leading bytes matched.
        self.pairs
            .iter()
            .fold(false, |found, pair| found | constant_time_eq(pair, &given))
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
        assert!(users.check(Some(&basic("alice:s3cret"))));
        assert!(users.check(Some(&basic("bob:pw:with:colons"))));
        assert!(!users.check(Some(&basic("alice:wrong"))));
        assert!(!users.check(Some(&basic("alice:s3cre"))));
        assert!(!users.check(Some(&basic("carol:s3cret"))));
        assert!(!users.check(None));
        assert!(!users.check(Some("Bearer abc")));
        assert!(!users.check(Some("Basic !!!")));
        assert!(users.check(Some(&basic("alice:s3cret").replace("Basic", "basic"))));
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
