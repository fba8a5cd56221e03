//! What a benchmark run produces: raw runs, per-cell summaries, ratios
//! against direct routing and the targets, as one serialisable report.

use serde::{Deserialize, Serialize};

use super::conntrack::CtScale;
use super::control::{Failover, MaglevCost};
use super::gateways::Gateway;
use super::machine::Machine;
use super::micro::PacketCosts;
use super::profile::Profile;
use super::stats::{median_ci95, Summary};
use super::workloads::{IperfReport, WrkReport};

pub use super::targets::{check_targets, TargetCheck, Unit, FULLNAT_TARGET};

/// A figure measured per (gateway, round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// New connections per second (one request each, `Connection: close`).
    NewConnections,
    /// Requests per second over keep-alive connections.
    KeepAlive,
    /// Bulk TCP throughput (iperf3), Gbit/s.
    Bulk,
    /// Median latency under the paced load, µs.
    LatencyP50,
    /// 99th percentile latency under the paced load, µs.
    LatencyP99,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 5] = [
        Metric::NewConnections,
        Metric::KeepAlive,
        Metric::Bulk,
        Metric::LatencyP50,
        Metric::LatencyP99,
    ];

    /// Column heading.
    pub fn label(self) -> &'static str {
        match self {
            Metric::NewConnections => "new connections/s",
            Metric::KeepAlive => "keep-alive requests/s",
            Metric::Bulk => "bulk Gbit/s",
            Metric::LatencyP50 => "latency p50 (µs)",
            Metric::LatencyP99 => "latency p99 (µs)",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::LatencyP50 | Metric::LatencyP99)
    }

    /// A value formatted for a table.
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::Bulk => format!("{v:.2}"),
            _ => group_thousands(v.round() as u64),
        }
    }
}

/// `15400` → `15,400`.
pub fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Kernel-side cost of the attached program during one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BpfRun {
    /// Packets the program handled (both interfaces).
    pub packets: u64,
    /// Average ns per packet.
    pub ns_per_packet: f64,
}

/// One workload run: what the tool printed, parsed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Round (1-based).
    pub round: u32,
    /// Gateway.
    pub gateway: Gateway,
    /// `new_connections`, `keep_alive`, `latency` or `bulk`.
    pub workload: String,
    /// wrk's report.
    pub wrk: Option<WrkReport>,
    /// iperf3's report.
    pub iperf: Option<IperfReport>,
    /// bpf_stats of the attached program (XDP only).
    pub bpf: Option<BpfRun>,
    /// Average busy CPUs during the run (`/proc/stat`, whole machine).
    pub cpu_busy: Option<f64>,
}

/// Background load measured before one gateway's turn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Background {
    /// Round (1-based).
    pub round: u32,
    /// Gateway whose turn it was.
    pub gateway: Gateway,
    /// Busy CPUs over one idle second (`None`: unreadable).
    pub busy_cpus: Option<f64>,
    /// TIME_WAIT sockets in the lab's namespaces before they were closed
    /// for this turn (`None`: not counted).
    #[serde(default)]
    pub time_wait_before: Option<u64>,
    /// TIME_WAIT sockets left in the lab's namespaces after they were
    /// closed, before this turn (`None`: not counted).
    #[serde(default)]
    pub time_wait_left: Option<u64>,
}

/// One figure of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Round (1-based).
    pub round: u32,
    /// Gateway.
    pub gateway: Gateway,
    /// Metric.
    pub metric: Metric,
    /// Value in the metric's unit.
    pub value: f64,
}

impl RunRecord {
    /// The figures this run yields.
    pub fn samples(&self) -> Vec<Sample> {
        let s = |metric, value| Sample {
            round: self.round,
            gateway: self.gateway,
            metric,
            value,
        };
        match (self.workload.as_str(), &self.wrk, &self.iperf) {
            ("new_connections", Some(w), _) => vec![s(Metric::NewConnections, w.requests_per_sec)],
            ("keep_alive", Some(w), _) => vec![s(Metric::KeepAlive, w.requests_per_sec)],
            ("latency", Some(w), _) => vec![
                s(Metric::LatencyP50, w.p50_us),
                s(Metric::LatencyP99, w.p99_us),
            ],
            ("bulk", _, Some(i)) => vec![s(Metric::Bulk, i.received_bps / 1e9)],
            _ => Vec::new(),
        }
    }
}

/// Median and spread of one (gateway, metric) cell, and its ratio against
/// direct routing's median in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// Gateway.
    pub gateway: Gateway,
    /// Metric.
    pub metric: Metric,
    /// Over the rounds.
    pub summary: Summary,
    /// Median over direct routing's median.
    pub vs_direct: Option<f64>,
}

/// Summarises `samples` per (gateway, metric), in [`Gateway::ALL`] ×
/// [`Metric::ALL`] order.
pub fn summarize(samples: &[Sample]) -> Vec<CellSummary> {
    let mut out = Vec::new();
    for metric in Metric::ALL {
        let values = |g: Gateway| -> Vec<f64> {
            samples
                .iter()
                .filter(|s| s.gateway == g && s.metric == metric)
                .map(|s| s.value)
                .collect()
        };
        let direct = Summary::of(&values(Gateway::Direct)).map(|s| s.median);
        for gateway in Gateway::ALL {
            if let Some(summary) = Summary::of(&values(gateway)) {
                out.push(CellSummary {
                    gateway,
                    metric,
                    summary,
                    vs_direct: direct.filter(|d| *d != 0.0).map(|d| summary.median / d),
                });
            }
        }
    }
    out
}

/// Looks up a cell.
pub fn cell(summary: &[CellSummary], gateway: Gateway, metric: Metric) -> Option<&CellSummary> {
    summary
        .iter()
        .find(|c| c.gateway == gateway && c.metric == metric)
}

/// One gateway (lb, or lb's full-NAT mode) against another on one metric,
/// in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Metric.
    pub metric: Metric,
    /// The gateway the subject is read against.
    pub against: Gateway,
    /// The subject's median over the other gateway's median.
    pub ratio: f64,
    /// lb's figure over the other's, round by round (the two ran minutes
    /// apart, so slow drifts of the machine cancel): median, range, spread.
    pub per_round: Summary,
    /// 95 % confidence interval of the median round-by-round ratio (see
    /// [`median_ci95`]); `None` below 6 rounds.
    #[serde(default)]
    pub ci95: Option<(f64, f64)>,
    /// Whether lb's rounds and the other gateway's overlap (each one's
    /// min–max range meets the other's): then the difference is within this
    /// run's noise. `None` with fewer than two rounds each: not measured.
    pub within_noise: Option<bool>,
}

/// Whether the ranges of two cells' rounds overlap; `None` unless both
/// have at least two rounds.
pub fn overlap(a: &Summary, b: &Summary) -> Option<bool> {
    (a.n >= 2 && b.n >= 2).then_some(a.max >= b.min && b.max >= a.min)
}

/// lb ([`Gateway::Xdp`]) against every other gateway but its own
/// full-NAT mode, per metric, in [`Metric::ALL`] × [`Gateway::ALL`] order;
/// pairs missing a figure are left out.
pub fn compare(samples: &[Sample], summary: &[CellSummary]) -> Vec<Comparison> {
    let others: Vec<Gateway> = Gateway::ALL
        .into_iter()
        .filter(|g| !matches!(g, Gateway::Xdp | Gateway::Fullnat))
        .collect();
    compare_with(samples, summary, Gateway::Xdp, &others)
}

/// The gateways lb's full-NAT mode is read against (issue 18): lb's own
/// DNAT mode, nftables DNAT and HAProxy.
pub const FULLNAT_AGAINST: [Gateway; 3] = [Gateway::Xdp, Gateway::Nftables, Gateway::Haproxy];

/// lb's full-NAT mode ([`Gateway::Fullnat`]) against [`FULLNAT_AGAINST`],
/// per metric.
pub fn compare_fullnat(samples: &[Sample], summary: &[CellSummary]) -> Vec<Comparison> {
    compare_with(samples, summary, Gateway::Fullnat, &FULLNAT_AGAINST)
}

/// `subject` against each of `others`, per metric: the ratio of the
/// medians and the round-by-round ratios.
pub fn compare_with(
    samples: &[Sample],
    summary: &[CellSummary],
    subject: Gateway,
    others: &[Gateway],
) -> Vec<Comparison> {
    let mut out = Vec::new();
    for metric in Metric::ALL {
        let Some(x) = cell(summary, subject, metric) else {
            continue;
        };
        let by_round = |g: Gateway| -> Vec<(u32, f64)> {
            samples
                .iter()
                .filter(|s| s.gateway == g && s.metric == metric)
                .map(|s| (s.round, s.value))
                .collect()
        };
        let lb = by_round(subject);
        for &against in others {
            let Some(o) = cell(summary, against, metric) else {
                continue;
            };
            if o.summary.median == 0.0 {
                continue;
            }
            let other = by_round(against);
            let ratios: Vec<f64> = lb
                .iter()
                .filter_map(|(r, v)| {
                    let (_, ov) = other.iter().find(|(or, _)| or == r)?;
                    (*ov != 0.0).then(|| v / ov)
                })
                .collect();
            let Some(per_round) = Summary::of(&ratios) else {
                continue;
            };
            out.push(Comparison {
                metric,
                against,
                ratio: x.summary.median / o.summary.median,
                per_round,
                ci95: median_ci95(&ratios),
                within_noise: overlap(&x.summary, &o.summary),
            });
        }
    }
    out
}

/// Looks up a comparison.
pub fn comparison(c: &[Comparison], metric: Metric, against: Gateway) -> Option<&Comparison> {
    c.iter()
        .find(|c| c.metric == metric && c.against == against)
}

/// Settings the run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Quick (smoke) mode.
    pub quick: bool,
    /// Rounds of every gateway in turn.
    pub rounds: u32,
    /// wrk threads for the throughput workloads.
    pub wrk_threads: u32,
    /// wrk connections for the throughput workloads.
    pub wrk_connections: u32,
    /// Seconds per throughput run (new connections, keep-alive).
    pub throughput_secs: u64,
    /// Connections of the paced latency run.
    pub latency_connections: u32,
    /// Pause after each response per connection in the latency run (ms).
    pub latency_delay_ms: u32,
    /// Seconds per latency run.
    pub latency_secs: u64,
    /// Seconds per iperf3 run.
    pub bulk_secs: u64,
    /// Single BPF_PROG_TEST_RUN runs per micro case.
    pub micro_runs: u32,
    /// `repeat` of the baseline's repeated run.
    pub micro_repeat: u32,
    /// Conntrack table sizes measured.
    pub conntrack_sizes: Vec<u32>,
    /// Whether lb-bench itself was an optimised build (matters for the
    /// userspace Maglev timings only).
    pub optimized_build: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// Wall time of the whole run in seconds.
    pub wall_secs: f64,
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub settings: Settings,
    /// Every workload run.
    pub runs: Vec<RunRecord>,
    /// Busy CPUs while the lab was idle, before each gateway's turn.
    pub background: Vec<Background>,
    /// Per (gateway, metric): median, spread, ratio against direct.
    pub summary: Vec<CellSummary>,
    /// lb against each other gateway, per metric.
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// lb's full-NAT mode against lb's DNAT mode, nftables and HAProxy,
    /// per metric (empty in reports from before the full-NAT gateway).
    #[serde(default)]
    pub fullnat_comparisons: Vec<Comparison>,
    /// BPF_PROG_TEST_RUN costs.
    pub packet_costs: PacketCosts,
    /// Conntrack at scale.
    pub conntrack: Vec<CtScale>,
    /// Maglev build and swap.
    pub maglev: Vec<MaglevCost>,
    /// Failover as the client sees it.
    pub failover: Failover,
    /// Legitimate connections under a saturating SYN flood, per gateway.
    #[serde(default)]
    pub flood: Vec<super::flood::FloodRun>,
    /// CPU profiles (when perf is available and the run is a full one).
    pub profiles: Vec<Profile>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
}

impl Report {
    /// Every sample of every run.
    pub fn samples(&self) -> Vec<Sample> {
        self.runs.iter().flat_map(RunRecord::samples).collect()
    }

    /// Computes what is derived from the raw figures: the summary, the
    /// comparisons and the targets (also when re-rendering an older report).
    pub fn derive(&mut self) {
        let samples = self.samples();
        self.summary = summarize(&samples);
        self.comparisons = compare(&samples, &self.summary);
        self.fullnat_comparisons = compare_fullnat(&samples, &self.summary);
        self.targets = check_targets(
            &self.comparisons,
            &self.fullnat_comparisons,
            Some(&self.packet_costs),
            &self.conntrack,
        );
    }

    /// Median CPU time (µs, all processes and softirqs together) per
    /// request of `workload` through `gateway`: busy CPUs over requests/s.
    pub fn cpu_us_per_request(&self, gateway: Gateway, workload: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.gateway == gateway && r.workload == workload)
            .filter_map(|r| {
                let rate = r.wrk.as_ref()?.requests_per_sec;
                (rate > 0.0).then_some(r.cpu_busy? * 1e6 / rate)
            })
            .collect();
        Summary::of(&v).map(|s| s.median)
    }

    /// Median bpf_stats ns/packet and packets per request of the runs of
    /// `workload` through `gateway` (one with an XDP program attached).
    pub fn bpf_summary(&self, gateway: Gateway, workload: &str) -> Option<(Summary, f64)> {
        let runs: Vec<&RunRecord> = self
            .runs
            .iter()
            .filter(|r| r.gateway == gateway && r.workload == workload)
            .collect();
        let ns: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.bpf.map(|b| b.ns_per_packet))
            .collect();
        let per_req: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                let w = r.wrk.as_ref()?;
                let b = r.bpf?;
                (w.requests > 0).then(|| b.packets as f64 / w.requests as f64)
            })
            .collect();
        Some((
            Summary::of(&ns)?,
            Summary::of(&per_req).map_or(f64::NAN, |s| s.median),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: u32, gateway: Gateway, metric: Metric, value: f64) -> Sample {
        Sample {
            round,
            gateway,
            metric,
            value,
        }
    }

    #[test]
    fn cells_are_summarised_against_direct_of_the_same_run() {
        let mut s = Vec::new();
        for (r, d, x) in [(1, 100.0, 90.0), (2, 110.0, 99.0), (3, 90.0, 120.0)] {
            s.push(sample(r, Gateway::Direct, Metric::NewConnections, d));
            s.push(sample(r, Gateway::Xdp, Metric::NewConnections, x));
        }
        let sum = summarize(&s);
        assert_eq!(sum.len(), 2);
        let d = cell(&sum, Gateway::Direct, Metric::NewConnections).unwrap();
        assert_eq!(d.summary.median, 100.0);
        assert_eq!(d.vs_direct, Some(1.0));
        let x = cell(&sum, Gateway::Xdp, Metric::NewConnections).unwrap();
        assert_eq!(x.summary.median, 99.0);
        assert!((x.vs_direct.unwrap() - 0.99).abs() < 1e-12);
        assert!(cell(&sum, Gateway::Haproxy, Metric::NewConnections).is_none());
    }

    #[test]
    fn lb_is_compared_round_by_round_and_overlaps_are_noise() {
        let mut s = Vec::new();
        // Round 2 is slower for everyone: the round-by-round ratio holds.
        for (r, scale) in [(1, 1.0), (2, 0.8), (3, 0.9)] {
            s.push(sample(
                r,
                Gateway::XdpFwd,
                Metric::NewConnections,
                100.0 * scale,
            ));
            s.push(sample(
                r,
                Gateway::Xdp,
                Metric::NewConnections,
                90.0 * scale,
            ));
            s.push(sample(
                r,
                Gateway::Nftables,
                Metric::NewConnections,
                50.0 * scale,
            ));
        }
        let c = compare(&s, &summarize(&s));
        let fwd = comparison(&c, Metric::NewConnections, Gateway::XdpFwd).unwrap();
        assert!((fwd.ratio - 0.9).abs() < 1e-12);
        assert_eq!(fwd.per_round.n, 3);
        assert!((fwd.per_round.median - 0.9).abs() < 1e-12);
        assert!(
            fwd.per_round.spread_pct < 1e-9,
            "paired ratios cancel the drift"
        );
        // lb's rounds 72..90 meet xdp-fwd's 80..100: within noise.
        assert_eq!(fwd.within_noise, Some(true));
        // 72..90 against nftables' 40..50: apart.
        let nft = comparison(&c, Metric::NewConnections, Gateway::Nftables).unwrap();
        assert_eq!(nft.within_noise, Some(false));
        assert!(comparison(&c, Metric::NewConnections, Gateway::Direct).is_none());
        assert!(comparison(&c, Metric::NewConnections, Gateway::Xdp).is_none());
    }

    #[test]
    fn six_rounds_give_the_round_by_round_interval() {
        let mut s = Vec::new();
        for (r, lb) in [
            (1, 90.0),
            (2, 95.0),
            (3, 85.0),
            (4, 92.0),
            (5, 88.0),
            (6, 99.0),
        ] {
            s.push(sample(r, Gateway::XdpFwd, Metric::Bulk, 100.0));
            s.push(sample(r, Gateway::Xdp, Metric::Bulk, lb));
        }
        let c = compare(&s, &summarize(&s));
        let b = comparison(&c, Metric::Bulk, Gateway::XdpFwd).unwrap();
        let (lo, hi) = b.ci95.unwrap();
        assert!((lo - 0.85).abs() < 1e-12 && (hi - 0.99).abs() < 1e-12);
        let t = check_targets(&c, &[], None, &[]);
        let bulk = t.iter().find(|t| t.target.starts_with("bulk")).unwrap();
        assert_eq!(bulk.ci95, b.ci95);
    }

    #[test]
    fn overlap_needs_two_rounds_each() {
        let a = Summary::of(&[1.0, 2.0]).unwrap();
        let b = Summary::of(&[2.0, 3.0]).unwrap();
        let c = Summary::of(&[2.5, 3.0]).unwrap();
        assert_eq!(overlap(&a, &b), Some(true), "touching ranges overlap");
        assert_eq!(overlap(&a, &c), Some(false));
        assert_eq!(overlap(&c, &a), Some(false));
        assert_eq!(overlap(&a, &Summary::of(&[1.5]).unwrap()), None);
    }

    #[test]
    fn runs_yield_their_metrics() {
        let r = RunRecord {
            round: 2,
            gateway: Gateway::Nftables,
            workload: "latency".into(),
            wrk: Some(WrkReport {
                p50_us: 120.0,
                p99_us: 900.0,
                ..WrkReport::default()
            }),
            iperf: None,
            bpf: None,
            cpu_busy: Some(1.9),
        };
        let s = r.samples();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].metric, s[0].value), (Metric::LatencyP50, 120.0));
        assert_eq!((s[1].metric, s[1].value), (Metric::LatencyP99, 900.0));
        let bulk = RunRecord {
            workload: "bulk".into(),
            wrk: None,
            iperf: Some(IperfReport {
                received_bps: 9.5e9,
                sent_bps: 9.6e9,
                retransmits: 0,
            }),
            ..r
        };
        assert_eq!(bulk.samples()[0].value, 9.5);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(15_400), "15,400");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(Metric::Bulk.format(9.456), "9.46");
        assert_eq!(Metric::KeepAlive.format(75_812.4), "75,812");
    }
}
