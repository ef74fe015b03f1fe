//! SVG charts drawn by the app: a line/area chart for rates, vertical bars for daily
//! series, horizontal bars for ranked categories, and a donut for shares.
//!
//! The geometry (axis ticks, paths, arcs) is pure and unit-tested; the components only
//! place it in an `<svg>` with a `viewBox`, so charts scale with their card and stay
//! sharp. Every chart carries an accessible label and, under the picture, nothing the
//! data table on the same page does not also say.

use leptos::prelude::*;

use crate::format;

/// Axis ticks for values from 0 to `max`: a "nice" top (1, 2, 2.5 or 5 × 10ⁿ steps)
/// at or above `max`, and the tick values from 0 to it.
pub fn ticks(max: f64, wanted: usize) -> Vec<f64> {
    let wanted = wanted.max(1);
    if !max.is_finite() || max <= 0.0 {
        return vec![0.0, 1.0];
    }
    let raw = max / wanted as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// The SVG path through `values`, spread evenly over `width`, with 0 at `height` and
/// `top` at 0.
pub fn line_path(values: &[f64], width: f64, height: f64, top: f64) -> String {
    let mut d = String::new();
    for (i, (x, y)) in points(values, width, height, top).into_iter().enumerate() {
        d.push_str(&format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" }));
    }
    d
}

/// [`line_path`] closed down to the baseline, for the filled area under the line.
pub fn area_path(values: &[f64], width: f64, height: f64, top: f64) -> String {
    let pts = points(values, width, height, top);
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return String::new();
    };
    format!(
        "{} L{:.1},{height:.1} L{:.1},{height:.1} Z",
        line_path(values, width, height, top),
        last.0,
        first.0
    )
}

fn points(values: &[f64], width: f64, height: f64, top: f64) -> Vec<(f64, f64)> {
    let top = if top > 0.0 { top } else { 1.0 };
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = if values.len() == 1 {
                width / 2.0
            } else {
                i as f64 * step
            };
            (x, height - (v.max(0.0) / top * height))
        })
        .collect()
}

/// The SVG path of a donut slice from angle `start` to `end` (radians, clockwise from
/// twelve o'clock) between radii `inner` and `outer` around (`cx`, `cy`).
pub fn arc_path(cx: f64, cy: f64, outer: f64, inner: f64, start: f64, end: f64) -> String {
    // A full circle cannot be one arc: stop just short of it.
    let end = if end - start >= std::f64::consts::TAU {
        start + std::f64::consts::TAU - 1e-4
    } else {
        end
    };
    let at = |r: f64, a: f64| (cx + r * a.sin(), cy - r * a.cos());
    let (x0, y0) = at(outer, start);
    let (x1, y1) = at(outer, end);
    let (x2, y2) = at(inner, end);
    let (x3, y3) = at(inner, start);
    let large = if end - start > std::f64::consts::PI {
        1
    } else {
        0
    };
    format!(
        "M{x0:.2},{y0:.2} A{outer},{outer} 0 {large} 1 {x1:.2},{y1:.2} L{x2:.2},{y2:.2} A{inner},{inner} 0 {large} 0 {x3:.2},{y3:.2} Z"
    )
}

const W: f64 = 600.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;

/// An area chart of a rate over time. `points` are (x label, value).
#[component]
pub fn LineChart(
    /// What the chart shows, for screen readers and the test suite.
    label: String,
    /// (x-axis label, value) in time order.
    points: Vec<(String, f64)>,
) -> impl IntoView {
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let max = values.iter().copied().fold(0.0, f64::max);
    let ticks = ticks(max, 4);
    let top = *ticks.last().unwrap_or(&1.0);
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - 8.0;
    let area = area_path(&values, plot_w, plot_h, top);
    let line = line_path(&values, plot_w, plot_h, top);
    // A handful of x labels: first, last and evenly between.
    let n = points.len();
    let every = (n / 5).max(1);
    // The last label is always shown, so a regular one too close to it is left out; the
    // first and last are anchored inwards so they stay inside the chart.
    let x_labels: Vec<(f64, String, &'static str)> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            *i + 1 == n || (i.is_multiple_of(every) && n - 1 - *i >= every.div_ceil(2))
        })
        .map(|(i, (l, _))| {
            let x = if n > 1 {
                i as f64 * plot_w / (n - 1) as f64
            } else {
                plot_w / 2.0
            };
            let anchor = if n == 1 {
                "middle"
            } else if i == 0 {
                "start"
            } else if i + 1 == n {
                "end"
            } else {
                "middle"
            };
            (x, l.clone(), anchor)
        })
        .collect();
    let title = label.clone();
    view! {
        <svg class="chart" viewBox=format!("0 0 {W} {H}") role="img" aria-label=label>
            <title>{title}</title>
            <g transform=format!("translate({LEFT},8)")>
                {ticks
                    .iter()
                    .map(|t| {
                        let y = plot_h - t / top * plot_h;
                        view! {
                            <line class="grid" x1="0" x2=plot_w y1=y y2=y></line>
                            <text class="axis" x="-6" y=y + 4.0 text-anchor="end">
                                {format::compact(*t)}
                            </text>
                        }
                    })
                    .collect_view()}
                <path class="area" d=area></path>
                <path class="line" d=line></path>
                {x_labels
                    .into_iter()
                    .map(|(x, l, anchor)| {
                        view! {
                            <text class="axis" x=x y=plot_h + 16.0 text-anchor=anchor>
                                {l}
                            </text>
                        }
                    })
                    .collect_view()}
            </g>
        </svg>
    }
}

/// Vertical bars, one per (label, value), with value labels from `fmt`.
#[component]
pub fn BarChart(
    /// What the chart shows.
    label: String,
    /// (x-axis label, value) in order.
    bars: Vec<(String, f64)>,
    /// Formats a value for its tooltip.
    #[prop(default = format::compact)]
    fmt: fn(f64) -> String,
) -> impl IntoView {
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let ticks = ticks(max, 4);
    let top = *ticks.last().unwrap_or(&1.0);
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - 8.0;
    let n = bars.len().max(1);
    let slot = plot_w / n as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let every = (n / 8).max(1);
    let title = label.clone();
    view! {
        <svg class="chart" viewBox=format!("0 0 {W} {H}") role="img" aria-label=label>
            <title>{title}</title>
            <g transform=format!("translate({LEFT},8)")>
                {ticks
                    .iter()
                    .map(|t| {
                        let y = plot_h - t / top * plot_h;
                        view! {
                            <line class="grid" x1="0" x2=plot_w y1=y y2=y></line>
                            <text class="axis" x="-6" y=y + 4.0 text-anchor="end">
                                {format::compact(*t)}
                            </text>
                        }
                    })
                    .collect_view()}
                {bars
                    .into_iter()
                    .enumerate()
                    .map(|(i, (l, v))| {
                        let h = v.max(0.0) / top * plot_h;
                        let x = i as f64 * slot + (slot - bar_w) / 2.0;
                        let show = i.is_multiple_of(every);
                        view! {
                            <rect class="bar" x=x y=plot_h - h width=bar_w height=h>
                                <title>{format!("{l}: {}", fmt(v))}</title>
                            </rect>
                            {show
                                .then(|| {
                                    view! {
                                        <text
                                            class="axis"
                                            x=x + bar_w / 2.0
                                            y=plot_h + 16.0
                                            text-anchor="middle"
                                        >
                                            {l.clone()}
                                        </text>
                                    }
                                })}
                        }
                    })
                    .collect_view()}
            </g>
        </svg>
    }
}

/// Horizontal bars for ranked items (segments, categories, affinities): each row is
/// (name, value, the value as shown).
#[component]
pub fn HBars(
    /// What the chart shows.
    label: String,
    /// (name, value, value label), largest first.
    rows: Vec<(String, f64, String)>,
) -> impl IntoView {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    view! {
        <div class="hbars" role="img" aria-label=label>
            {rows
                .into_iter()
                .map(|(name, v, shown)| {
                    let pct = (v.max(0.0) / max * 100.0).clamp(0.0, 100.0);
                    view! {
                        <div class="hbar-row">
                            <span class="hbar-name" title=name.clone()>{name.clone()}</span>
                            <span class="hbar-track">
                                <span class="hbar-fill" style=format!("width:{pct:.1}%")></span>
                            </span>
                            <span class="hbar-value">{shown}</span>
                        </div>
                    }
                })
                .collect_view()}
        </div>
    }
}

/// A donut of shares with its legend: (name, value, CSS colour class).
#[component]
pub fn Donut(
    /// What the chart shows.
    label: String,
    /// (name, value, colour class) in legend order.
    slices: Vec<(String, f64, &'static str)>,
) -> impl IntoView {
    let total: f64 = slices.iter().map(|s| s.1.max(0.0)).sum();
    let mut angle = 0.0;
    let arcs: Vec<(String, &'static str, String)> = slices
        .iter()
        .filter(|s| s.1 > 0.0 && total > 0.0)
        .map(|(name, v, class)| {
            let sweep = v / total * std::f64::consts::TAU;
            let d = arc_path(60.0, 60.0, 56.0, 34.0, angle, angle + sweep);
            angle += sweep;
            (d, *class, format!("{name}: {}", format::count(*v as i64)))
        })
        .collect();
    let title = label.clone();
    view! {
        <div class="donut" role="img" aria-label=label>
            <svg viewBox="0 0 120 120" class="donut-svg">
                <title>{title}</title>
                <circle class="donut-empty" cx="60" cy="60" r="45"></circle>
                {arcs
                    .into_iter()
                    .map(|(d, class, tip)| {
                        view! {
                            <path class=format!("slice {class}") d=d>
                                <title>{tip}</title>
                            </path>
                        }
                    })
                    .collect_view()}
                <text class="donut-total" x="60" y="65" text-anchor="middle">
                    {format::compact(total)}
                </text>
            </svg>
            <ul class="legend">
                {slices
                    .into_iter()
                    .map(|(name, v, class)| {
                        let share = if total > 0.0 { v / total } else { 0.0 };
                        view! {
                            <li>
                                <span class=format!("swatch {class}")></span>
                                {name}
                                <b>{format::count(v as i64)}</b>
                                <small>{format::percent(share)}</small>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_maximum() {
        assert_eq!(ticks(0.0, 4), vec![0.0, 1.0]);
        assert_eq!(ticks(10.0, 4), vec![0.0, 2.5, 5.0, 7.5, 10.0]);
        assert_eq!(ticks(87.0, 4), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(ticks(1.0, 4), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let t = ticks(12345.0, 4);
        assert!(*t.last().unwrap() >= 12345.0);
        assert!(t.len() <= 6);
    }

    #[test]
    fn paths_span_the_plot() {
        assert_eq!(
            line_path(&[0.0, 5.0, 10.0], 100.0, 50.0, 10.0),
            "M0.0,50.0 L50.0,25.0 L100.0,0.0"
        );
        assert_eq!(
            area_path(&[0.0, 10.0], 100.0, 50.0, 10.0),
            "M0.0,50.0 L100.0,0.0 L100.0,50.0 L0.0,50.0 Z"
        );
        assert_eq!(area_path(&[], 100.0, 50.0, 10.0), "");
        // One point sits in the middle; negative values sit on the baseline.
        assert_eq!(line_path(&[-3.0], 100.0, 50.0, 10.0), "M50.0,50.0");
    }

    #[test]
    fn arcs_start_at_twelve_and_go_clockwise() {
        let quarter = arc_path(60.0, 60.0, 50.0, 30.0, 0.0, std::f64::consts::FRAC_PI_2);
        assert!(quarter.starts_with("M60.00,10.00 A50,50 0 0 1 110.00,60.00"));
        let most = arc_path(60.0, 60.0, 50.0, 30.0, 0.0, 4.0);
        assert!(
            most.contains(" 0 1 1 "),
            "large-arc flag for > 180°: {most}"
        );
        let full = arc_path(60.0, 60.0, 50.0, 30.0, 0.0, std::f64::consts::TAU);
        assert!(!full.contains("NaN"));
    }
}

/// A reliability curve: predicted probability (x) against the observed rate (y) per
/// bin, dots sized by how many customers a bin holds, over the diagonal a perfectly
/// calibrated model would follow. `bins` are (predicted, observed, customers).
#[component]
pub fn ReliabilityChart(
    /// What the chart shows, for screen readers and the test suite.
    label: String,
    /// (mean predicted probability, observed rate, customers) per bin.
    bins: Vec<(f64, f64, u64)>,
) -> impl IntoView {
    const SIDE: f64 = 220.0;
    const PAD: f64 = 34.0;
    let most = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    let at = |v: f64| v.clamp(0.0, 1.0) * SIDE;
    let line: String = bins
        .iter()
        .enumerate()
        .map(|(i, (p, o, _))| {
            format!(
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                at(*p),
                SIDE - at(*o)
            )
        })
        .collect();
    let title = label.clone();
    view! {
        <svg
            class="chart reliability"
            viewBox=format!("0 0 {} {}", SIDE + PAD + 10.0, SIDE + PAD)
            role="img"
            aria-label=label
        >
            <title>{title}</title>
            <g transform=format!("translate({PAD},6)")>
                {[0.0, 0.5, 1.0]
                    .iter()
                    .map(|t| {
                        view! {
                            <line class="grid" x1="0" x2=SIDE y1=SIDE - at(*t) y2=SIDE - at(*t)></line>
                            <text class="axis" x="-6" y=SIDE - at(*t) + 4.0 text-anchor="end">
                                {format!("{:.0}%", t * 100.0)}
                            </text>
                            <text class="axis" x=at(*t) y=SIDE + 16.0 text-anchor="middle">
                                {format!("{:.0}%", t * 100.0)}
                            </text>
                        }
                    })
                    .collect_view()}
                <line class="diagonal" x1="0" y1=SIDE x2=SIDE y2="0"></line>
                <path class="line" d=line></path>
                {bins
                    .iter()
                    .map(|(p, o, n)| {
                        let r = 2.5 + 4.5 * (*n as f64 / most).sqrt();
                        view! {
                            <circle class="dot" cx=at(*p) cy=SIDE - at(*o) r=r>
                                <title>
                                    {format!(
                                        "predicted {:.0}%, observed {:.0}% ({} customers)",
                                        p * 100.0,
                                        o * 100.0,
                                        format::count(*n as i64)
                                    )}
                                </title>
                            </circle>
                        }
                    })
                    .collect_view()}
            </g>
        </svg>
    }
}
