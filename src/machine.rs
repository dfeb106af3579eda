//! Where and when a measurement ran, for the tables the book includes: a
//! number means little without the machine and the date that produced it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The CPUs this process may use, their model (from /proc/cpuinfo), the OS
/// and the architecture: "2 CPUs (AMD EPYC), linux x86_64".
pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpus} CPUs ({cpu}), {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    date_of_day(i64::try_from(secs / 86_400).expect("days fit in i64"))
}

/// The date `days` after 1970-01-01 (H. Hinnant's civil-from-days algorithm).
fn date_of_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_since_1970_become_dates() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(59), "1970-03-01");
        assert_eq!(date_of_day(11_016), "2000-02-29"); // a leap day
        assert_eq!(date_of_day(20_423), "2025-12-01");
    }

    #[test]
    fn the_machine_names_its_cpus() {
        assert!(describe().contains(" CPUs ("), "{}", describe());
    }
}
