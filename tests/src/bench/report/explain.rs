//! Why a missed target was missed, from the run's own figures: CPU time
//! per request, the XDP program's share of it (bpf_stats), the profiles,
//! and the BPF_PROG_TEST_RUN paths.

use std::fmt::Write as _;

use super::super::gateways::Gateway;
use super::super::results::{cell, Metric, Report, TargetCheck, FULLNAT_TARGET};

/// A data-derived explanation of a missed target.
pub(super) fn explain(r: &Report, t: &TargetCheck) -> String {
    if t.target.starts_with(FULLNAT_TARGET) {
        return super::fullnat::explain(r, t);
    }
    if t.target.starts_with("established") {
        return explain_packet_cost(r);
    }
    if t.target.starts_with("new-flow SYN") {
        return explain_syn(r);
    }
    if t.target.starts_with("conntrack") {
        return explain_conntrack(r);
    }
    let against = Gateway::ALL
        .into_iter()
        .find(|g| t.target.ends_with(&format!("vs {}", g.short())))
        .unwrap_or(Gateway::Direct);
    let (workload, what) = if t.target.starts_with("new connections") {
        ("new_connections", "connection")
    } else if t.target.starts_with("keep-alive") {
        ("keep_alive", "request")
    } else {
        return explain_bulk(r, against);
    };
    let mut e = String::new();
    let x = r.cpu_us_per_request(Gateway::Xdp, workload);
    let o = r.cpu_us_per_request(against, workload);
    if let (Some(x), Some(o)) = (x, o) {
        let _ = write!(
            e,
            "the whole machine spends {x:.1} µs of CPU per {what} through lb against {o:.1} µs \
             through {} ({:+.1} µs). ",
            against.label(),
            x - o
        );
    }
    if let Some((ns, per_req)) = r.bpf_summary(Gateway::Xdp, workload) {
        let prog_us = ns.median * per_req / 1e3;
        let _ = write!(
            e,
            "lb's XDP program itself runs {:.0} ns per packet (bpf_stats) on {per_req:.1} \
             packets per {what}, {prog_us:.2} µs per {what}",
            ns.median
        );
        match x {
            Some(x) if x > 0.0 => {
                let _ = write!(e, " ({:.1} % of the CPU time). ", prog_us / x * 100.0);
            }
            _ => e.push_str(". "),
        }
        let fwd = r.bpf_summary(Gateway::XdpFwd, workload);
        match (against, fwd, x, o) {
            (Gateway::XdpFwd, Some((f, f_per_req)), _, _) => {
                let fwd_us = f.median * f_per_req / 1e3;
                let _ = write!(
                    e,
                    "xdp-fwd's program runs {:.0} ns per packet, {fwd_us:.2} µs per {what}: \
                     lb's own work (listener match, Maglev, conntrack, NAT) costs {:.2} µs \
                     more per {what}; both pay the same veth cost of XDP. ",
                    f.median,
                    prog_us - fwd_us
                );
            }
            (_, _, Some(x), Some(o)) if x - o - prog_us > 0.0 => {
                let _ = write!(
                    e,
                    "The other {:.1} µs of the difference are spent outside the program: \
                     on veth every frame XDP redirects is copied into an XDP buffer and \
                     rebuilt as a socket buffer behind the redirect, work a NIC driver does \
                     not do{}. ",
                    x - o - prog_us,
                    if fwd.is_some() {
                        " (xdp-fwd pays it too: see lb / xdp-fwd)"
                    } else {
                        ""
                    }
                );
            }
            _ => {}
        }
    }
    if t.within_noise == Some(true) {
        e.push_str(
            "The rounds' ranges overlap, so the gap is within this machine's run-to-run noise. ",
        );
    }
    e.push_str(&profile_growth(r, workload));
    e.push_str(
        "Client, gateway and backends share the same CPUs here, so every cycle the gateway \
         spends is taken from wrk and nginx.",
    );
    e
}

/// Where a new flow's time goes in BPF_PROG_TEST_RUN, path by path.
fn explain_syn(r: &Report) -> String {
    let c = &r.packet_costs;
    let path = |k: &str| c.case(k).map(|p| format!("{k} {:.0} ns", p.median_ns));
    let paths: Vec<String> = [
        "new_flow_syn",
        "syn_ack",
        "first_ack",
        "first_reply",
        "established",
        "fin",
        "reply",
        "pass_through",
        "xdp_fwd",
    ]
    .iter()
    .filter_map(|k| path(k))
    .collect();
    let mut e = format!("per path (median of single runs): {}. ", paths.join(", "));
    if let (Some(syn), Some(est)) = (c.case("new_flow_syn"), c.case("established")) {
        let _ = write!(
            e,
            "The SYN costs {:.0} ns more than an established packet: the Maglev pick, the \
             conntrack insert of the embryonic reply entry (an LRU insert takes a free entry \
             from the shared list and links it into its hash bucket, memory no packet of the \
             flow touched before) and a FIB lookup (an established packet uses the route cached \
             in its entry). ",
            syn.median_ns - est.median_ns
        );
    }
    e
}

/// Conntrack cost at 1M flows against 100k.
fn explain_conntrack(r: &Report) -> String {
    let f = |n: u32| r.conntrack.iter().find(|c| c.flows == n);
    match (f(100_000), f(1_000_000)) {
        (Some(a), Some(b)) => format!(
            "an established packet takes {:.0} ns with 1M tracked flows against {:.0} ns with \
             100k (p90 {:.0} against {:.0}): a larger table spreads lookups over more memory \
             than the CPU caches hold.",
            b.median_ns, a.median_ns, b.p90_ns, a.p90_ns
        ),
        _ => "this run did not measure both sizes (the quick mode stops at 100k).".into(),
    }
}

/// "Against xdp-fwd, the profile of WORKLOAD under lb spends more in: …",
/// from the two profiles, if both were taken.
fn profile_growth(r: &Report, workload: &str) -> String {
    let find = |g: Gateway| {
        r.profiles
            .iter()
            .find(|p| p.gateway == g.key() && p.workload == workload)
    };
    let (Some(x), Some(d)) = (find(Gateway::Xdp), find(Gateway::XdpFwd)) else {
        return String::new();
    };
    let grown = super::super::profile::grown(x, d, 5);
    if grown.is_empty() {
        return String::new();
    }
    let list: Vec<String> = grown
        .iter()
        .map(|(name, xp, dp)| format!("`{name}` {xp:.1} % (xdp-fwd: {dp:.1} %)"))
        .collect();
    format!(
        "In the {} profiles (all CPUs) the largest shares gained under lb against xdp-fwd \
         are: {}. ",
        workload.replace('_', " "),
        list.join(", ")
    )
}

fn explain_bulk(r: &Report, against: Gateway) -> String {
    let mut e = String::new();
    if let (Some(x), Some(d)) = (
        cell(&r.summary, Gateway::Xdp, Metric::Bulk),
        cell(&r.summary, against, Metric::Bulk),
    ) {
        let _ = write!(
            e,
            "one iperf3 stream moved {:.2} Gbit/s through lb against {:.2} Gbit/s through {}. ",
            x.summary.median,
            d.summary.median,
            against.label()
        );
    }
    for g in [Gateway::Xdp, Gateway::XdpFwd] {
        if let Some((ns, _)) = r.bpf_summary(g, "bulk") {
            let _ = write!(
                e,
                "{}'s program ran {:.0} ns per packet (bpf_stats); at 1500-byte frames that \
                 bounds a single CPU at about {:.1} Gbit/s for the program alone. ",
                g.short(),
                ns.median,
                1500.0 * 8.0 / ns.median
            );
        }
    }
    e.push_str(&profile_growth(r, "bulk"));
    e.push_str(
        "The client sends with tx checksum offload (and so segmentation offload) off, as \
         XDP on veth needs, so the gateway sees every 1500-byte frame; routed, GRO on the \
         gateway's veth merges them and the stack forwards a few large packets, while XDP \
         handles each frame, and on veth each one is first copied out of its socket buffer \
         into an XDP frame and turned back into a socket buffer after the redirect. A NIC \
         driver runs XDP before any socket buffer exists, so this conversion is a cost of \
         the veth lab.",
    );
    e
}

fn explain_packet_cost(r: &Report) -> String {
    let c = &r.packet_costs;
    let Some(est) = c.case("established") else {
        return "no micro-cost figures".into();
    };
    let pass = c.case("pass_through");
    let mut e = format!(
        "an established packet takes {:.0} ns per single test run against {:.0} ns for the \
         XDP_TX program; {:.0} ns of each is the harness's fixed cost (the baseline with \
         repeat={} runs in {:.1} ns), so the program's own work is about {:.0} ns against \
         {:.0} ns. ",
        est.median_ns,
        c.baseline.median_ns,
        c.harness_ns,
        c.repeat,
        c.baseline_repeat_ns,
        est.net_ns,
        c.baseline.net_ns
    );
    if let Some(p) = pass {
        let _ = write!(
            e,
            "A packet the program does not balance (the pass-through case: parsing, then \
             the listener, backend-endpoint and reply-conntrack lookups, all missing) costs \
             {:.0} ns net, {} an established packet's {:.0} ns (parsing, a listener hit, a \
             conntrack hit with its cached route, the real lookup, the checksum rewrite and \
             the redirect): most of either is hash-map lookups, which a trivial XDP_TX \
             program does not do, so the ratio mostly shows how cheap the baseline is. ",
            p.net_ns,
            if p.net_ns > est.net_ns {
                "more than"
            } else {
                "less than"
            },
            est.net_ns
        );
    }
    if let Some(f) = c.case("xdp_fwd") {
        let _ = write!(
            e,
            "For scale, the trivial forwarder `xdp_fwd` (a FIB lookup per packet, no NAT) takes \
             {:.0} ns, so an established lb packet costs {:.2}× what any forwarding XDP program \
             pays here (lb reuses the route cached in its conntrack entry instead of a FIB \
             lookup). ",
            f.median_ns,
            est.median_ns / f.median_ns
        );
    }
    if let (Some((ns, per_req)), Some(cpu)) = (
        r.bpf_summary(Gateway::Xdp, "keep_alive"),
        r.cpu_us_per_request(Gateway::Xdp, "keep_alive"),
    ) {
        let _ = write!(
            e,
            "In the keep-alive runs the attached program took {:.0} ns per packet \
             (bpf_stats, caches shared with everything else), {:.1} % of the {cpu:.1} µs of \
             CPU each request cost the whole lab.",
            ns.median,
            ns.median * per_req / 1e3 / cpu * 100.0
        );
    }
    e
}
