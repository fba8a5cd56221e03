//! `cargo xtask`: setup, build-ebpf, build, dist, test, demo, bench.
//!
//! Every command does its own setup, so the README's two commands work on a
//! fresh machine: `cargo xtask demo` and `cargo xtask test`.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod dist;
mod doctor;
mod setup;
mod toolchain;

#[derive(Parser)]
#[command(about = "Project automation for the XDP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (idempotent; quick when done).
    Setup,
    /// Print the BPF toolchain pair and the kernel facts the project relies
    /// on; fail, saying why, when something needed is missing.
    Doctor,
    /// Build the XDP object (pinned nightly, bpf-linker).
    BuildEbpf,
    /// Build the XDP object, the `lb` daemon and the lab tools.
    Build,
    /// The Debian package (release build, man pages, completions, unit,
    /// sample config, alerts, dashboard) into target/debian/.
    Dist,
    /// fmt check, clippy -D warnings, unit, packet and netns integration
    /// tests, the package (installed, checked and purged) and the status
    /// page in a real browser.
    Test,
    /// Bring up the demo lab: a client, a gateway running `lb`, three
    /// simulated control-plane nodes; show balancing and failover; tear down.
    Demo,
    /// Benchmark lb against direct routing, nftables DNAT and HAProxy on a
    /// namespace lab, plus data-path micro-costs; writes docs/benchmarks.md,
    /// docs/bench.svg and docs/bench.json.
    Bench {
        /// Smoke run: one round, a few seconds per cell.
        #[arg(long)]
        quick: bool,
        /// Write the report here instead of docs/.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Seeded chaos run on a namespace lab: byte-checked streams (IPv4 and
    /// IPv6), a new-connection prober and `/healthz` watched while nodes,
    /// the daemon and links fail; see docs/chaos.md.
    Chaos {
        /// Length of the fault phase in seconds.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Seed of the fault schedule (printed; the same seed replays it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Dead-node bound in seconds (default: 2 x (detection window +
        /// deregistration_delay) + 4 s).
        #[arg(long)]
        reset_bound: Option<f64>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::Doctor => doctor::run(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build => {
            setup::run()?;
            build_all()
        }
        Cmd::Dist => {
            setup::run()?;
            dist::build().map(|_| ())
        }
        Cmd::Test => test(),
        Cmd::Demo => demo(),
        Cmd::Bench { quick, out } => bench(quick, out),
        Cmd::Chaos {
            seconds,
            seed,
            reset_bound,
        } => chaos(seconds, seed, reset_bound),
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with its name on error.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo +<pinned nightly> <subcommand> … ` on lb-ebpf for
/// bpfel-unknown-none, into the workspace's `target/`.
fn ebpf_cargo(subcommand: &str) -> Result<Command> {
    let channel = toolchain::bpf_channel()?;
    let mut cmd = Command::new("cargo");
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO")
        .args([
            &format!("+{channel}"),
            subcommand,
            "--release",
            "--locked",
            "--manifest-path",
            "lb-ebpf/Cargo.toml",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
            "target",
        ]);
    Ok(cmd)
}

/// Builds lb-ebpf for bpfel-unknown-none into `target/bpfel-unknown-none/release/lb-ebpf`.
fn build_ebpf() -> Result<()> {
    run(&mut ebpf_cargo("build")?)
}

/// rustfmt and clippy (`-D warnings`) on lb-ebpf, as on the rest.
fn lint_ebpf() -> Result<()> {
    let channel = toolchain::bpf_channel()?;
    run(Command::new("cargo").env_remove("CARGO").args([
        &format!("+{channel}"),
        "fmt",
        "--manifest-path",
        "lb-ebpf/Cargo.toml",
        "--",
        "--check",
    ]))?;
    run(ebpf_cargo("clippy")?.args(["--", "-D", "warnings"]))
}

fn build_all() -> Result<()> {
    build_ebpf()?;
    run(cargo().args([
        "build",
        "--locked",
        "-p",
        "lb-userspace",
        "-p",
        "lb-tests",
        "--bins",
    ]))
}

fn test() -> Result<()> {
    setup::run()?;
    // First, so every CI log shows the toolchain pair it built with.
    doctor::run()?;
    build_all()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    lint_ebpf()?;
    // The package the `package` test installs, checks and purges.
    let t = std::time::Instant::now();
    let deb = dist::build()?;
    eprintln!("xtask test: package built in {:.0?}", t.elapsed());
    let lb = root().join("target/debug/lb");
    run(cargo().env("LB_BIN", &lb).env("LB_DEB", &deb).args([
        "test",
        "--locked",
        "--workspace",
        "--",
        "--test-threads=2",
    ]))?;
    // Smoke run of the benchmark harness: fails on a broken harness, never
    // on speed.
    run_bench(
        &root().join("target/debug/lb-bench"),
        true,
        &root().join("target/bench-smoke"),
    )
}

fn demo() -> Result<()> {
    setup::run()?;
    build_all()?;
    run(Command::new(root().join("target/debug/lb-demo"))
        .env("LB_BIN", root().join("target/debug/lb")))
}

/// `cargo xtask chaos`: builds everything, then runs `lb-chaos` with the
/// lab binaries from `target/debug` (non-zero exit when a rule failed).
fn chaos(seconds: u64, seed: u64, reset_bound: Option<f64>) -> Result<()> {
    setup::run()?;
    build_all()?;
    let mut cmd = Command::new(root().join("target/debug/lb-chaos"));
    cmd.env("LB_BIN", root().join("target/debug/lb"))
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--cp-sim")
        .arg(root().join("target/debug/cp-sim"));
    if let Some(b) = reset_bound {
        cmd.arg("--reset-bound").arg(b.to_string());
    }
    run(&mut cmd)
}

/// Runs `lb-bench` with the lab binaries from `target/debug`.
fn run_bench(bench: &Path, quick: bool, out: &Path) -> Result<()> {
    let mut cmd = Command::new(bench);
    cmd.env("LB_BIN", root().join("target/debug/lb"))
        .arg("--cp-sim")
        .arg(root().join("target/debug/cp-sim"))
        .arg("--out")
        .arg(out);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)
}

/// `cargo xtask bench`: lb-bench is built optimised so that its userspace
/// timings (Maglev builds) mean something; the data-path figures come from
/// the kernel and external tools either way.
fn bench(quick: bool, out: Option<PathBuf>) -> Result<()> {
    setup::run()?;
    build_all()?;
    run(cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        "lb-tests",
        "--bin",
        "lb-bench",
    ]))?;
    let out = match out {
        Some(p) => std::env::current_dir()?.join(p),
        None => root().join("docs"),
    };
    run_bench(&root().join("target/release/lb-bench"), quick, &out)
}
