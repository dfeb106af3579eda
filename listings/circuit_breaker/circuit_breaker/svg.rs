//! The timeline as a picture: the breaker's open and half-open spans as
//! shaded bands, the phases along the top, the success rate (left axis) and
//! the p50 and p99 latency (right axis, logarithmic) as lines.
//!
//! Everything is drawn in `currentColor`, with shades made by opacity, so
//! the picture inlined in a page takes the text colour of the page's theme,
//! light or dark. It has no blank line, so Markdown keeps it one HTML block.

use std::fmt::Write as _;

use may_patterns::breaker::State;

use crate::config::Phase;
use crate::phases::starts;
use crate::timeline::Timeline;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 330.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 696.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 244.0;
/// The latency axis, 100 ns (a rejected call takes less than a µs) to 1 s,
/// one tick per decade: (ms, label).
const LATENCY_TICKS: [(f64, &str); 8] = [
    (0.0001, "100ns"),
    (0.001, "1µs"),
    (0.01, "10µs"),
    (0.1, "100µs"),
    (1.0, "1ms"),
    (10.0, "10ms"),
    (100.0, "100ms"),
    (1000.0, "1s"),
];

// ANCHOR: render
/// The picture of `timeline`, a run of `phases`.
pub fn render(timeline: &Timeline, phases: &[Phase]) -> String {
    let (starts, end) = starts(phases);
    let end_ms = end.as_secs_f64() * 1000.0;
    let x = |t_ms: f64| LEFT + (RIGHT - LEFT) * (t_ms / end_ms).clamp(0.0, 1.0);
    let rate_y = |rate: f64| BOTTOM - (BOTTOM - TOP) * rate;
    let latency_y = |ms: f64| {
        let (low, high) = (
            LATENCY_TICKS[0].0.log10(),
            LATENCY_TICKS[LATENCY_TICKS.len() - 1].0.log10(),
        );
        let share = (ms.max(LATENCY_TICKS[0].0).log10() - low) / (high - low);
        BOTTOM - (BOTTOM - TOP) * share.min(1.0)
    };
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" role="img" aria-label="Timeline of a circuit breaker run: success rate, p50 and p99 latency, breaker state bands and phases" style="max-width:100%;font-family:sans-serif;font-size:12px">"#
    )
    .unwrap();
    // The breaker's spans: each state lasts from its transition to the next.
    let mut state = (State::Closed, 0.0);
    let mut spans = Vec::new();
    for t in &timeline.transitions {
        spans.push((state.0, state.1, t.at_ms));
        state = (t.to, t.at_ms);
    }
    spans.push((state.0, state.1, end_ms));
    for (state, from, to) in spans {
        let (class, opacity) = match state {
            State::Closed => continue,
            State::Open => ("state-open", 0.22),
            State::HalfOpen => ("state-half-open", 0.45),
        };
        // A half-open span can last a few ms: at least 2 px, so it shows.
        let width = (x(to) - x(from)).max(2.0);
        writeln!(
            svg,
            r#"<rect class="{class}" x="{:.1}" y="{TOP}" width="{width:.1}" height="{}" fill="currentColor" fill-opacity="{opacity}"/>"#,
            x(from),
            BOTTOM - TOP
        )
        .unwrap();
    }
    // Phases: a dashed line where each begins, its name above the plot.
    for (phase, start) in phases.iter().zip(starts) {
        let from = start.as_secs_f64() * 1000.0;
        let to = from + phase.duration.as_secs_f64() * 1000.0;
        if from > 0.0 {
            writeln!(
                svg,
                r#"<line x1="{0:.1}" y1="24" x2="{0:.1}" y2="{BOTTOM}" stroke="currentColor" stroke-dasharray="3 3" stroke-opacity="0.6"/>"#,
                x(from)
            )
            .unwrap();
        }
        writeln!(
            svg,
            r#"<text class="phase" x="{:.1}" y="36" text-anchor="middle" fill="currentColor">{}</text>"#,
            (x(from) + x(to)) / 2.0,
            phase.kind.name()
        )
        .unwrap();
    }
    axes(&mut svg, end_ms, &x, &rate_y, &latency_y);
    // The series as steps: each row's value across the row's interval.
    let points = |value: &dyn Fn(&crate::timeline::Row) -> Option<f64>| {
        let points: Vec<String> = timeline
            .rows
            .iter()
            .filter_map(|row| {
                let y = value(row)?;
                Some(format!(
                    "{:.1},{y:.1} {:.1},{y:.1}",
                    x(row.from_ms),
                    x(row.to_ms)
                ))
            })
            .collect();
        points.join(" ")
    };
    let series = [
        (
            "success-rate",
            "2.5",
            "",
            points(&|r| r.success_rate.map(rate_y)),
        ),
        (
            "p50",
            "1.5",
            r#" stroke-dasharray="1 3""#,
            points(&|r| r.p50_ms.map(latency_y)),
        ),
        (
            "p99",
            "1.5",
            r#" stroke-dasharray="6 3""#,
            points(&|r| r.p99_ms.map(latency_y)),
        ),
    ];
    for (class, width, dash, points) in series {
        writeln!(
            svg,
            r#"<polyline class="{class}" points="{points}" fill="none" stroke="currentColor" stroke-width="{width}"{dash}/>"#
        )
        .unwrap();
    }
    legend(&mut svg);
    svg.push_str("</svg>\n");
    svg
}
// ANCHOR_END: render

/// The frame, the time axis below, success rate left, latency right.
fn axes(
    svg: &mut String,
    end_ms: f64,
    x: &dyn Fn(f64) -> f64,
    rate_y: &dyn Fn(f64) -> f64,
    latency_y: &dyn Fn(f64) -> f64,
) {
    writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="currentColor" stroke-opacity="0.6"/>"#,
        RIGHT - LEFT,
        BOTTOM - TOP
    )
    .unwrap();
    // About ten ticks: every 1, 2, 5, 10... seconds.
    let step_s = [1.0, 2.0, 5.0, 10.0, 20.0, 60.0]
        .into_iter()
        .find(|step| end_ms / 1000.0 / step <= 12.0)
        .unwrap_or(120.0);
    let mut t = 0.0;
    while t * 1000.0 <= end_ms {
        writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" fill="currentColor">{t}s</text>"#,
            x(t * 1000.0),
            BOTTOM + 16.0
        )
        .unwrap();
        t += step_s;
    }
    for rate in [0.0, 0.5, 1.0] {
        writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end" fill="currentColor">{}%</text>"#,
            LEFT - 6.0,
            rate_y(rate) + 4.0,
            rate * 100.0
        )
        .unwrap();
    }
    for (ms, label) in LATENCY_TICKS {
        writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" fill="currentColor">{label}</text>"#,
            RIGHT + 6.0,
            latency_y(ms) + 4.0
        )
        .unwrap();
    }
    writeln!(
        svg,
        r#"<text x="{}" y="16" fill="currentColor">success rate</text><text x="{}" y="16" text-anchor="end" fill="currentColor">latency (log)</text>"#,
        LEFT - 40.0,
        WIDTH - 4.0
    )
    .unwrap();
}

/// What each line and band means, under the time axis.
fn legend(svg: &mut String) {
    let y = BOTTOM + 44.0;
    let lines = [
        ("success rate", "2.5", ""),
        ("p50 latency", "1.5", r#" stroke-dasharray="1 3""#),
        ("p99 latency", "1.5", r#" stroke-dasharray="6 3""#),
    ];
    for (i, (label, width, dash)) in lines.into_iter().enumerate() {
        let x = LEFT + 130.0 * i as f64;
        writeln!(
            svg,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="currentColor" stroke-width="{width}"{dash}/><text x="{}" y="{y}" fill="currentColor">{label}</text>"#,
            y - 4.0,
            x + 28.0,
            y - 4.0,
            x + 34.0
        )
        .unwrap();
    }
    let bands = [("open", 0.22), ("half-open", 0.45)];
    for (i, (label, opacity)) in bands.into_iter().enumerate() {
        let x = LEFT + 390.0 + 110.0 * i as f64;
        writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="28" height="12" fill="currentColor" fill-opacity="{opacity}"/><text x="{}" y="{y}" fill="currentColor">{label}</text>"#,
            y - 10.0,
            x + 34.0
        )
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhaseKind;
    use crate::phases::Slice;
    use may_patterns::breaker::{Reason, Transition};
    use std::time::Duration;

    #[test]
    fn the_picture_has_every_series_and_a_band_per_open_span() {
        let ms = Duration::from_millis;
        let slices = [
            Slice {
                from: ms(0),
                to: ms(500),
                phase: PhaseKind::Healthy,
                phase_from: ms(0),
            },
            Slice {
                from: ms(500),
                to: ms(1000),
                phase: PhaseKind::Failing,
                phase_from: ms(500),
            },
        ];
        let transitions = [
            Transition {
                from: State::Closed,
                to: State::Open,
                at: ms(550),
                reason: Reason::FailureRate(1.0),
            },
            Transition {
                from: State::Open,
                to: State::HalfOpen,
                at: ms(800),
                reason: Reason::OpenElapsed,
            },
        ];
        let timeline = crate::timeline::build(&slices, &[], &transitions);
        let phases = [
            Phase {
                kind: PhaseKind::Healthy,
                duration: ms(500),
            },
            Phase {
                kind: PhaseKind::Failing,
                duration: ms(500),
            },
        ];
        let svg = render(&timeline, &phases);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"state-open\"").count(), 1);
        assert_eq!(svg.matches("class=\"state-half-open\"").count(), 1);
        for series in ["success-rate", "p50", "p99"] {
            assert!(svg.contains(&format!("class=\"{series}\"")), "{series}");
        }
        assert!(svg.contains(">failing</text>"));
        assert!(!svg.contains("\n\n"), "no blank line inside the HTML block");
        assert!(
            !svg.contains("stroke=\"#") && !svg.contains("fill=\"#"),
            "currentColor only"
        );
    }
}
