//! The run as a picture: workers and busy workers (left axis) and queue
//! depth (right axis) over time, one step per scaler sample, with a mark
//! where each burst was submitted.
//!
//! Everything is drawn in `currentColor`, with shades made by opacity and
//! the series told apart by dash patterns, so the picture inlined in a page
//! takes the text colour of the page's theme, light or dark. It has no
//! blank line, so Markdown keeps it one HTML block.

use std::fmt::Write as _;

use crate::report::{Point, Summary};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 696.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 240.0;

/// The series: class, stroke width, dash pattern, value, legend label.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Point) -> usize,
    &'static str,
);
const SERIES: [Series; 3] = [
    ("workers", "2.5", "", |p| p.workers, "workers"),
    (
        "busy",
        "1.2",
        r#" stroke-dasharray="1 2""#,
        |p| p.busy,
        "busy workers",
    ),
    (
        "queued",
        "1.5",
        r#" stroke-dasharray="6 3""#,
        |p| p.queued,
        "queued jobs (right axis)",
    ),
];

/// The smallest 1, 2 or 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mut scale = 1.0;
    loop {
        for step in [1.0, 2.0, 5.0] {
            if step * scale >= v {
                return step * scale;
            }
        }
        scale *= 10.0;
    }
}

// ANCHOR: render
/// The picture of `summary`'s timeline.
pub fn render(summary: &Summary) -> String {
    let last = summary.timeline.last().map_or(0.0, |p| p.at_ms);
    let end_ms = summary.elapsed_ms.max(last).max(1.0);
    let workers_top = nice_ceiling(summary.max.max(1) as f64);
    let queued_max = summary.timeline.iter().map(|p| p.queued).max().unwrap_or(0);
    let queued_top = nice_ceiling(queued_max.max(1) as f64);
    let x = |t_ms: f64| LEFT + (RIGHT - LEFT) * (t_ms / end_ms).clamp(0.0, 1.0);
    let y = |v: f64, top: f64| BOTTOM - (BOTTOM - TOP) * (v / top).min(1.0);
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" role="img" aria-label="Worker pool run: workers, busy workers and queued jobs over time, with the bursts marked" style="max-width:100%;font-family:sans-serif;font-size:12px">"#
    )
    .unwrap();
    // A burst's submission: a short shaded bar on the time axis.
    for &at in &summary.bursts {
        writeln!(
            svg,
            r#"<rect class="burst" x="{:.1}" y="{}" width="3" height="8" fill="currentColor" fill-opacity="0.45"/>"#,
            x(at) - 1.5,
            BOTTOM - 8.0
        )
        .unwrap();
    }
    axes(&mut svg, end_ms, workers_top, queued_top);
    // Each sample's value holds until the next sample: steps.
    for (class, width, dash, value, _) in SERIES {
        let top = if class == "queued" {
            queued_top
        } else {
            workers_top
        };
        let mut points = Vec::with_capacity(summary.timeline.len() * 2);
        for (i, p) in summary.timeline.iter().enumerate() {
            let next = summary.timeline.get(i + 1).map_or(end_ms, |n| n.at_ms);
            let v = y(value(p) as f64, top);
            points.push(format!("{:.1},{v:.1} {:.1},{v:.1}", x(p.at_ms), x(next)));
        }
        writeln!(
            svg,
            r#"<polyline class="{class}" points="{}" fill="none" stroke="currentColor" stroke-width="{width}"{dash}/>"#,
            points.join(" ")
        )
        .unwrap();
    }
    legend(&mut svg);
    svg.push_str("</svg>\n");
    svg
}
// ANCHOR_END: render

/// The frame; time below (about ten ticks), workers left, queue right.
fn axes(svg: &mut String, end_ms: f64, workers_top: f64, queued_top: f64) {
    writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="currentColor" stroke-opacity="0.6"/>"#,
        RIGHT - LEFT,
        BOTTOM - TOP
    )
    .unwrap();
    let step_ms = [
        10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
    ]
    .into_iter()
    .find(|step| end_ms / step <= 12.0)
    .unwrap_or(10_000.0);
    let decimals = if step_ms < 100.0 {
        2
    } else if step_ms < 1000.0 {
        1
    } else {
        0
    };
    let x = |t_ms: f64| LEFT + (RIGHT - LEFT) * (t_ms / end_ms);
    for i in 0..=(end_ms / step_ms) as usize {
        let t = i as f64 * step_ms;
        writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" fill="currentColor">{:.decimals$}s</text>"#,
            x(t),
            BOTTOM + 16.0,
            t / 1000.0
        )
        .unwrap();
    }
    for share in [0.0, 0.5, 1.0] {
        let at = BOTTOM - (BOTTOM - TOP) * share + 4.0;
        writeln!(
            svg,
            r#"<text x="{}" y="{at:.1}" text-anchor="end" fill="currentColor">{}</text><text x="{}" y="{at:.1}" fill="currentColor">{}</text>"#,
            LEFT - 6.0,
            workers_top * share,
            RIGHT + 6.0,
            queued_top * share
        )
        .unwrap();
    }
    writeln!(
        svg,
        r#"<text x="{}" y="18" fill="currentColor">workers</text><text x="{}" y="18" text-anchor="end" fill="currentColor">queued</text>"#,
        LEFT - 40.0,
        WIDTH - 4.0
    )
    .unwrap();
}

/// What each line and mark means, under the time axis.
fn legend(svg: &mut String) {
    let y = BOTTOM + 44.0;
    for (i, (_, width, dash, _, label)) in SERIES.into_iter().enumerate() {
        let x = LEFT + 140.0 * i as f64;
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
    let x = LEFT + 500.0;
    writeln!(
        svg,
        r#"<rect x="{x}" y="{}" width="3" height="8" fill="currentColor" fill-opacity="0.45"/><text x="{}" y="{y}" fill="currentColor">a burst</text>"#,
        y - 9.0,
        x + 10.0
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_a_round_number_at_or_above_the_highest_value() {
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(32.0), 50.0);
        assert_eq!(nice_ceiling(200.0), 200.0);
        assert_eq!(nice_ceiling(201.0), 500.0);
    }
}
