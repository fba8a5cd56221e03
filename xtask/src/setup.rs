//! Installs what the project needs, idempotently: Debian packages (the LLVM
//! that bpf-linker must link, lab tools), the pinned BPF nightly with
//! `rust-src`, and a `bpf-linker` built against that nightly's LLVM major.
//! Every step checks first and does nothing when already done.
use std::process::Command;

use anyhow::{bail, Result};

use crate::run as exec;
use crate::toolchain::{self, LinkerAction};

/// Debian packages the lab, tests and benchmarks use (LLVM is added per
/// the pinned nightly's major, see [`llvm_packages`]).
const PACKAGES: &[&str] = &[
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
    // HA tests and `lb init` validation (`keepalived -t`); SYN-flood tests.
    "keepalived",
    "hping3",
    // Status page test: a real headless browser renders the page.
    "chromium",
    // Package test: `man lb` on the installed man page.
    "man-db",
];

/// bpf-linker release; its `llvm-NN` feature is chosen from the nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The LLVM majors bpf-linker 0.13 can be built against.
const LINKER_LLVM_FEATURES: &[u32] = &[21, 22, 23];

/// Debian's LLVM development packages for one major.
fn llvm_packages(major: u32) -> [String; 2] {
    [format!("llvm-{major}-dev"), format!("libpolly-{major}-dev")]
}

/// Runs every setup step; each is skipped when already done.
pub fn run() -> Result<()> {
    bpf_toolchain()?;
    let pair = toolchain::pair()?;
    let llvm = toolchain::required_llvm(&pair)?;
    if !LINKER_LLVM_FEATURES.contains(&llvm) {
        bail!(
            "the pinned BPF toolchain {} uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} \
             supports LLVM {LINKER_LLVM_FEATURES:?}: pin a nightly whose `rustc -vV` reports one \
             of those in lb-ebpf/rust-toolchain.toml",
            pair.channel
        );
    }
    let mut packages: Vec<String> = PACKAGES.iter().map(|s| s.to_string()).collect();
    packages.extend(llvm_packages(llvm));
    apt(&packages, llvm, &pair.channel)?;
    bpf_linker(&pair, llvm)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// True when apt knows a candidate version of `pkg`.
fn available(pkg: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", pkg])
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            s.contains("Candidate:") && !s.contains("Candidate: (none)")
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn apt(packages: &[String], llvm: u32, channel: &str) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .map(String::as_str)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("setup needs root to install {missing:?} (run as root, or install them yourself)");
    }
    eprintln!("xtask setup: installing {missing:?}");
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    let llvm_dev = format!("llvm-{llvm}-dev");
    if missing.contains(&llvm_dev.as_str()) && !available(&llvm_dev) {
        bail!(
            "the pinned BPF toolchain {channel} uses LLVM {llvm}, and bpf-linker must be built \
             against the same major, but this system's apt has no {llvm_dev}: add a source that \
             ships it (e.g. apt.llvm.org), or pin in lb-ebpf/rust-toolchain.toml a nightly whose \
             `rustc -vV` reports an LLVM this system ships"
        );
    }
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Installs the pinned nightly with `rust-src` (what `-Z build-std` needs).
fn bpf_toolchain() -> Result<()> {
    let channel = toolchain::bpf_channel()?;
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", &channel])
        .output();
    if let Ok(o) = &out {
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src") {
            return Ok(());
        }
    }
    eprintln!("xtask setup: installing the pinned BPF toolchain {channel} with rust-src");
    exec(Command::new("rustup").args([
        "toolchain",
        "install",
        &channel,
        "--profile",
        "minimal",
        "--component",
        "rust-src,rustfmt,clippy",
    ]))
}

/// Builds bpf-linker against the nightly's LLVM major unless the installed
/// one already links it.
fn bpf_linker(pair: &toolchain::Pair, llvm: u32) -> Result<()> {
    match toolchain::linker_action(pair.linker.is_some(), pair.linker_llvm, llvm) {
        LinkerAction::Keep => return Ok(()),
        LinkerAction::Install => eprintln!(
            "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} \
             (about a minute)"
        ),
        LinkerAction::Rebuild { have } => eprintln!(
            "xtask setup: the installed bpf-linker links LLVM {}, the pinned toolchain {} uses \
             LLVM {llvm}: rebuilding it (about a minute)",
            have.map_or("(unknown)".to_string(), |h| h.to_string()),
            pair.channel
        ),
    }
    exec(
        Command::new("cargo")
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}"))
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm}"),
            ]),
    )?;
    let after = toolchain::pair()?;
    if after.linker_llvm != Some(llvm) {
        bail!(
            "bpf-linker was rebuilt but still does not report LLVM {llvm} (found {:?} at {:?})",
            after.linker_llvm,
            after.linker_path
        );
    }
    Ok(())
}
