//! The page's two small inline SVG pictures: a sparkline of new flows per
//! second and a health timeline. Coordinates are integers in a fixed
//! `viewBox`, so a picture costs a few hundred bytes and scales with CSS.
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::html::escape;
use crate::health::{Health, Transition};

/// Width of both pictures' `viewBox`.
const WIDTH: u64 = 180;
/// Height of the sparkline's `viewBox`.
const CHART_HEIGHT: u64 = 32;
/// Height of the timeline's `viewBox`.
const TIMELINE_HEIGHT: u64 = 12;
/// Most points drawn per sparkline: more samples are averaged in buckets.
const MAX_POINTS: usize = 90;

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn clock(unix_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(11..19).unwrap_or(&s).to_owned()
}

/// The x coordinate of `t` on a picture spanning `from..=to`.
fn x_of(t: u64, from: u64, to: u64) -> u64 {
    let span = to.saturating_sub(from).max(1);
    (t.clamp(from, to) - from) * WIDTH / span
}

/// Averages `points` into at most [`MAX_POINTS`] buckets of consecutive
/// points (each keeps its last time).
fn thin(points: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let per = points.len().div_ceil(MAX_POINTS).max(1);
    points
        .chunks(per)
        .map(|c| {
            let sum: f64 = c.iter().map(|(_, r)| r).sum();
            (c[c.len() - 1].0, sum / c.len() as f64)
        })
        .collect()
}

/// A sparkline of `(time ms, new flows/s)` over `from..=to`, scaled to its
/// own maximum (at least 1/s), with the maximum in its title.
pub fn sparkline(points: &[(u64, f64)], from: u64, to: u64) -> String {
    let mut s = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {WIDTH} {CHART_HEIGHT}\" role=\"img\" \
         preserveAspectRatio=\"none\"><rect class=\"bg\" width=\"{WIDTH}\" \
         height=\"{CHART_HEIGHT}\"/>"
    );
    let shown: Vec<(u64, f64)> = thin(points)
        .into_iter()
        .filter(|(t, _)| *t >= from)
        .collect();
    if shown.is_empty() {
        let _ = write!(
            s,
            "<title>no samples yet</title><line x1=\"0\" y1=\"{y}\" x2=\"{WIDTH}\" y2=\"{y}\" \
             class=\"none\"/></svg>",
            y = CHART_HEIGHT - 1
        );
        return s;
    }
    let max = shown.iter().map(|(_, r)| *r).fold(0.0_f64, f64::max);
    let top = max.max(1.0);
    let _ = write!(
        s,
        "<title>new flows/s, {} to {}: max {max:.1}, now {:.1}</title><polyline points=\"",
        clock(from),
        clock(to),
        shown[shown.len() - 1].1
    );
    let usable = (CHART_HEIGHT - 2) as f64;
    for (i, (t, r)) in shown.iter().enumerate() {
        let y = 1 + (usable - (r / top * usable).round()).max(0.0) as u64;
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}{},{y}", x_of(*t, from, to));
    }
    s.push_str("\"/></svg>");
    s
}

/// A backend's health over `from..=to`: green while up, red while down,
/// one segment per state with the transition's time and reason as title.
/// `now` is its current health (what it was since its last transition).
pub fn timeline(transitions: &[Transition], now: Health, from: u64, to: u64) -> String {
    let mut sorted: Vec<&Transition> = transitions.iter().collect();
    sorted.sort_by_key(|t| t.unix_ms);
    // Health at `from`: after the last transition before it, else before
    // the first one after it, else as it is now.
    let mut state = sorted
        .iter()
        .rev()
        .find(|t| t.unix_ms <= from)
        .map(|t| t.to)
        .or_else(|| sorted.iter().find(|t| t.unix_ms > from).map(|t| t.from))
        .unwrap_or(now);
    let mut segments: Vec<(u64, u64, Health, String)> = Vec::new();
    let mut start = from;
    let mut why = String::from("before the window");
    for t in sorted
        .iter()
        .filter(|t| t.unix_ms > from && t.unix_ms <= to)
    {
        segments.push((start, t.unix_ms, state, why));
        start = t.unix_ms;
        state = t.to;
        why = format!("since {}: {}", clock(t.unix_ms), t.reason);
    }
    segments.push((start, to, state, why));
    let mut s = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {TIMELINE_HEIGHT}\" role=\"img\" \
         preserveAspectRatio=\"none\">"
    );
    for (a, b, health, why) in segments {
        let (x1, x2) = (x_of(a, from, to), x_of(b, from, to));
        if x2 <= x1 && b < to {
            continue;
        }
        let _ = write!(
            s,
            "<rect x=\"{x1}\" y=\"0\" width=\"{}\" height=\"{TIMELINE_HEIGHT}\" class=\"{health}\">\
             <title>{health} {}</title></rect>",
            (x2 - x1).max(1),
            escape(&why)
        );
    }
    s.push_str("</svg>");
    s
}
