//! Exposition formats. `prometheus-client` writes OpenMetrics text; this
//! module also offers the classic Prometheus text format (0.0.4) for
//! clients that do not ask for OpenMetrics (curl, `promtool check metrics`,
//! older scrapers).
//!
//! The two differ, for what lb emits (counters, gauges, histograms; no
//! info, stateset or exemplars), only in metadata: an OpenMetrics counter
//! family is named without `_total` while the classic format names it like
//! its samples, classic has no `# UNIT` lines and no `# EOF` terminator.
//! Sample lines are identical.
use std::collections::BTreeSet;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (what Prometheus asks for first).
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// Picks the format from an HTTP `Accept` header: OpenMetrics when the
    /// client lists it (with a non-zero quality), else the classic format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            if !media.eq_ignore_ascii_case("application/openmetrics-text") {
                continue;
            }
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if !refused {
                return Format::OpenMetrics;
            }
        }
        Format::Prometheus
    }

    /// The HTTP content type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// Rewrites OpenMetrics text as classic Prometheus text: counter families
/// take their samples' `_total` name in `# HELP`/`# TYPE`, `# UNIT` and
/// `# EOF` lines go, everything else is kept as is.
pub fn openmetrics_to_prometheus(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, t)| *t == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(n, tail)| (p, n, tail))) {
            Some((p, name, tail)) if counters.contains(name) => {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "\
# HELP lb_x_packets Packets.
# TYPE lb_x_packets counter
lb_x_packets_total{direction=\"in\"} 5
# HELP lb_up Up.
# TYPE lb_up gauge
lb_up 1
# HELP lb_d_seconds Durations.
# TYPE lb_d_seconds histogram
# UNIT lb_d_seconds seconds
lb_d_seconds_sum 0.5
lb_d_seconds_count 1
lb_d_seconds_bucket{le=\"+Inf\"} 1
# EOF
";

    #[test]
    fn counters_take_the_total_name_and_om_only_lines_go() {
        let text = openmetrics_to_prometheus(OM);
        assert_eq!(
            text,
            "\
# HELP lb_x_packets_total Packets.
# TYPE lb_x_packets_total counter
lb_x_packets_total{direction=\"in\"} 5
# HELP lb_up Up.
# TYPE lb_up gauge
lb_up 1
# HELP lb_d_seconds Durations.
# TYPE lb_d_seconds histogram
lb_d_seconds_sum 0.5
lb_d_seconds_count 1
lb_d_seconds_bucket{le=\"+Inf\"} 1
"
        );
    }

    #[test]
    fn help_text_naming_another_counter_is_left_alone() {
        let om = "# HELP lb_a See lb_b.\n# TYPE lb_a gauge\nlb_a 1\n# HELP lb_b B.\n# TYPE lb_b counter\nlb_b_total 2\n";
        let text = openmetrics_to_prometheus(om);
        assert!(text.contains("# HELP lb_a See lb_b.\n"), "{text}");
        assert!(text.contains("# TYPE lb_b_total counter\n"), "{text}");
    }

    #[test]
    fn negotiation_follows_the_accept_header() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
    }
}
