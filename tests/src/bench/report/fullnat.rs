//! The full-NAT section of the report (issue 18): lb with its listeners in
//! `mode = "fullnat"` against lb's own DNAT mode, nftables DNAT and
//! HAProxy, all measured side by side in the same rounds, and why a
//! missed full-NAT target was missed.

use std::fmt::Write as _;

use super::super::gateways::Gateway;
use super::super::results::{cell, comparison, Metric, Report, TargetCheck, FULLNAT_AGAINST};
use super::noise;

/// The metrics the full-NAT section shows.
const METRICS: [Metric; 4] = [
    Metric::NewConnections,
    Metric::KeepAlive,
    Metric::Bulk,
    Metric::LatencyP99,
];

/// Writes the section; nothing when the run had no full-NAT gateway.
pub(super) fn section(s: &mut String, r: &Report) {
    if r.fullnat_comparisons.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Full-NAT against DNAT and HAProxy\n\nThe same `lb` with both listeners in \
         `mode = \"fullnat\"` (source-NAT address {} on the backends' link, `snat_ports = \"{}\"`, \
         the gateway's own ephemeral ports moved back to the kernel's default for the turn), \
         in the same rounds as the others: its median over the other gateway's median, in \
         brackets the round-by-round range.\n",
        super::super::fullnat::SNAT_ADDR,
        super::super::fullnat::SNAT_PORTS,
    );
    let mut head = "| metric | lb full-NAT | lb DNAT |".to_string();
    let mut rule = "|---|---:|---:|".to_string();
    for g in FULLNAT_AGAINST {
        let _ = write!(head, " full-NAT / {} |", g.short());
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for metric in METRICS {
        let value = |g: Gateway| {
            cell(&r.summary, g, metric)
                .map_or_else(|| "–".to_string(), |c| metric.format(c.summary.median))
        };
        let mut row = format!(
            "| {} | {} | {} |",
            metric.label(),
            value(Gateway::Fullnat),
            value(Gateway::Xdp)
        );
        for g in FULLNAT_AGAINST {
            match comparison(&r.fullnat_comparisons, metric, g) {
                Some(c) => {
                    let p = &c.per_round;
                    let rounds = if p.n >= 2 {
                        format!(" [{:.2}–{:.2}]", p.min, p.max)
                    } else {
                        String::new()
                    };
                    let n = noise(c.within_noise);
                    let _ = write!(
                        row,
                        " {:.2}×{rounds}{}{n} |",
                        c.ratio,
                        if n.is_empty() { "" } else { " " }
                    );
                }
                None => row.push_str(" – |"),
            }
        }
        let _ = writeln!(s, "{row}");
    }
}

/// Why a full-NAT target was missed: the CPU time per request and the XDP
/// program's own cost per packet, full-NAT against lb's DNAT mode.
pub(super) fn explain(r: &Report, t: &TargetCheck) -> String {
    let workload = if t.target.contains("bulk") {
        "bulk"
    } else if t.target.contains("keep-alive") {
        "keep_alive"
    } else {
        "new_connections"
    };
    let mut e = String::new();
    if workload != "bulk" {
        if let (Some(f), Some(d)) = (
            r.cpu_us_per_request(Gateway::Fullnat, workload),
            r.cpu_us_per_request(Gateway::Xdp, workload),
        ) {
            let _ = write!(
                e,
                "the whole machine spends {f:.1} µs of CPU per request through full-NAT \
                 against {d:.1} µs through lb's DNAT mode ({:+.1} µs). ",
                f - d
            );
        }
    }
    if let (Some((f, _)), Some((d, _))) = (
        r.bpf_summary(Gateway::Fullnat, workload),
        r.bpf_summary(Gateway::Xdp, workload),
    ) {
        let _ = write!(
            e,
            "The XDP program runs {:.0} ns per packet in full-NAT against {:.0} ns in DNAT \
             (bpf_stats; the source-NAT port claim on a SYN, the second translation on every \
             packet). ",
            f.median, d.median
        );
    }
    if t.within_noise == Some(true) {
        e.push_str("The rounds' ranges overlap: the gap is within this run's noise. ");
    }
    e.push_str(
        "Client, gateway and backends share the same CPUs here, so every cycle the gateway \
         spends is taken from wrk and nginx.",
    );
    e
}
