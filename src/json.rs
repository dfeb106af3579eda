//! Bound the nesting of JSON before a recursive parser sees it.
//!
//! serde_json parses (and drops, and prints) a `serde_json::Value` by
//! recursion, one group of stack frames per level of `[` or `{`, and stops
//! only at depth 128: a limit sized for the megabytes of an OS thread's
//! stack, not for a 32 KiB coroutine. A debug build of the stream processor
//! overflowed its connection coroutine on a line nested 16 deep. So every
//! program in this book that parses JSON it did not write runs
//! [`check_depth`] on the raw bytes first and rejects what is nested deeper
//! than its records need, then sizes the parsing coroutine's stack from a
//! measurement at that depth.
//!
//! The scan is one pass over the bytes with no recursion and no allocation.
//! It does not validate JSON (the parser does that); it follows the same
//! string rules as the parser, so the depth a parser reaches before it
//! accepts or rejects the input is never more than the depth counted here.

use std::fmt;

/// A document nested deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    /// The limit that was passed.
    pub max_depth: usize,
    /// Where the first bracket past the limit is, in bytes from the start.
    pub offset: usize,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JSON nested deeper than {} levels (byte {})",
            self.max_depth, self.offset
        )
    }
}

impl std::error::Error for TooDeep {}

/// `Ok` if no `[` or `{` outside a string opens a level deeper than
/// `max_depth` (`{"a":1}` is depth 1, `[[1]]` depth 2).
///
/// ```
/// use may_patterns::json::check_depth;
/// assert!(check_depth(br#"{"a":[1,{"b":2}]}"#, 3).is_ok());
/// assert_eq!(check_depth(b"[[[]]]", 2).unwrap_err().offset, 2);
/// assert!(check_depth(br#"{"a":"[[[[ not nesting"}"#, 1).is_ok());
/// ```
pub fn check_depth(json: &[u8], max_depth: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    for (offset, &byte) in json.iter().enumerate() {
        if in_string {
            // Inside a string only an unescaped quote matters; a backslash
            // makes the next byte (a quote, a backslash, `u`...) plain text.
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(TooDeep { max_depth, offset });
                }
            }
            // An unmatched closer is the parser's error to report.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"ts":1,"x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn counts_arrays_and_objects_and_accepts_up_to_the_limit() {
        assert!(check_depth(b"", 0).is_ok());
        assert!(check_depth(b"42", 0).is_ok());
        assert!(check_depth(b"[]", 0).is_err());
        assert!(check_depth(nested(7).as_bytes(), 8).is_ok(), "object + 7");
        let err = check_depth(nested(8).as_bytes(), 8).unwrap_err();
        assert_eq!(err.max_depth, 8);
        assert_eq!(
            &nested(8)[err.offset..err.offset + 2],
            "[]",
            "the 9th level"
        );
        assert_eq!(
            err.to_string(),
            format!("JSON nested deeper than 8 levels (byte {})", err.offset)
        );
        let objects = r#"{"a":{"b":{"c":{}}}}"#;
        assert!(check_depth(objects.as_bytes(), 4).is_ok());
        assert!(check_depth(objects.as_bytes(), 3).is_err());
    }

    #[test]
    fn siblings_do_not_add_up_closers_bring_the_depth_back() {
        let wide = format!("[{}]", ["[[1]]"; 100].join(","));
        assert!(check_depth(wide.as_bytes(), 3).is_ok());
        assert!(check_depth(wide.as_bytes(), 2).is_err());
        // An unmatched closer does not let later brackets go deeper.
        assert!(check_depth(b"]]]][[", 2).is_ok());
        assert!(check_depth(b"]]]][[[", 2).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert!(check_depth(br#"{"k":"[[[{{{"}"#, 1).is_ok());
        assert!(check_depth(br#"{"[[[[":"]]]]"}"#, 1).is_ok());
        assert!(check_depth(br#"["{", "[", "}"]"#, 1).is_ok());
    }

    #[test]
    fn escapes_inside_strings_are_honoured() {
        // \" does not end the string, so the brackets after it are text.
        assert!(check_depth(br#"{"k":"a\"[[[[\""}"#, 1).is_ok());
        // \\ is a backslash: the quote after it does end the string.
        assert!(check_depth(br#"{"k":"a\\"}"#, 1).is_ok());
        assert!(check_depth(br#"{"k":"a\\","x":[[]]}"#, 2).is_err());
        assert!(check_depth(br#"{"k":"\u005b\\\"["}"#, 1).is_ok());
        // An unterminated string hides everything after it; the parser
        // rejects such input without going deeper.
        assert!(check_depth(br#"{"k":"[[[[[["#, 1).is_ok());
    }

    #[test]
    fn agrees_with_serde_json_on_what_it_lets_through() {
        // Whatever passes at depth d, serde_json parses within depth d: a
        // document it accepts nests no deeper than the scan counted.
        fn parser_depth(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Array(a) => 1 + a.iter().map(parser_depth).max().unwrap_or(0),
                serde_json::Value::Object(o) => 1 + o.values().map(parser_depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        let samples = [
            nested(3),
            r#"{"a":"\"[","b":[{"c":"]"},[[2]]]}"#.to_owned(),
            r#"["\\",["\\\"",[{}]]]"#.to_owned(),
        ];
        for text in samples {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let depth = parser_depth(&value);
            assert!(check_depth(text.as_bytes(), depth).is_ok(), "{text}");
            assert!(check_depth(text.as_bytes(), depth - 1).is_err(), "{text}");
        }
    }
}
