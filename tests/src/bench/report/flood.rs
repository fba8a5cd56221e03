//! The SYN-flood section of the report (issue 19, finding 8): legitimate
//! connections under a saturating spoofed SYN flood, per gateway, with
//! the gap between lb and nftables DNAT and the backends' own listeners.

use std::fmt::Write as _;

use super::super::flood::{FloodRun, LEGIT_DEADLINE, LEGIT_THREADS};
use super::super::gateways::Gateway;
use super::super::results::Report;

fn rate(r: &FloodRun) -> String {
    r.success_rate()
        .map_or_else(|| "–".into(), |x| format!("{:.1} %", x * 100.0))
}

/// Writes the section; nothing when the run had no flood phase.
pub(super) fn section(s: &mut String, r: &Report) {
    write_flood(s, &r.flood);
}

/// The section for `flood` alone.
pub fn write_flood(s: &mut String, flood: &[FloodRun]) {
    if flood.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Under a SYN flood\n\nOne thread sends spoofed SYNs to the VIP's HTTP port as fast as \
         it can (sources in 198.19.0.0/16, routed nowhere), while {LEGIT_THREADS} legitimate \
         clients connect and fetch `/` in a loop; an attempt succeeds when the answer starts \
         within {} s. *direct routing* is the backends' own listeners (SYN cookies), no \
         gateway state. Drops are the interface counters that moved during the flood: \
         losses below the XDP program, which its own counters cannot show.\n",
        LEGIT_DEADLINE.as_secs()
    );
    let _ = writeln!(
        s,
        "| gateway | spoofed SYN/s | legitimate ok | success | p50 ms | p99 ms | drops |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
    for f in flood {
        let drops: Vec<String> = f
            .drops
            .iter()
            .map(|(i, k, v)| format!("{i} {k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {:.0} | {}/{} | {} | {} | {} | {} |",
            f.gateway.label(),
            f.syn_pps(),
            f.succeeded,
            f.attempts,
            rate(f),
            f.latency_ms
                .map_or_else(|| "–".into(), |l| format!("{:.0}", l.median)),
            f.p99_ms.map_or_else(|| "–".into(), |p| format!("{p:.0}")),
            if drops.is_empty() {
                "none".into()
            } else {
                drops.join(", ")
            }
        );
    }
    for f in flood.iter().filter(|f| !f.lb_metric_drops.is_empty()) {
        let series: Vec<String> = f
            .lb_metric_drops
            .iter()
            .map(|(k, v)| format!("`{k}` +{v}"))
            .collect();
        let _ = writeln!(
            s,
            "\n{}: lb's `/metrics` counted {}.",
            f.gateway.label(),
            series.join(", ")
        );
    }
    let get = |g: Gateway| {
        flood
            .iter()
            .find(|f| f.gateway == g)
            .and_then(FloodRun::success_rate)
    };
    if let (Some(lb), Some(nft), Some(direct)) = (
        get(Gateway::Xdp),
        get(Gateway::Nftables),
        get(Gateway::Direct),
    ) {
        let _ = writeln!(
            s,
            "\nlb's legitimate success rate is {:+.1} points against nftables DNAT ({}) and \
             {:+.1} points against the backends' own listeners.",
            (lb - nft) * 100.0,
            if lb >= nft {
                "target met: at least nftables'"
            } else {
                "**target missed**: below nftables'"
            },
            (lb - direct) * 100.0
        );
    }
    let _ = writeln!(s);
}
