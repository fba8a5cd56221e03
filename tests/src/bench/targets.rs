//! The targets checked against a run: lab ratios between gateways
//! (lb against the others, the full-NAT gateway against lb's DNAT mode and
//! HAProxy) and BPF_PROG_TEST_RUN figures.

use serde::{Deserialize, Serialize};

use super::conntrack::CtScale;
use super::gateways::Gateway;
use super::micro::PacketCosts;
use super::results::{comparison, Comparison, Metric};

/// What a target's figures are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A ratio (×).
    #[default]
    Ratio,
    /// Nanoseconds.
    Ns,
}

impl Unit {
    /// `v` formatted in this unit.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{v:.2}×"),
            Unit::Ns => format!("{v:.0} ns"),
        }
    }
}

/// One target of the issue, checked against this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// What is compared.
    pub target: String,
    /// The figure wanted (a minimum, or a maximum when `at_most`).
    pub wanted: f64,
    /// Whether `wanted` is an upper bound.
    pub at_most: bool,
    /// The figure measured; `None` when a figure is missing.
    pub measured: Option<f64>,
    /// Whether the target is met.
    pub met: bool,
    /// Unit of `wanted` and `measured`.
    #[serde(default)]
    pub unit: Unit,
    /// For lab targets: 95 % confidence interval of the round-by-round
    /// ratio's median (see [`Comparison::ci95`]).
    #[serde(default)]
    pub ci95: Option<(f64, f64)>,
    /// Whether the target compares gateways over the lab's rounds (not
    /// BPF_PROG_TEST_RUN figures).
    #[serde(default)]
    pub lab: bool,
    /// For lab targets: whether the two gateways' rounds overlap (see
    /// [`Comparison::within_noise`]).
    #[serde(default)]
    pub within_noise: Option<bool>,
}

/// Prefix of the full-NAT targets' names.
pub const FULLNAT_TARGET: &str = "full-NAT";

/// Issue 18's full-NAT targets: (metric, against, minimum ratio).
pub const FULLNAT_TARGETS: [(Metric, Gateway, f64); 3] = [
    (Metric::NewConnections, Gateway::Xdp, 0.9),
    (Metric::Bulk, Gateway::Xdp, 0.95),
    (Metric::NewConnections, Gateway::Haproxy, 1.4),
];

/// Checks the issues' targets: lb ≥ 0.95× xdp-fwd for new connections and
/// keep-alive, ≥ 0.97× for bulk; new connections/s ≥ 1.0× nftables DNAT
/// and ≥ 1.5× HAProxy; new-flow SYN ≤ 500 ns and established packet ≤
/// 1.5× the `XDP_TX` program in BPF_PROG_TEST_RUN; conntrack at 1M flows
/// no slower per packet than at 100k; full-NAT ≥ 0.9× lb's DNAT mode for
/// new connections, ≥ 0.95× for bulk, ≥ 1.4× HAProxy for new connections
/// (`fullnat`: [`super::results::compare_fullnat`]).
pub fn check_targets(
    comparisons: &[Comparison],
    fullnat: &[Comparison],
    costs: Option<&PacketCosts>,
    conntrack: &[CtScale],
) -> Vec<TargetCheck> {
    let mut t = Vec::new();
    let mut push = |target: &str,
                    wanted: f64,
                    at_most: bool,
                    unit: Unit,
                    measured: Option<f64>,
                    within_noise: Option<Option<bool>>,
                    ci95: Option<(f64, f64)>| {
        let met = measured.is_some_and(|m| if at_most { m <= wanted } else { m >= wanted });
        t.push(TargetCheck {
            target: target.into(),
            wanted,
            at_most,
            measured,
            met,
            unit,
            lab: within_noise.is_some(),
            ci95,
            within_noise: within_noise.flatten(),
        });
    };
    for (metric, against, wanted) in [
        (Metric::NewConnections, Gateway::XdpFwd, 0.95),
        (Metric::KeepAlive, Gateway::XdpFwd, 0.95),
        (Metric::Bulk, Gateway::XdpFwd, 0.97),
        (Metric::NewConnections, Gateway::Nftables, 1.0),
        (Metric::NewConnections, Gateway::Haproxy, 1.5),
    ] {
        let c = comparison(comparisons, metric, against);
        push(
            &format!("{} vs {}", metric.label(), against.short()),
            wanted,
            false,
            Unit::Ratio,
            c.map(|c| c.ratio),
            Some(c.and_then(|c| c.within_noise)),
            c.and_then(|c| c.ci95),
        );
    }
    for (metric, against, wanted) in FULLNAT_TARGETS {
        let c = comparison(fullnat, metric, against);
        let other = if against == Gateway::Xdp {
            "lb DNAT"
        } else {
            against.short()
        };
        push(
            &format!("{FULLNAT_TARGET} {} vs {other}", metric.label()),
            wanted,
            false,
            Unit::Ratio,
            c.map(|c| c.ratio),
            Some(c.and_then(|c| c.within_noise)),
            c.and_then(|c| c.ci95),
        );
    }
    let case = |k: &str| costs.and_then(|c| c.case(k));
    push(
        "new-flow SYN (BPF_PROG_TEST_RUN median)",
        500.0,
        true,
        Unit::Ns,
        case("new_flow_syn").map(|c| c.median_ns),
        None,
        None,
    );
    push(
        "established-flow packet cost vs XDP_TX program",
        1.5,
        true,
        Unit::Ratio,
        case("established").map(|c| c.vs_baseline),
        None,
        None,
    );
    let ct = |flows: u32| {
        conntrack
            .iter()
            .find(|c| c.flows == flows)
            .map(|c| c.median_ns)
    };
    push(
        "conntrack packet cost at 1M flows vs 100k",
        1.0,
        true,
        Unit::Ratio,
        ct(1_000_000)
            .zip(ct(100_000))
            .filter(|(_, k)| *k > 0.0)
            .map(|(m, k)| m / k),
        None,
        None,
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::micro::PacketCost;
    use crate::bench::results::{compare, compare_fullnat, summarize, Sample};

    fn sample(round: u32, gateway: Gateway, metric: Metric, value: f64) -> Sample {
        Sample {
            round,
            gateway,
            metric,
            value,
        }
    }

    #[test]
    fn fullnat_is_read_against_lb_dnat_and_haproxy() {
        let mut s = Vec::new();
        for (r, k) in [(1, 1.0), (2, 0.5)] {
            s.push(sample(r, Gateway::Xdp, Metric::NewConnections, 100.0 * k));
            s.push(sample(
                r,
                Gateway::Fullnat,
                Metric::NewConnections,
                92.0 * k,
            ));
            s.push(sample(
                r,
                Gateway::Haproxy,
                Metric::NewConnections,
                70.0 * k,
            ));
            s.push(sample(r, Gateway::Xdp, Metric::Bulk, 10.0 * k));
            s.push(sample(r, Gateway::Fullnat, Metric::Bulk, 9.0 * k));
        }
        let sum = summarize(&s);
        // lb's own comparisons leave its full-NAT mode out.
        let lb = compare(&s, &sum);
        assert!(lb.iter().all(|c| c.against != Gateway::Fullnat));
        let f = compare_fullnat(&s, &sum);
        let t = check_targets(&lb, &f, None, &[]);
        let by = |name: &str| t.iter().find(|x| x.target == name).unwrap().clone();
        let nc = by("full-NAT new connections/s vs lb DNAT");
        assert!((nc.measured.unwrap() - 0.92).abs() < 1e-12);
        assert!(nc.met && nc.lab, "0.92 >= 0.9");
        let bulk = by("full-NAT bulk Gbit/s vs lb DNAT");
        assert!((bulk.measured.unwrap() - 0.9).abs() < 1e-12);
        assert!(!bulk.met, "0.90 < 0.95");
        let ha = by("full-NAT new connections/s vs HAProxy");
        assert!((ha.measured.unwrap() - 92.0 / 70.0).abs() < 1e-12);
        assert!(!ha.met, "1.31 < 1.4");
        // Round by round: both rounds give the same ratio.
        let c = comparison(&f, Metric::NewConnections, Gateway::Xdp).unwrap();
        assert!((c.per_round.max - c.per_round.min).abs() < 1e-12);
    }

    #[test]
    fn targets_compare_medians_and_note_missing_figures() {
        let s = vec![
            sample(1, Gateway::Direct, Metric::NewConnections, 100.0),
            sample(1, Gateway::XdpFwd, Metric::NewConnections, 100.0),
            sample(1, Gateway::Xdp, Metric::NewConnections, 96.0),
            sample(1, Gateway::Nftables, Metric::NewConnections, 100.0),
            sample(1, Gateway::Haproxy, Metric::NewConnections, 60.0),
            sample(1, Gateway::XdpFwd, Metric::KeepAlive, 100.0),
            sample(1, Gateway::Xdp, Metric::KeepAlive, 94.0),
        ];
        let sum = summarize(&s);
        let t = check_targets(&compare(&s, &sum), &[], None, &[]);
        assert_eq!(t.len(), 11);
        let by = |name: &str| t.iter().find(|x| x.target == name).unwrap().clone();
        let fwd = by("new connections/s vs xdp-fwd");
        assert_eq!(fwd.measured, Some(0.96));
        assert!(fwd.met, "0.96 >= 0.95");
        assert!(fwd.lab);
        assert_eq!(fwd.within_noise, None, "one round: noise not measured");
        let ka = by("keep-alive requests/s vs xdp-fwd");
        assert!(!ka.met, "0.94 < 0.95");
        let nft = by("new connections/s vs nftables DNAT");
        assert_eq!(nft.measured, Some(0.96));
        assert!(!nft.met, "0.96 < 1.0");
        let ha = by("new connections/s vs HAProxy");
        assert_eq!(ha.measured, Some(1.6));
        assert!(ha.met);
        let bulk = by("bulk Gbit/s vs xdp-fwd");
        assert_eq!(bulk.measured, None);
        assert!(!bulk.met);
        for name in [
            "new-flow SYN (BPF_PROG_TEST_RUN median)",
            "established-flow packet cost vs XDP_TX program",
            "conntrack packet cost at 1M flows vs 100k",
        ] {
            let x = by(name);
            assert!(
                x.at_most && !x.lab && x.measured.is_none() && !x.met,
                "{name}"
            );
        }
    }

    #[test]
    fn packet_and_conntrack_targets_read_their_figures() {
        let cost = |case: &str, median_ns: f64, vs_baseline: f64| PacketCost {
            case: case.into(),
            what: case.into(),
            action: "XDP_REDIRECT".into(),
            runs: 10,
            median_ns,
            p10_ns: median_ns,
            p90_ns: median_ns,
            vs_baseline,
            net_ns: median_ns,
        };
        let costs = PacketCosts {
            baseline: cost("baseline", 40.0, 1.0),
            baseline_repeat_ns: 8.0,
            repeat: 100,
            harness_ns: 32.0,
            cases: vec![
                cost("new_flow_syn", 480.0, 12.0),
                cost("established", 64.0, 1.6),
            ],
        };
        let ct = |flows: u32, median_ns: f64| CtScale {
            flows,
            median_ns,
            ..CtScale::default()
        };
        let t = check_targets(
            &[],
            &[],
            Some(&costs),
            &[ct(100_000, 100.0), ct(1_000_000, 110.0)],
        );
        let by = |name: &str| {
            t.iter()
                .find(|x| x.target.starts_with(name))
                .unwrap()
                .clone()
        };
        let syn = by("new-flow SYN");
        assert_eq!(
            (syn.unit, syn.measured, syn.met),
            (Unit::Ns, Some(480.0), true)
        );
        assert_eq!(Unit::Ns.format(480.0), "480 ns");
        let est = by("established");
        assert_eq!((est.measured, est.met), (Some(1.6), false));
        let c = by("conntrack");
        assert!((c.measured.unwrap() - 1.1).abs() < 1e-12);
        assert!(!c.met, "slower at 1M than at 100k");
    }
}
