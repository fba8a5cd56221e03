//! The SVG chart: every metric as a ratio against direct routing's median,
//! one bar per gateway, whiskers from the slowest to the fastest round.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::gateways::Gateway;
use super::results::{cell, CellSummary, Metric};

const SIZE: (u32, u32) = (1000, 540);

fn colour(g: Gateway) -> RGBColor {
    match g {
        Gateway::Direct => RGBColor(140, 140, 140),
        Gateway::XdpFwd => RGBColor(44, 160, 44),
        Gateway::Xdp => RGBColor(31, 119, 180),
        Gateway::Fullnat => RGBColor(23, 190, 207),
        Gateway::Nftables => RGBColor(255, 127, 14),
        Gateway::Haproxy => RGBColor(214, 39, 40),
    }
}

fn group_label(m: Metric) -> &'static str {
    match m {
        Metric::NewConnections => "new connections/s",
        Metric::KeepAlive => "keep-alive requests/s",
        Metric::Bulk => "bulk throughput",
        Metric::LatencyP50 => "latency p50 (lower is better)",
        Metric::LatencyP99 => "latency p99 (lower is better)",
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// A bar: ratio of the median and of the extremes against direct routing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Median / direct median.
    pub ratio: f64,
    /// Smallest round / direct median.
    pub low: f64,
    /// Largest round / direct median.
    pub high: f64,
}

/// The bar of `gateway` for `metric`, if both it and direct routing have
/// figures.
pub fn bar(summary: &[CellSummary], gateway: Gateway, metric: Metric) -> Option<Bar> {
    let d = cell(summary, Gateway::Direct, metric)?.summary.median;
    let c = cell(summary, gateway, metric)?;
    (d > 0.0).then(|| Bar {
        ratio: c.summary.median / d,
        low: c.summary.min / d,
        high: c.summary.max / d,
    })
}

/// Draws the chart into `path`.
pub fn render(summary: &[CellSummary], path: &Path, title: &str) -> Result<()> {
    let groups: Vec<Metric> = Metric::ALL
        .into_iter()
        .filter(|m| bar(summary, Gateway::Direct, *m).is_some())
        .collect();
    if groups.is_empty() {
        return Err(anyhow!("no figures to chart"));
    }
    // Scale to the medians, not the whiskers: one slow round would squash
    // every other bar. Bars and whiskers above the top are clipped, and a
    // clipped bar carries its value.
    let top = groups
        .iter()
        .flat_map(|m| Gateway::ALL.map(|g| bar(summary, g, *m)))
        .flatten()
        .map(|b| b.ratio)
        .fold(1.0f64, f64::max);
    let y_max = (top * 1.5).clamp(1.5, 3.0);
    let n = groups.len() as f64;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, 0f64..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(1)
        .x_label_formatter(&|_| String::new())
        .y_desc("× direct routing (median of rounds; whiskers: min–max, clipped)")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(draw_err)?;

    let width = 0.8 / Gateway::ALL.len() as f64;
    for (k, g) in Gateway::ALL.into_iter().enumerate() {
        let c = colour(g);
        let bars: Vec<(f64, Bar)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                bar(summary, g, *m).map(|b| (i as f64 + 0.1 + k as f64 * width, b))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(x, b)| {
                Rectangle::new(
                    [(*x, 0.0), (*x + width * 0.9, b.ratio.min(y_max))],
                    c.filled(),
                )
            }))
            .map_err(draw_err)?
            .label(g.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        chart
            .draw_series(bars.iter().map(|(x, b)| {
                let xc = *x + width * 0.45;
                PathElement::new(
                    vec![(xc, b.low.min(y_max)), (xc, b.high.min(y_max))],
                    BLACK.stroke_width(1),
                )
            }))
            .map_err(draw_err)?;
        let clipped = TextStyle::from(("sans-serif", 12).into_font())
            .pos(Pos::new(HPos::Center, VPos::Top))
            .color(&WHITE);
        chart
            .draw_series(bars.iter().filter(|(_, b)| b.ratio > y_max).map(|(x, b)| {
                Text::new(
                    format!("{:.1}×", b.ratio),
                    (*x + width * 0.45, y_max * 0.97),
                    clipped.clone(),
                )
            }))
            .map_err(draw_err)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (n, 1.0)],
            BLACK.mix(0.5).stroke_width(1),
        )))
        .map_err(draw_err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;

    let style = TextStyle::from(("sans-serif", 14).into_font())
        .pos(Pos::new(HPos::Center, VPos::Top))
        .color(&BLACK);
    for (i, m) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(group_label(*m), (px, py + 8), style.clone()))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::{summarize, Sample};

    fn samples() -> Vec<Sample> {
        let mut v = Vec::new();
        for (r, d, x) in [(1u32, 100.0, 90.0), (2, 100.0, 110.0)] {
            for (g, val) in [(Gateway::Direct, d), (Gateway::Xdp, x)] {
                v.push(Sample {
                    round: r,
                    gateway: g,
                    metric: Metric::NewConnections,
                    value: val,
                });
            }
        }
        v
    }

    #[test]
    fn bars_are_ratios_against_the_direct_median() {
        let s = summarize(&samples());
        let b = bar(&s, Gateway::Xdp, Metric::NewConnections).unwrap();
        assert!((b.ratio - 1.0).abs() < 1e-12);
        assert!((b.low - 0.9).abs() < 1e-12);
        assert!((b.high - 1.1).abs() < 1e-12);
        assert!(bar(&s, Gateway::Haproxy, Metric::NewConnections).is_none());
        assert!(bar(&s, Gateway::Xdp, Metric::Bulk).is_none());
    }

    #[test]
    fn chart_is_written_as_svg_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        render(&summarize(&samples()), &path, "test chart").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("test chart"));
        assert!(svg.contains("new connections/s"));
        assert!(svg.contains("lb (XDP, native)"));
        assert!(svg.contains("<rect"));
        assert!(render(&[], &path, "empty").is_err());
    }
}
