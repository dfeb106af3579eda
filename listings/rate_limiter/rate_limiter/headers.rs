//! What a client is told about its limit: the `RateLimit-*` fields on
//! every response, and `Retry-After` on a 429.

use std::time::Duration;

use may_patterns::ratelimit::{Decision, Quota};

// ANCHOR: fields
/// A duration as HTTP's delta-seconds: whole seconds, rounded **up**, so a
/// client that waits what it was told is never early (RFC 9110, 10.2.3).
pub fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// The fields of draft-ietf-httpapi-ratelimit-headers (up to -06) for
/// `decision`, plus `Retry-After` when it denies:
///
/// - `RateLimit-Limit`: the burst, the most a key can have at once, so
///   `RateLimit-Remaining` never exceeds it;
/// - `RateLimit-Remaining`: what could still be admitted now (0 on a 429);
/// - `RateLimit-Reset`: seconds until the full burst is available again.
pub fn rate_limit_fields(quota: &Quota, decision: &Decision) -> Vec<(&'static str, String)> {
    let (remaining, reset, retry_after) = match *decision {
        Decision::Allowed { remaining, reset }
        | Decision::Queued {
            remaining, reset, ..
        } => (remaining, reset, None),
        Decision::Denied { retry_after, reset } => (0, reset, Some(retry_after)),
    };
    let mut fields = vec![
        ("RateLimit-Limit", quota.burst().to_string()),
        ("RateLimit-Remaining", remaining.to_string()),
        ("RateLimit-Reset", whole_seconds_up(reset).to_string()),
    ];
    if let Some(retry_after) = retry_after {
        fields.push(("Retry-After", whole_seconds_up(retry_after).to_string()));
    }
    fields
}
// ANCHOR_END: fields

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_seconds_round_up() {
        let ms = Duration::from_millis;
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_nanos(1)), 1);
        assert_eq!(whole_seconds_up(ms(1_000)), 1);
        assert_eq!(whole_seconds_up(ms(1_001)), 2);
        assert_eq!(whole_seconds_up(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_denial_carries_retry_after_and_no_remaining() {
        let quota = Quota::per_second(5, 20).unwrap();
        let denied = Decision::Denied {
            retry_after: Duration::from_millis(200),
            reset: Duration::from_millis(3_900),
        };
        assert_eq!(
            rate_limit_fields(&quota, &denied),
            [
                ("RateLimit-Limit", "20".to_owned()),
                ("RateLimit-Remaining", "0".to_owned()),
                ("RateLimit-Reset", "4".to_owned()),
                ("Retry-After", "1".to_owned()),
            ]
        );
        let allowed = Decision::Allowed {
            remaining: 19,
            reset: Duration::from_millis(200),
        };
        let fields = rate_limit_fields(&quota, &allowed);
        assert_eq!(fields[1], ("RateLimit-Remaining", "19".to_owned()));
        assert!(fields.iter().all(|(name, _)| *name != "Retry-After"));
    }
}
