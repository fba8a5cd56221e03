//! What a benchmark run produces: raw runs, per-cell summaries, ratios
//! against direct routing and the targets, as one serialisable report.

use serde::{Deserialize, Serialize};

use super::conntrack::CtScale;
use super::control::{Failover, MaglevCost};
use super::gateways::Gateway;
use super::machine::Machine;
use super::micro::PacketCosts;
use super::profile::Profile;
use super::stats::Summary;
use super::workloads::{IperfReport, WrkReport};

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

/// One target of the issue, checked against this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// What is compared.
    pub target: String,
    /// The ratio wanted (a minimum, or a maximum when `at_most`).
    pub wanted: f64,
    /// Whether `wanted` is an upper bound.
    pub at_most: bool,
    /// The ratio measured; `None` when a figure is missing.
    pub measured: Option<f64>,
    /// Whether the target is met.
    pub met: bool,
}

/// Checks the targets: new connections/s ≥ 1.25× nftables, ≥ 2.5×
/// HAProxy, ≥ 0.95× direct; keep-alive and bulk ≥ 0.97× direct;
/// established-flow cost ≤ 1.5× the `XDP_TX` program.
pub fn check_targets(summary: &[CellSummary], costs: Option<&PacketCosts>) -> Vec<TargetCheck> {
    let ratio = |metric: Metric, against: Gateway| -> Option<f64> {
        let x = cell(summary, Gateway::Xdp, metric)?.summary.median;
        let o = cell(summary, against, metric)?.summary.median;
        (o != 0.0).then(|| x / o)
    };
    let mut t = Vec::new();
    let mut push = |target: &str, wanted: f64, at_most: bool, measured: Option<f64>| {
        let met = measured.is_some_and(|m| if at_most { m <= wanted } else { m >= wanted });
        t.push(TargetCheck {
            target: target.into(),
            wanted,
            at_most,
            measured,
            met,
        });
    };
    push(
        "new connections/s vs nftables DNAT",
        1.25,
        false,
        ratio(Metric::NewConnections, Gateway::Nftables),
    );
    push(
        "new connections/s vs HAProxy",
        2.5,
        false,
        ratio(Metric::NewConnections, Gateway::Haproxy),
    );
    push(
        "new connections/s vs direct routing",
        0.95,
        false,
        ratio(Metric::NewConnections, Gateway::Direct),
    );
    push(
        "keep-alive requests/s vs direct routing",
        0.97,
        false,
        ratio(Metric::KeepAlive, Gateway::Direct),
    );
    push(
        "bulk throughput vs direct routing",
        0.97,
        false,
        ratio(Metric::Bulk, Gateway::Direct),
    );
    push(
        "established-flow packet cost vs XDP_TX program",
        1.5,
        true,
        costs
            .and_then(|c| c.case("established"))
            .map(|e| e.vs_baseline),
    );
    t
}

/// Settings the run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Quick (smoke) mode.
    pub quick: bool,
    /// Rounds of A B C D.
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
    /// BPF_PROG_TEST_RUN costs.
    pub packet_costs: PacketCosts,
    /// Conntrack at scale.
    pub conntrack: Vec<CtScale>,
    /// Maglev build and swap.
    pub maglev: Vec<MaglevCost>,
    /// Failover as the client sees it.
    pub failover: Failover,
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

    /// Median bpf_stats ns/packet and packets per request of the XDP runs
    /// of `workload`.
    pub fn bpf_summary(&self, workload: &str) -> Option<(Summary, f64)> {
        let runs: Vec<&RunRecord> = self
            .runs
            .iter()
            .filter(|r| r.gateway == Gateway::Xdp && r.workload == workload)
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
    fn targets_compare_medians_and_note_missing_figures() {
        let s = vec![
            sample(1, Gateway::Direct, Metric::NewConnections, 100.0),
            sample(1, Gateway::Xdp, Metric::NewConnections, 96.0),
            sample(1, Gateway::Nftables, Metric::NewConnections, 80.0),
            sample(1, Gateway::Haproxy, Metric::NewConnections, 40.0),
            sample(1, Gateway::Direct, Metric::KeepAlive, 100.0),
            sample(1, Gateway::Xdp, Metric::KeepAlive, 96.0),
        ];
        let t = check_targets(&summarize(&s), None);
        let by = |name: &str| t.iter().find(|x| x.target.contains(name)).unwrap().clone();
        let nft = by("nftables");
        assert_eq!(nft.measured, Some(1.2));
        assert!(!nft.met);
        let ha = by("HAProxy");
        assert_eq!(ha.measured, Some(2.4));
        assert!(!ha.met);
        let direct = by("new connections/s vs direct");
        assert!(direct.met, "0.96 >= 0.95");
        let ka = by("keep-alive");
        assert!(!ka.met, "0.96 < 0.97");
        let bulk = by("bulk");
        assert_eq!(bulk.measured, None);
        assert!(!bulk.met);
        let est = by("established");
        assert!(est.at_most);
        assert!(!est.met);
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
