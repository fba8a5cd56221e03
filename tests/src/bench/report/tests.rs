//! Tests of the report: markdown, files, re-rendering.

use super::*;
use crate::bench::control::{Failover, FailoverRun, MaglevCost};
use crate::bench::machine::Machine;
use crate::bench::micro::{PacketCost, PacketCosts};
use crate::bench::results::{Background, RunRecord, Settings};
use crate::bench::stats::Summary;
use crate::bench::workloads::{IperfReport, WrkReport};

fn cost(case: &str, median_ns: f64) -> PacketCost {
    PacketCost {
        case: case.into(),
        what: format!("{case} packet"),
        action: "XDP_REDIRECT".into(),
        runs: 100,
        median_ns,
        p10_ns: median_ns - 5.0,
        p90_ns: median_ns + 5.0,
        vs_baseline: median_ns / 40.0,
        net_ns: median_ns - 30.0,
    }
}

fn report() -> Report {
    let mut runs = Vec::new();
    // Two rounds; the second 2 % faster for every gateway but lb's new
    // connections, which are 11,100 there.
    for (round, g, conn, ka, gbit) in [
        (Gateway::Direct, 12_000.0, 70_000.0, 8.0),
        (Gateway::XdpFwd, 11_000.0, 72_000.0, 7.5),
        (Gateway::Xdp, 10_500.0, 69_000.0, 7.4),
        (Gateway::Fullnat, 9_800.0, 66_000.0, 7.2),
        (Gateway::Nftables, 9_000.0, 60_000.0, 7.0),
        (Gateway::Haproxy, 4_000.0, 40_000.0, 5.0),
    ]
    .into_iter()
    .flat_map(|(g, c, k, b)| {
        let conn2 = if g == Gateway::Xdp {
            11_100.0
        } else {
            c * 1.02
        };
        [(1, g, c, k, b), (2, g, conn2, k * 1.02, b * 1.02)]
    }) {
        let wrk = |rps: f64| WrkReport {
            requests: (rps * 6.0) as u64,
            seconds: 6.0,
            requests_per_sec: rps,
            p50_us: 100.0,
            p90_us: 150.0,
            p99_us: 300.0,
            ..WrkReport::default()
        };
        let bpf = g.runs_xdp().then_some(crate::bench::results::BpfRun {
            packets: (conn * 6.0 * 10.0) as u64,
            ns_per_packet: if g == Gateway::Xdp { 250.0 } else { 150.0 },
        });
        let rec = |workload: &str, wrk: Option<WrkReport>, iperf| RunRecord {
            round,
            gateway: g,
            workload: workload.into(),
            wrk,
            iperf,
            bpf,
            cpu_busy: Some(2.0),
        };
        runs.push(rec("new_connections", Some(wrk(conn)), None));
        runs.push(rec("keep_alive", Some(wrk(ka)), None));
        runs.push(rec("latency", Some(wrk(3000.0)), None));
        runs.push(rec(
            "bulk",
            None,
            Some(IperfReport {
                received_bps: gbit * 1e9,
                sent_bps: gbit * 1e9,
                retransmits: 0,
            }),
        ));
    }
    let costs = PacketCosts {
        baseline: cost("baseline", 40.0),
        baseline_repeat_ns: 8.0,
        repeat: 1000,
        harness_ns: 32.0,
        cases: vec![
            cost("new_flow_syn", 900.0),
            cost("first_ack", 150.0),
            cost("established", 120.0),
            cost("pass_through", 70.0),
            cost("xdp_fwd", 100.0),
        ],
    };
    let one = Summary::of(&[1.0]).unwrap();
    let mut r = Report {
        started: "2026-01-01T00:00:00Z".into(),
        wall_secs: 600.0,
        machine: Machine {
            nproc: 2,
            cpu_model: "Test CPU".into(),
            kernel: "6.18.0".into(),
            memory_gib: 24.0,
            tools: vec![("wrk".into(), "wrk 4.1.0".into())],
        },
        settings: Settings {
            quick: false,
            rounds: 2,
            wrk_threads: 2,
            wrk_connections: 64,
            throughput_secs: 6,
            latency_connections: 4,
            latency_delay_ms: 1,
            latency_secs: 5,
            bulk_secs: 5,
            micro_runs: 100,
            micro_repeat: 1000,
            conntrack_sizes: vec![],
            optimized_build: true,
        },
        runs,
        background: vec![Background {
            round: 1,
            gateway: Gateway::Direct,
            busy_cpus: Some(0.05),
            time_wait_before: Some(12_345),
            time_wait_left: Some(0),
        }],
        summary: Vec::new(),
        comparisons: Vec::new(),
        fullnat_comparisons: Vec::new(),
        packet_costs: costs,
        conntrack: vec![],
        maglev: vec![MaglevCost {
            backends: 3,
            build_ms: one,
            swap_ms: one,
        }],
        failover: Failover {
            interval_ms: 500,
            timeout_ms: 250,
            unhealthy_threshold: 2,
            runs: vec![FailoverRun {
                node: "cp-02".into(),
                last_failure_ms: 800.0,
                failed: 12,
                probes: 60,
                settled: true,
            }],
            last_failure_ms: Summary::of(&[800.0]).unwrap(),
        },
        flood: vec![],
        profiles: vec![],
        targets: vec![],
    };
    r.derive();
    r
}

#[test]
fn markdown_has_the_tables_targets_and_explanations() {
    let md = markdown(&report());
    assert!(md.contains("**Machine:** 2 CPUs (Test CPU), 24 GiB, Linux 6.18.0."));
    assert!(md.contains("| lb (XDP, native) | 10,800 (0.89×) | 69,690 (0.99×) | 7.47 (0.93×) |"));
    assert!(md.contains(
        "| xdp-fwd (trivial XDP forwarder) | 11,110 (0.92×) | 72,720 (1.03×) | 7.58 (0.94×) |"
    ));
    // lb against each gateway: ratio of medians, the per-round ratios'
    // range and spread, and "within noise" where the rounds overlap
    // (lb 10,500–11,100 meets xdp-fwd 11,000–11,220, not nftables).
    assert!(md.contains(
        "| new connections/s | 0.89× [0.88–0.91, 4 %] | 0.97× [0.95–0.99, 4 %] within noise \
         | 1.19× [1.17–1.21, 4 %] | 2.67× [2.62–2.72, 4 %] |"
    ));
    assert!(md.contains(
        "| keep-alive requests/s | 0.99× [0.99–0.99, 0 %] within noise | 0.96× [0.96–0.96, 0 %] |"
    ));
    // Round by round, the lowest of each row in bold.
    assert!(md.contains("| lb (XDP, native) | **10,500** | 11,100 |"));
    assert!(
        md.contains("| new connections/s vs xdp-fwd | ≥ 0.95× | 0.97× | met |  | within noise |")
    );
    assert!(md.contains("| keep-alive requests/s vs xdp-fwd | ≥ 0.95× | 0.96× | met |  |  |"));
    assert!(md.contains("| new connections/s vs nftables DNAT | ≥ 1.00× | 1.19× | met |  |  |"));
    assert!(md.contains("| new connections/s vs HAProxy | ≥ 1.50× | 2.67× | met |  |  |"));
    assert!(md.contains(
        "| new-flow SYN (BPF_PROG_TEST_RUN median) | ≤ 500 ns | 900 ns | **missed** |  |  |"
    ));
    assert!(md.contains(
        "| established-flow packet cost vs XDP_TX program | ≤ 1.50× | 3.00× | **missed** |  |  |"
    ));
    assert!(md.contains(
        "**Precision:** 2 rounds cannot give a 95 % confidence interval for the headline \
         ratios (it takes 6)."
    ));
    assert!(md.contains("8 of 11 targets met."), "{md}");
    // Full-NAT against lb's DNAT mode, nftables and HAProxy, in one table.
    assert!(md.contains("### Full-NAT against DNAT and HAProxy"));
    assert!(
        md.contains("| new connections/s | 9,898 | 10,800 | 0.92× [0.90–0.93] |"),
        "{md}"
    );
    assert!(md.contains("| full-NAT new connections/s vs lb DNAT | ≥ 0.90× | 0.92× | met |  |  |"));
    assert!(md.contains("| full-NAT new connections/s vs HAProxy | ≥ 1.40× | 2.45× | met |"));
    // Only the missed targets get an explanation.
    assert!(md.contains("- **established-flow packet cost vs XDP_TX program**"));
    assert!(md.contains(
        "- **new-flow SYN (BPF_PROG_TEST_RUN median)**: per path (median of single runs): \
         new_flow_syn 900 ns, first_ack 150 ns, established 120 ns, pass_through 70 ns, xdp_fwd \
         100 ns."
    ));
    assert!(!md.contains("- **new connections/s vs HAProxy**"));
    assert!(md.contains(
        "the trivial forwarder `xdp_fwd` (a FIB lookup per packet, no NAT) takes 100 ns, so \
         an established lb packet costs 1.20× what any forwarding XDP program pays here"
    ));
    assert!(md.contains("| lb | new_connections | 250 | 250 | 250 | 10.0 |"));
    assert!(md.contains("| xdp-fwd | new_connections | 150 | 150 | 150 | 10.0 |"));
    assert!(md.contains(
        "**TIME_WAIT between turns:** before each gateway's turn the lab held up to 12,345 \
         TIME_WAIT sockets from the previous turn; closing them (`ss -K`) left 0 (the most \
         over 1 turn), so no gateway inherited"
    ));
    assert!(md.contains("| cp-02 | 800 ms | 12 | 60 | yes |"));
    assert!(md.contains("median 0.05, max 0.05 of 2"));
    assert!(md.contains(&format!("![ratios against direct routing]({SVG})")));
}

#[test]
fn precision_reports_headline_intervals_wider_than_ten_percent() {
    let mut r = report();
    for t in r.targets.iter_mut().filter(|t| t.lab) {
        let m = t.measured.unwrap();
        t.ci95 = Some((m * 0.97, m * 1.03));
    }
    assert!(precision(&r).contains("every headline ratio is narrower than 10 %"));
    let bulk = r
        .targets
        .iter_mut()
        .find(|t| t.target.starts_with("bulk"))
        .unwrap();
    bulk.ci95 = Some((0.9, 1.02));
    let p = precision(&r);
    assert!(p.contains("7 of 8 headline ratios"), "{p}");
    assert!(p.contains("wider: bulk Gbit/s vs xdp-fwd (12 %)"), "{p}");
    let line = target_line(
        r.targets
            .iter()
            .find(|t| t.target.starts_with("bulk"))
            .unwrap(),
    );
    assert!(
        line.contains("| met | 0.90–1.02 | within noise |"),
        "{line}"
    );
}

#[test]
fn all_three_files_are_written() {
    let dir = tempfile::tempdir().unwrap();
    write_all(&report(), dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(JSON)).unwrap()).unwrap();
    assert_eq!(json["machine"]["nproc"], 2);
    assert_eq!(json["runs"].as_array().unwrap().len(), 48);
    assert_eq!(json["targets"].as_array().unwrap().len(), 11);
    assert_eq!(json["fullnat_comparisons"].as_array().unwrap().len(), 15);
    assert_eq!(json["comparisons"].as_array().unwrap().len(), 20);
    assert_eq!(json["runs"][8]["gateway"], "xdp-fwd");
    assert!(std::fs::read_to_string(dir.path().join(SVG))
        .unwrap()
        .starts_with("<svg"));
    assert!(std::fs::read_to_string(dir.path().join(MARKDOWN))
        .unwrap()
        .starts_with("# Benchmarks"));
}

#[test]
fn the_report_is_rerendered_from_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let r = report();
    write_all(&r, dir.path()).unwrap();
    let before = std::fs::read_to_string(dir.path().join(MARKDOWN)).unwrap();
    std::fs::remove_file(dir.path().join(MARKDOWN)).unwrap();
    let back = rerender(dir.path()).unwrap();
    // serde_json's float parsing may differ in the last bit; compare outcomes.
    let outcome = |t: &[TargetCheck]| -> Vec<(String, bool)> {
        t.iter().map(|t| (t.target.clone(), t.met)).collect()
    };
    assert_eq!(outcome(&back.targets), outcome(&r.targets));
    let after = std::fs::read_to_string(dir.path().join(MARKDOWN)).unwrap();
    assert_eq!(before, after);
    assert!(rerender(&dir.path().join("missing")).is_err());
}
