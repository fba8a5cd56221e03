//! `lb-bench`: the XDP load balancer (in DNAT and in full-NAT mode) against
//! direct routing, a trivial XDP forwarder on the same route (the ceiling of
//! any XDP program on the lab), nftables DNAT and HAProxy on one namespace
//! lab, plus data-path
//! micro-costs, conntrack at scale and control-plane costs, written up as
//! markdown, SVG and JSON.
//!
//! Phases: micro-costs in a namespace of their own ([`micro`],
//! [`conntrack`], Maglev in [`control`]); then the lab: nginx on every
//! backend ([`servers`]), rounds of the six gateways ([`gateways`]) each
//! running the workloads ([`workloads`]), a CPU profile ([`profile`]) and
//! the failover measurement; finally the report ([`report`]).

pub mod bpfstats;
pub mod chart;
pub mod conntrack;
pub mod control;
pub mod flood;
pub mod frames;
pub mod fullnat;
pub mod gateways;
pub mod machine;
pub mod micro;
pub mod profile;
pub mod report;
pub mod results;
pub mod servers;
pub mod stats;
pub mod targets;
pub mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use bpfstats::{attached_xdp_prog, RunStats, StatsEnabled};
use gateways::{Active, Gateway};
use machine::{CpuTimes, Machine};
use results::{BpfRun, Report, RunRecord, Settings};
use workloads::{run_iperf, run_wrk, write_pacing_script, WrkSpec};

use crate::lab::{Lab, LabOptions};
use crate::lb::HealthSettings;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Quick (smoke) mode: one round, short runs, small tables.
    pub quick: bool,
    /// Rounds of the lab, instead of the mode's (1 quick, 9 full).
    pub lab_rounds: Option<u32>,
    /// Where the report goes.
    pub out: PathBuf,
    /// The `lb` binary.
    pub lb_bin: PathBuf,
    /// The `cp-sim` binary (simulated nodes for the failover measurement).
    pub cp_sim: PathBuf,
}

impl Options {
    /// The settings of this mode.
    pub fn settings(&self) -> Settings {
        let q = self.quick;
        Settings {
            quick: q,
            // Nine rounds: the 95 % interval of a median over 9 paired
            // ratios drops the extreme round at each end (see
            // stats::median_ci95), so one disturbed round cannot widen it.
            rounds: self.lab_rounds.unwrap_or(if q { 1 } else { 9 }),
            wrk_threads: 2,
            wrk_connections: 64,
            throughput_secs: if q { 2 } else { 6 },
            latency_connections: 4,
            latency_delay_ms: 1,
            latency_secs: if q { 2 } else { 5 },
            bulk_secs: if q { 2 } else { 5 },
            micro_runs: if q { 5_000 } else { 50_000 },
            micro_repeat: if q { 100_000 } else { 1_000_000 },
            conntrack_sizes: if q {
                vec![1_000, 100_000]
            } else {
                vec![1_000, 100_000, 1_000_000]
            },
            optimized_build: !cfg!(debug_assertions),
        }
    }
}

/// Runs the whole benchmark and writes the report into `opts.out`.
pub fn run(opts: &Options) -> Result<Report> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lb-bench needs root (network namespaces, XDP, BPF_PROG_TEST_RUN)");
    }
    let missing = machine::missing_tools();
    if !missing.is_empty() {
        bail!("missing tools: {missing:?} (run `cargo xtask setup`)");
    }
    let started_at = SystemTime::now();
    let started = Instant::now();
    let settings = opts.settings();
    let machine = Machine::probe();
    eprintln!(
        "lb-bench: {} mode on {} CPUs ({}), Linux {}",
        if opts.quick { "quick" } else { "full" },
        machine.nproc,
        machine.cpu_model,
        machine.kernel
    );

    // Phase 1: micro-costs, in a namespace of their own.
    let (packet_costs, conntrack, maglev) = micro_phase(&settings)?;

    // Phase 2: the lab.
    let lab = Lab::create(LabOptions {
        prefix: None,
        backends: 3,
        cp_sim: Some(opts.cp_sim.clone()),
        lb_bin: Some(opts.lb_bin.clone()),
    })?;
    tune_load_generator(&lab)?;
    for i in 1..=lab.backends() {
        servers::start_nginx(&lab, i)?;
    }
    servers::start_iperf_server(&lab, 1)?;
    let pace = lab.dir().join("pace.lua");
    write_pacing_script(&pace, settings.latency_delay_ms)?;
    let stats_on = StatsEnabled::new()?;
    let mut runs = Vec::new();
    let mut background = Vec::new();
    for round in 1..=settings.rounds {
        for g in Gateway::ALL {
            eprintln!("lb-bench: round {round}/{}: {}", settings.rounds, g.label());
            let time_wait_before = Some(count_time_wait(&lab)?);
            clear_time_wait(&lab)?;
            let time_wait_left = Some(count_time_wait(&lab)?);
            let active = Active::bring_up(&lab, g)?;
            background.push(results::Background {
                round,
                gateway: g,
                busy_cpus: idle_load(machine.nproc),
                time_wait_before,
                time_wait_left,
            });
            runs.extend(
                run_workloads(&lab, &active, round, &settings, &pace, machine.nproc)
                    .with_context(|| format!("round {round}, {}", g.label()))?,
            );
            active.teardown()?;
        }
    }
    drop(stats_on);
    let flood = flood_phase(&lab, &settings)?;
    let profiles = if !opts.quick && profile::perf_available() {
        profiles(&lab, &settings)?
    } else {
        Vec::new()
    };
    eprintln!("lb-bench: failover");
    clear_time_wait(&lab)?;
    let failover = control::failover(
        &lab,
        if opts.quick { 1 } else { 3 },
        HealthSettings::default(),
    )?;
    drop(lab);

    let mut report = Report {
        started: humantime::format_rfc3339_seconds(started_at).to_string(),
        wall_secs: 0.0,
        machine,
        settings,
        runs,
        background,
        summary: Vec::new(),
        comparisons: Vec::new(),
        fullnat_comparisons: Vec::new(),
        packet_costs,
        conntrack,
        maglev,
        failover,
        flood,
        profiles,
        targets: Vec::new(),
    };
    report.derive();
    report.wall_secs = started.elapsed().as_secs_f64();
    report::write_all(&report, &opts.out)?;
    Ok(report)
}

/// Client-side (and HAProxy's) connection churn: with `Connection: close`
/// tens of thousands of sockets sit in TIME_WAIT after a run, and without
/// reuse `connect()` spends its time searching for a free port, penalising
/// whichever gateway runs next. Usual load-generator settings, applied to
/// the client and gateway namespaces for every gateway alike.
fn tune_load_generator(lab: &Lab) -> Result<()> {
    for ns in [lab.client_ns(), lab.gateway_ns()] {
        crate::lab::ns_exec(
            &ns,
            [
                "sysctl",
                "-qw",
                "net.ipv4.tcp_tw_reuse=1",
                "net.ipv4.ip_local_port_range=1024 65535",
            ],
        )?;
    }
    Ok(())
}

/// Closes every TIME_WAIT socket in the lab (`ss -K`), so each gateway's
/// turn starts from the same state. It also matters for correctness: the
/// sockets HAProxy leaves in TIME_WAIT on the VIP would make the gateway
/// (early demux) claim, then drop, forwarded packets of the next gateway
/// that reuse their 4-tuples.
fn clear_time_wait(lab: &Lab) -> Result<()> {
    let mut namespaces = vec![lab.client_ns(), lab.gateway_ns()];
    namespaces.extend((1..=lab.backends()).map(|i| lab.backend_ns(i)));
    for ns in namespaces {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "ss", "-K", "-H", "state", "time-wait"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("running ss -K")?;
        if !status.success() {
            bail!("ss -K state time-wait in {ns} failed ({status})");
        }
    }
    Ok(())
}

/// TIME_WAIT sockets in the lab's namespaces: counted before and after
/// [`clear_time_wait`], so the report shows what a turn would have
/// inherited from the previous one and that none was left (the routed
/// gateways and HAProxy use the same VIP:port 4-tuples on the backends and
/// on the gateway).
fn count_time_wait(lab: &Lab) -> Result<u64> {
    let mut namespaces = vec![lab.client_ns(), lab.gateway_ns()];
    namespaces.extend((1..=lab.backends()).map(|i| lab.backend_ns(i)));
    let mut n = 0;
    for ns in namespaces {
        let out = crate::lab::ns_exec(&ns, ["ss", "-H", "-tan", "state", "time-wait"])?;
        n += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64;
    }
    Ok(n)
}

/// Busy CPUs over one second while the lab is idle: other activity on the
/// machine that the figures of this turn share the CPUs with.
fn idle_load(nproc: usize) -> Option<f64> {
    let a = CpuTimes::now()?;
    std::thread::sleep(Duration::from_secs(1));
    CpuTimes::now()?.busy_cpus_since(&a, nproc)
}

type MicroFigures = (
    micro::PacketCosts,
    Vec<conntrack::CtScale>,
    Vec<control::MaglevCost>,
);

/// One object's figures in a [`micro_only`] round: its packet costs and
/// conntrack scale cases.
pub type ObjectFigures = (micro::PacketCosts, Vec<conntrack::CtScale>);

/// Only the data-path micro-costs, to compare builds of the XDP object
/// side by side: `rounds` rounds, each measuring every object in turn (reversed
/// every other round)
/// (`None`: the embedded one) with `runs` single runs per case
/// ([`micro::packet_costs`]) and, when `ct_flows` is not empty, the
/// conntrack scale cases ([`conntrack::measure_scale`]). Returns, per
/// round, per object, the packet costs and the scale figures.
pub fn micro_only(
    objects: &[Option<&[u8]>],
    runs: u32,
    rounds: u32,
    ct_flows: &[u32],
) -> Result<Vec<Vec<ObjectFigures>>> {
    let ns = micro::MicroNs::create()?;
    let ifindexes = [ns.ifindex("gwc")?, ns.ifindex("gwb")?];
    ns.run(move || {
        (0..rounds)
            .map(|round| {
                // Odd rounds run the objects in reverse order, so neither
                // always runs first (or right after the other).
                let mut order: Vec<usize> = (0..objects.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                let mut measured = Vec::new();
                for i in order {
                    let o = objects[i];
                    let costs = micro::packet_costs(o, runs, 100_000, ifindexes)?;
                    let ct = ct_flows
                        .iter()
                        .map(|&n| conntrack::measure_scale(o, n, runs.min(20_000), ifindexes))
                        .collect::<Result<Vec<_>>>()?;
                    measured.push((i, (costs, ct)));
                }
                measured.sort_by_key(|(i, _)| *i);
                Ok(measured.into_iter().map(|(_, m)| m).collect())
            })
            .collect()
    })?
}

fn micro_phase(settings: &Settings) -> Result<MicroFigures> {
    eprintln!("lb-bench: data-path micro-costs");
    let ns = micro::MicroNs::create()?;
    let ifindexes = [ns.ifindex("gwc")?, ns.ifindex("gwb")?];
    let runs = settings.micro_runs;
    let repeat = settings.micro_repeat;
    let sizes = settings.conntrack_sizes.clone();
    let maglev_runs = if settings.quick { 3 } else { 10 };
    ns.run(move || -> Result<MicroFigures> {
        let costs = micro::packet_costs(None, runs, repeat, ifindexes)?;
        let mut ct = Vec::new();
        for n in sizes {
            eprintln!("lb-bench: conntrack with {n} flows");
            ct.push(conntrack::measure_scale(
                None,
                n,
                runs.min(20_000),
                ifindexes,
            )?);
        }
        eprintln!("lb-bench: Maglev build and swap");
        let maglev = control::maglev_costs(&[3, 100, 1000], maglev_runs, ifindexes)?;
        Ok((costs, ct, maglev))
    })?
}

/// Runs the four workloads through `active`.
fn run_workloads(
    lab: &Lab,
    active: &Active<'_>,
    round: u32,
    st: &Settings,
    pace: &std::path::Path,
    nproc: usize,
) -> Result<Vec<RunRecord>> {
    let client = lab.client_ns();
    let url = active.http_url();
    let prog = if active.gateway().runs_xdp() {
        Some(attached_xdp_prog(&lab.gateway_ns(), "gwc")?)
    } else {
        None
    };
    let spec = |close: bool, secs: u64| WrkSpec {
        threads: st.wrk_threads,
        connections: st.wrk_connections,
        duration: Duration::from_secs(secs),
        close,
        script: None,
    };
    // Warm-up: neighbours, health checks, caches.
    run_wrk(&client, &spec(true, 1), &url).context("warm-up")?;

    let mut out = Vec::new();
    let mut record = |workload: &str,
                      f: &mut dyn FnMut() -> Result<(
        Option<workloads::WrkReport>,
        Option<workloads::IperfReport>,
    )>|
     -> Result<()> {
        let before = prog.map(RunStats::of).transpose()?;
        let cpu0 = CpuTimes::now();
        let (wrk, iperf) = f().with_context(|| format!("workload {workload}"))?;
        let cpu_busy = match (cpu0, CpuTimes::now()) {
            (Some(a), Some(b)) => b.busy_cpus_since(&a, nproc),
            _ => None,
        };
        let bpf = match (prog, before) {
            (Some(id), Some(before)) => {
                RunStats::of(id)?
                    .since(&before)
                    .map(|(packets, ns_per_packet)| BpfRun {
                        packets,
                        ns_per_packet,
                    })
            }
            _ => None,
        };
        out.push(RunRecord {
            round,
            gateway: active.gateway(),
            workload: workload.into(),
            wrk,
            iperf,
            bpf,
            cpu_busy,
        });
        Ok(())
    };
    record("new_connections", &mut || {
        Ok((
            Some(run_wrk(&client, &spec(true, st.throughput_secs), &url)?),
            None,
        ))
    })?;
    record("keep_alive", &mut || {
        Ok((
            Some(run_wrk(&client, &spec(false, st.throughput_secs), &url)?),
            None,
        ))
    })?;
    record("latency", &mut || {
        let s = WrkSpec {
            threads: 1,
            connections: st.latency_connections,
            duration: Duration::from_secs(st.latency_secs),
            close: false,
            script: Some(pace.to_path_buf()),
        };
        Ok((Some(run_wrk(&client, &s, &url)?), None))
    })?;
    record("bulk", &mut || {
        let (target, port) = active.bulk_target();
        Ok((
            None,
            Some(run_iperf(
                &client,
                &target,
                port,
                Duration::from_secs(st.bulk_secs),
            )?),
        ))
    })?;
    Ok(out)
}

/// The gateways measured under the SYN flood: the backends' own listeners
/// (direct routing, SYN cookies), lb in both modes, nftables DNAT.
pub const FLOOD_GATEWAYS: [Gateway; 4] = [
    Gateway::Direct,
    Gateway::Xdp,
    Gateway::Fullnat,
    Gateway::Nftables,
];

/// Only the SYN-flood phase, on a lab of its own: the figures of
/// [`flood_phase`] rendered as the report's flood section (markdown).
pub fn flood_only(opts: &Options) -> Result<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lb-bench needs root (network namespaces, XDP)");
    }
    let settings = opts.settings();
    let lab = Lab::create(LabOptions {
        prefix: None,
        backends: 3,
        cp_sim: Some(opts.cp_sim.clone()),
        lb_bin: Some(opts.lb_bin.clone()),
    })?;
    tune_load_generator(&lab)?;
    for i in 1..=lab.backends() {
        servers::start_nginx(&lab, i)?;
    }
    // lb's bulk listener is checked against it: every backend up.
    servers::start_iperf_server(&lab, 1)?;
    let flood = flood_phase(&lab, &settings)?;
    drop(lab);
    Ok(report::flood_markdown(&flood))
}

/// Each of [`FLOOD_GATEWAYS`] under a saturating SYN flood ([`flood`]).
fn flood_phase(lab: &Lab, st: &Settings) -> Result<Vec<flood::FloodRun>> {
    let secs = Duration::from_secs(if st.quick { 8 } else { 12 });
    let mut out = Vec::new();
    for g in FLOOD_GATEWAYS {
        eprintln!("lb-bench: SYN flood through {}", g.label());
        clear_time_wait(lab)?;
        let active = Active::bring_up(lab, g)?;
        run_wrk(
            &lab.client_ns(),
            &WrkSpec {
                threads: 1,
                connections: 4,
                duration: Duration::from_secs(1),
                close: true,
                script: None,
            },
            &active.http_url(),
        )
        .context("warm-up")?;
        let run =
            flood::flood_run(lab, g, secs).with_context(|| format!("flood, {}", g.label()))?;
        eprintln!(
            "lb-bench: {}: {:.0} spoofed SYN/s, legitimate {}/{} ok, p50 {:?} ms, p99 {:?} ms",
            g.short(),
            run.syn_pps(),
            run.succeeded,
            run.attempts,
            run.latency_ms.map(|l| l.median.round()),
            run.p99_ms.map(f64::round)
        );
        out.push(run);
        active.teardown()?;
    }
    Ok(out)
}

/// Extra runs of the new-connections and bulk workloads under lb and
/// under xdp-fwd (the same veth cost of XDP, none of lb's own work), with
/// `perf record` over all CPUs.
fn profiles(lab: &Lab, st: &Settings) -> Result<Vec<profile::Profile>> {
    const SECS: u64 = 5;
    let mut out = Vec::new();
    for g in [Gateway::Xdp, Gateway::XdpFwd] {
        eprintln!("lb-bench: CPU profiles under {}", g.label());
        clear_time_wait(lab)?;
        let active = Active::bring_up(lab, g)?;
        let spec = |secs| WrkSpec {
            threads: st.wrk_threads,
            connections: st.wrk_connections,
            duration: Duration::from_secs(secs),
            close: true,
            script: None,
        };
        run_wrk(&lab.client_ns(), &spec(1), &active.http_url()).context("warm-up")?;
        for workload in ["new_connections", "bulk"] {
            let data = lab.dir().join(format!("perf-{}-{workload}.data", g.key()));
            let perf = profile::start_record(&data, Duration::from_secs(SECS))?;
            let ran = if workload == "bulk" {
                let (target, port) = active.bulk_target();
                run_iperf(&lab.client_ns(), &target, port, Duration::from_secs(SECS)).map(|_| ())
            } else {
                run_wrk(&lab.client_ns(), &spec(SECS), &active.http_url()).map(|_| ())
            };
            profile::finish_record(perf)?;
            ran?;
            out.push(profile::Profile {
                gateway: g.key().into(),
                workload: workload.into(),
                by_process: profile::report(&data, "comm", 8)?,
                by_symbol: profile::report(&data, "sym", 40)?,
            });
            let _ = std::fs::remove_file(&data);
        }
        active.teardown()?;
    }
    Ok(out)
}
