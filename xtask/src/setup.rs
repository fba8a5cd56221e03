//! Installs what the project needs, idempotently: Debian packages (LLVM 22
//! for bpf-linker, lab tools), the nightly `rust-src` component, `bpf-linker`.
use std::process::Command;

use anyhow::{bail, Result};

use crate::run as exec;

/// Debian packages: LLVM 22 (bpf-linker links against it) and the tools the
/// lab and tests use.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "ethtool",
    "procps",
    // Metrics tests: promtool (check metrics/rules) and a Prometheus server.
    "prometheus",
    // Benchmark (`cargo xtask bench`): backends, gateways, load generators,
    // and perf for the CPU profile.
    "nginx",
    "haproxy",
    "wrk",
    "iperf3",
    "nftables",
    "linux-perf",
];

/// bpf-linker release known to work with nightly 1.97 / LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every setup step; each is skipped when already done.
pub fn run() -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup needs root to install {missing:?} (run as root, or install them yourself)");
    }
    eprintln!("xtask setup: installing {missing:?}");
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output();
    if let Ok(o) = &out {
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src") {
            return Ok(());
        }
    }
    exec(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
    );
    exec(
        Command::new("cargo")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]),
    )
}
