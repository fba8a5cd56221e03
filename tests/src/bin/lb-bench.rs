//! `lb-bench`: compares the XDP load balancer with direct routing, a trivial
//! XDP forwarder, nftables DNAT and HAProxy on a namespace lab, measures
//! data-path micro-costs and control-plane costs, and writes
//! `benchmarks.md`, `bench.svg` and `bench.json`. Needs root. `cargo xtask bench` builds and runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use lb_tests::bench::{self, Options};
use lb_tests::lab::{default_lb_bin, find_next_to_exe};

#[derive(Parser)]
#[command(
    about = "Benchmark lb against direct routing, a trivial XDP forwarder, nftables DNAT and HAProxy"
)]
struct Cli {
    /// Smoke run: one round, a few seconds per cell, small tables.
    #[arg(long)]
    quick: bool,
    /// Rounds of the gateways in the lab (default: 1 with --quick, else
    /// 9): e.g. `--quick --lab-rounds 3` for short cells with round-by-round
    /// ratios.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    lab_rounds: Option<u32>,
    /// Measure only legitimate connections under a SYN flood (lb, lb
    /// full-NAT, nftables DNAT, direct routing) and print the table.
    #[arg(long)]
    flood_only: bool,
    /// Directory for benchmarks.md, bench.svg and bench.json.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// The lb binary (default: $LB_BIN, or next to this program).
    #[arg(long)]
    lb_bin: Option<PathBuf>,
    /// The cp-sim binary (default: next to this program, or target/debug).
    #[arg(long)]
    cp_sim: Option<PathBuf>,
    /// Measure nothing: rewrite benchmarks.md and bench.svg in --out from
    /// its bench.json.
    #[arg(long)]
    rerender: bool,
    /// Measure only the data-path micro-costs, with this many single runs
    /// per case, and print them (no lab, no report): for comparing builds
    /// of the XDP object side by side.
    #[arg(long, value_name = "RUNS")]
    micro_only: Option<u32>,
    /// With --micro-only: an XDP object file to measure instead of the
    /// embedded one (`-` for the embedded one); repeat to compare builds,
    /// the first being the reference of the ratios.
    #[arg(long, value_name = "PATH")]
    object: Vec<PathBuf>,
    /// With --micro-only: rounds; each measures every object in turn.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// With --micro-only: also time established packets with this many
    /// tracked flows (repeatable).
    #[arg(long, value_name = "FLOWS")]
    ct_flows: Vec<u32>,
}

/// The bytes of an XDP object file, 8-byte aligned as the ELF parser needs.
fn read_object(path: &std::path::Path) -> Result<Vec<u64>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_ne_bytes(b);
    }
    Ok(words)
}

/// `--micro-only`: measures each object `rounds` times, interleaved, and
/// prints per case each object's median (of the rounds' medians, with the
/// rounds' p10 and p90 medians) and its ratio to the first object (median
/// of the per-round ratios, with their range).
fn micro_only(cli: &Cli, runs: u32) -> Result<()> {
    let paths: Vec<Option<&PathBuf>> = if cli.object.is_empty() {
        vec![None]
    } else {
        cli.object
            .iter()
            .map(|p| (p.as_os_str() != "-").then_some(p))
            .collect()
    };
    let buffers = paths
        .iter()
        .map(|p| p.map(|p| read_object(p)).transpose())
        .collect::<Result<Vec<_>>>()?;
    let bytes: Vec<Option<&[u8]>> = buffers
        .iter()
        .map(|b| {
            b.as_ref().map(|w| {
                let len = std::mem::size_of_val(w.as_slice());
                // SAFETY: a u64 slice viewed as the bytes it holds.
                unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), len) }
            })
        })
        .collect();
    let rounds = bench::micro_only(&bytes, runs, cli.rounds, &cli.ct_flows)?;
    let name = |i: usize| paths[i].map_or("embedded".to_string(), |p| p.display().to_string());
    let med = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    // Per case, per object, per round: median, p10, p90.
    type Quantiles = (f64, f64, f64);
    let mut rows: Vec<(String, Vec<Vec<Quantiles>>)> = Vec::new();
    let first = &rounds[0][0];
    let keys: Vec<String> = std::iter::once(&first.0.baseline)
        .chain(&first.0.cases)
        .map(|c| c.case.clone())
        .chain(first.1.iter().map(|s| format!("ct_{}", s.flows)))
        .collect();
    for key in &keys {
        let per_obj = (0..bytes.len())
            .map(|o| {
                rounds
                    .iter()
                    .map(|r| {
                        let (costs, ct) = &r[o];
                        if let Some(s) = key.strip_prefix("ct_") {
                            let s = ct.iter().find(|c| c.flows.to_string() == s).expect("case");
                            (s.median_ns, f64::NAN, s.p90_ns)
                        } else {
                            let c = std::iter::once(&costs.baseline)
                                .chain(&costs.cases)
                                .find(|c| &c.case == key)
                                .expect("case");
                            (c.median_ns, c.p10_ns, c.p90_ns)
                        }
                    })
                    .collect()
            })
            .collect();
        rows.push((key.clone(), per_obj));
    }
    for (i, _) in bytes.iter().enumerate() {
        println!("object {i}: {}", name(i));
    }
    println!("{} rounds of {runs} single runs per case", cli.rounds);
    for (key, per_obj) in &rows {
        let mut line = format!("{key:<14}");
        for (o, rs) in per_obj.iter().enumerate() {
            let m = med(rs.iter().map(|r| r.0).collect());
            let p10 = med(rs.iter().map(|r| r.1).collect());
            let p90 = med(rs.iter().map(|r| r.2).collect());
            line += &format!(" | {o}: {m:>6.0} ({p10:>5.0}–{p90:>5.0})");
            if o > 0 {
                let ratios: Vec<f64> = rs.iter().zip(&per_obj[0]).map(|(b, a)| b.0 / a.0).collect();
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                line += &format!(" ×{:.2} [{lo:.2}–{hi:.2}]", med(ratios.clone()));
            }
        }
        println!("{line}");
    }
    Ok(())
}

fn cp_sim_default() -> PathBuf {
    find_next_to_exe("cp-sim").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/cp-sim")
    })
}

fn run(cli: Cli) -> Result<()> {
    if cli.rerender {
        bench::report::rerender(&cli.out)?;
        println!("lb-bench: rewrote the report in {}", cli.out.display());
        return Ok(());
    }
    if let Some(runs) = cli.micro_only {
        return micro_only(&cli, runs);
    }
    let opts = Options {
        quick: cli.quick,
        lab_rounds: cli.lab_rounds,
        out: cli.out,
        lb_bin: cli.lb_bin.unwrap_or_else(default_lb_bin),
        cp_sim: cli.cp_sim.unwrap_or_else(cp_sim_default),
    };
    if cli.flood_only {
        print!(
            "{}",
            bench::flood_only(&opts).context("flood benchmark failed")?
        );
        return Ok(());
    }
    let report = bench::run(&opts).context("benchmark failed")?;
    println!(
        "lb-bench: wrote {} in {:.0} s",
        opts.out.display(),
        report.wall_secs
    );
    for t in &report.targets {
        println!(
            "  {:<48} {} {:>7}  measured {:>7}  {}{}",
            t.target,
            if t.at_most { "<=" } else { ">=" },
            t.unit.format(t.wanted),
            t.measured
                .map_or_else(|| "-".to_string(), |m| t.unit.format(m)),
            if t.met { "met" } else { "MISSED" },
            if t.within_noise == Some(true) {
                " (within noise)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
