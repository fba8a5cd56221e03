//! `cargo xtask dist`: the Debian package `target/debian/lb_VERSION-1_ARCH.deb`,
//! built with cargo-deb from the release `lb` (which embeds the XDP object
//! built first), its man pages and shell completions (`lb generate-assets`,
//! from the CLI definition), the systemd unit, the sample configuration as
//! a conffile, and the Prometheus alerts and Grafana dashboard. The package
//! itself is described in `lb-userspace/Cargo.toml` (`[package.metadata.deb]`).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run};

/// The cargo-deb release installed when none is (works with rustc 1.95).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where `lb generate-assets` writes (the package's assets point here).
const ASSETS: &str = "target/dist";

/// Where the package is written.
const OUT: &str = "target/debian";

/// Builds the package and returns its path.
pub fn build() -> Result<PathBuf> {
    crate::build_ebpf()?;
    run(cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        "lb-userspace",
        "--bin",
        "lb",
    ]))?;
    let assets = root().join(ASSETS);
    if assets.exists() {
        std::fs::remove_dir_all(&assets)
            .with_context(|| format!("removing {}", assets.display()))?;
    }
    run(Command::new(root().join("target/release/lb"))
        .arg("generate-assets")
        .arg(&assets))?;
    gzip_man_pages(&assets.join("man"))?;
    ensure_cargo_deb()?;
    let out = root().join(OUT);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = cargo();
    // Stripped: the release profile keeps line tables for profiling, which
    // would make the installed binary five times larger.
    cmd.args([
        "deb",
        "-p",
        "lb-userspace",
        "--no-build",
        "--locked",
        "--strip",
        "--output",
    ])
    .arg(&out)
    .current_dir(root());
    eprintln!("xtask: {cmd:?}");
    let o = cmd.output().context("starting cargo deb")?;
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        bail!("cargo deb failed with {}", o.status);
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    let deb = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb named no package: {stdout:?}"))?;
    let deb = if deb.is_absolute() {
        deb
    } else {
        root().join(deb)
    };
    if !deb.is_file() {
        bail!("cargo deb reported {} but it is not there", deb.display());
    }
    eprintln!("xtask dist: {}", deb.display());
    Ok(deb)
}

/// Man pages are installed compressed (Debian policy): `gzip -9n`, so the
/// package is reproducible (no name or time stamp in the archive).
fn gzip_man_pages(dir: &Path) -> Result<()> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    if pages.is_empty() {
        bail!("no man page in {}", dir.display());
    }
    pages.sort();
    run(Command::new("gzip").args(["-9", "-n", "-f"]).args(&pages))
}

/// Installs cargo-deb from crates.io unless `cargo deb` already works.
fn ensure_cargo_deb() -> Result<()> {
    let present = cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask dist: installing cargo-deb {CARGO_DEB_VERSION} (a few minutes, once)");
    run(cargo().args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}
