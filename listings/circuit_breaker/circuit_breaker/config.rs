//! The command line: clap flags, the phase script and the shares, each
//! refused with one sentence when it cannot work (clap then exits with 2).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use may_patterns::breaker::{BreakerConfig, RetryPolicy, Window};
use may_patterns::cli::at_least_one;

// ANCHOR: cli
/// Drive a backend through scripted phases, call it through a timeout,
/// retries, a retry budget and a circuit breaker, and print what happened
/// interval by interval.
#[derive(Parser, Debug)]
#[command(name = "circuit_breaker")]
pub struct Cli {
    /// Call this backend (IP:port) instead of the built-in one. The phases
    /// then only label the timeline: this program cannot change another
    /// process's backend.
    #[arg(long)]
    pub backend: Option<SocketAddr>,
    /// What the built-in backend does, and for how long, as
    /// PHASE:DURATION,... Phases: healthy (2ms), slow (40ms, 5% of requests
    /// 150ms), failing (500 after 2ms), hanging (no answer), recovering
    /// (10ms, cold but answering).
    #[arg(long, value_name = "SCRIPT",
          default_value = "healthy:3s,slow:2s,failing:3s,recovering:3s",
          value_parser = parse_phases)]
    pub phases: Script,
    /// One timeline row per interval (and a new row at each phase).
    #[arg(long, default_value = "500ms", value_parser = positive_duration)]
    pub interval: Duration,
    /// Calls per second, all callers together.
    #[arg(long, default_value_t = 200, value_parser = at_least_one::<u32>)]
    pub rate: u32,
    /// Coroutines making calls; each makes one call every concurrency/rate.
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<u32>)]
    pub concurrency: u32,
    /// Each attempt's timeout, for the connect and for every read and write
    /// (long enough that a busy machine's pause is not taken for a failure).
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Retries after a failed attempt (0: none), with exponential backoff
    /// and full jitter.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// The first retry's backoff ceiling; it doubles per retry, up to 1s.
    #[arg(long, default_value = "10ms", value_parser = positive_duration)]
    pub backoff: Duration,
    /// Retries at most this share of calls (over 10 s, plus 10 a second),
    /// as Finagle does; `off` for no budget.
    #[arg(long, default_value = "20%", value_parser = budget)]
    pub budget: Budget,
    /// Call without a circuit breaker (to compare).
    #[arg(long)]
    pub no_breaker: bool,
    /// Trip when this share of the window's calls failed.
    #[arg(long, default_value = "50%", value_parser = share)]
    pub failure_rate: f64,
    /// A call slower than this counts as slow.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub slow_call: Duration,
    /// Trip when this share of the window's calls was slow (the default:
    /// only when every call is).
    #[arg(long, default_value = "100%", value_parser = share)]
    pub slow_call_rate: f64,
    /// The breaker's window: a number of calls (20) or a time (10s).
    #[arg(long, default_value = "20", value_parser = window)]
    pub window: Window,
    /// No rate counts before the window holds this many calls.
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<u32>)]
    pub min_calls: u32,
    /// How long the breaker stays open before it lets probes through.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub open_for: Duration,
    /// Probe calls the half-open breaker lets through.
    #[arg(long, default_value_t = 3, value_parser = at_least_one::<u32>)]
    pub half_open_calls: u32,
    /// Seed of the backoff jitter and of the built-in backend's slow requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the timeline as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Also draw the timeline as an SVG picture into this file.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
}
// ANCHOR_END: cli

// ANCHOR: phases
/// What the built-in backend does during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    Healthy,
    Slow,
    Failing,
    Hanging,
    Recovering,
}

/// One phase of the script: a kind, for a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub kind: PhaseKind,
    pub duration: Duration,
}

impl PhaseKind {
    pub const ALL: [PhaseKind; 5] = [
        PhaseKind::Healthy,
        PhaseKind::Slow,
        PhaseKind::Failing,
        PhaseKind::Hanging,
        PhaseKind::Recovering,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Healthy => "healthy",
            PhaseKind::Slow => "slow",
            PhaseKind::Failing => "failing",
            PhaseKind::Hanging => "hanging",
            PhaseKind::Recovering => "recovering",
        }
    }
}

impl FromStr for PhaseKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        PhaseKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = PhaseKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown phase `{name}`; the phases are {}",
                    names.join(", ")
                )
            })
    }
}

/// The phases in order, as `--phases` gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(pub Vec<Phase>);

/// `healthy:3s,failing:2s` into phases; the first mistake in one sentence.
pub fn parse_phases(script: &str) -> Result<Script, String> {
    if script.trim().is_empty() {
        return Err("the phase script is empty; write it as healthy:3s,failing:2s".into());
    }
    let phases = script.split(',').map(|part| parse_phase(part.trim()));
    phases.collect::<Result<_, _>>().map(Script)
}

fn parse_phase(part: &str) -> Result<Phase, String> {
    let Some((name, duration)) = part.split_once(':') else {
        return Err(format!(
            "phase `{part}` has no duration; write it as {part}:3s"
        ));
    };
    let kind: PhaseKind = name.parse()?;
    let duration = humantime::parse_duration(duration).map_err(|_| {
        format!("phase `{part}`: `{duration}` is not a duration (write 3s or 500ms)")
    })?;
    if duration < Duration::from_millis(1) {
        return Err(format!("phase `{part}` lasts less than 1ms"));
    }
    Ok(Phase { kind, duration })
}
// ANCHOR_END: phases

/// A retry budget's share of calls, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Off,
    Share(f64),
}

/// A share as `50%` or `0.5`, between 0 and 1.
pub fn share(text: &str) -> Result<f64, String> {
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a share (write 50% or 0.5)"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{text}` is not between 0% and 100%"))
    }
}

fn budget(text: &str) -> Result<Budget, String> {
    match text {
        "off" => Ok(Budget::Off),
        _ => share(text).map(Budget::Share),
    }
}

/// A count window (`20`) or a time window (`10s`).
fn window(text: &str) -> Result<Window, String> {
    if let Ok(calls) = text.parse::<u32>() {
        return match calls {
            0 => Err("a window of 0 calls holds nothing".into()),
            n => Ok(Window::Count(n)),
        };
    }
    match humantime::parse_duration(text) {
        Ok(time) if time >= Duration::from_millis(1) => Ok(Window::Time(time)),
        Ok(_) => Err("a time window must be at least 1ms".into()),
        Err(_) => Err(format!(
            "`{text}` is neither a number of calls (20) nor a time (10s)"
        )),
    }
}

/// A duration that is not zero, which may would read as "no timeout".
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be longer than 0".into()),
        duration => Ok(duration),
    }
}

impl Cli {
    /// The breaker's settings from the flags (the library checks them).
    pub fn breaker_config(&self) -> BreakerConfig {
        BreakerConfig {
            window: self.window,
            min_calls: self.min_calls,
            failure_rate: self.failure_rate,
            slow_call: self.slow_call,
            slow_call_rate: self.slow_call_rate,
            open_for: self.open_for,
            half_open_calls: self.half_open_calls,
        }
    }

    /// Exponential backoff from `--backoff`, capped at 1 s, full jitter.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::full_jitter(self.retries, self.backoff, Duration::from_secs(1))
    }

    /// The time between two calls of one caller, or why it cannot be kept.
    pub fn caller_period(&self) -> Result<Duration, String> {
        let period = Duration::from_secs(1) * self.concurrency / self.rate;
        if period < Duration::from_millis(1) {
            // may cannot sleep less than 1 ms (see the scatter-gather chapter).
            return Err(format!(
                "--rate {} with --concurrency {} asks each caller for more than 1000 calls a second; raise --concurrency",
                self.rate, self.concurrency
            ));
        }
        Ok(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_script_parses_and_every_mistake_gets_a_sentence() {
        let phases = parse_phases("healthy:3s, failing:500ms").unwrap().0;
        assert_eq!(
            phases,
            [
                Phase {
                    kind: PhaseKind::Healthy,
                    duration: Duration::from_secs(3)
                },
                Phase {
                    kind: PhaseKind::Failing,
                    duration: Duration::from_millis(500)
                }
            ]
        );
        let cases = [
            ("", "the phase script is empty; write it as healthy:3s,failing:2s"),
            ("healthy", "phase `healthy` has no duration; write it as healthy:3s"),
            (
                "healthy:3s,broken:1s",
                "unknown phase `broken`; the phases are healthy, slow, failing, hanging, recovering",
            ),
            (
                "slow:soon",
                "phase `slow:soon`: `soon` is not a duration (write 3s or 500ms)",
            ),
            ("failing:0s", "phase `failing:0s` lasts less than 1ms"),
        ];
        for (script, sentence) in cases {
            assert_eq!(parse_phases(script).unwrap_err(), sentence, "{script:?}");
        }
    }

    #[test]
    fn shares_windows_and_budgets_parse_or_are_refused() {
        assert_eq!(share("50%"), Ok(0.5));
        assert_eq!(share("0.25"), Ok(0.25));
        assert_eq!(
            share("150%").unwrap_err(),
            "`150%` is not between 0% and 100%"
        );
        assert_eq!(
            share("half").unwrap_err(),
            "`half` is not a share (write 50% or 0.5)"
        );
        assert_eq!(window("20"), Ok(Window::Count(20)));
        assert_eq!(window("10s"), Ok(Window::Time(Duration::from_secs(10))));
        assert!(window("0").is_err());
        assert_eq!(budget("off"), Ok(Budget::Off));
        assert_eq!(budget("10%"), Ok(Budget::Share(0.1)));
    }

    #[test]
    fn the_defaults_make_a_valid_breaker_and_a_keepable_rate() {
        let cli = Cli::try_parse_from(["circuit_breaker"]).unwrap();
        assert_eq!(cli.breaker_config().validate(), Ok(()));
        assert_eq!(cli.caller_period(), Ok(Duration::from_millis(50)));
        let fast = Cli::try_parse_from(["circuit_breaker", "--rate", "5000", "--concurrency", "2"])
            .unwrap();
        assert!(fast
            .caller_period()
            .unwrap_err()
            .contains("raise --concurrency"));
    }
}
