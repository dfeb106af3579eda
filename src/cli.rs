//! Command-line checks the book's programs share.
//!
//! A count of zero (workers, connections, a buffer) or a timeout of zero
//! (which may reads as "none") is not a setting a program can run with:
//! refuse it with one sentence, before anything starts.

use std::num::ParseIntError;
use std::str::FromStr;

/// A clap `value_parser` for whole numbers that refuses 0 with "must be at
/// least 1" (clap's own range check would print the type's whole range).
///
/// ```
/// use may_patterns::cli::at_least_one;
/// assert_eq!(at_least_one::<u64>("3"), Ok(3));
/// assert_eq!(at_least_one::<u64>("0"), Err("must be at least 1".to_owned()));
/// ```
pub fn at_least_one<T>(arg: &str) -> Result<T, String>
where
    T: FromStr<Err = ParseIntError> + PartialOrd + From<u8>,
{
    let n: T = arg.parse().map_err(|e: ParseIntError| e.to_string())?;
    if n < T::from(1) {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_junk_are_refused_with_a_sentence() {
        assert_eq!(at_least_one::<usize>("1"), Ok(1));
        assert_eq!(
            at_least_one::<usize>("0"),
            Err("must be at least 1".to_owned())
        );
        assert_eq!(
            at_least_one::<u64>("-1"),
            Err("invalid digit found in string".to_owned())
        );
    }
}
