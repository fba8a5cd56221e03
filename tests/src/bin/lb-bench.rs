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
    let opts = Options {
        quick: cli.quick,
        out: cli.out,
        lb_bin: cli.lb_bin.unwrap_or_else(default_lb_bin),
        cp_sim: cli.cp_sim.unwrap_or_else(cp_sim_default),
    };
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
