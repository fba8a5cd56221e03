//! The BPF toolchain pair: the pinned nightly that compiles `lb-ebpf` and the
//! `bpf-linker` that links its bitcode. The two must agree on the LLVM major
//! version, or linking fails with `ERROR llvm: Invalid record`.
//!
//! The nightly is named once, in `lb-ebpf/rust-toolchain.toml`. Its LLVM
//! major comes from `rustc -vV`; the linker's from the `libLLVM` it links
//! (`ldd`) or, for a statically linked build, from the features cargo
//! recorded when it installed it. The parsing and the decision to rebuild are
//! pure functions, unit-tested below.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The file that names the BPF toolchain.
pub fn bpf_toolchain_file() -> PathBuf {
    crate::root().join("lb-ebpf/rust-toolchain.toml")
}

/// The pinned BPF toolchain's channel, e.g. `nightly-2026-05-19`.
pub fn bpf_channel() -> Result<String> {
    let path = bpf_toolchain_file();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    channel_of(&text).with_context(|| format!("{}: no [toolchain] channel", path.display()))
}

/// The userspace toolchain's channel (root `rust-toolchain.toml`).
pub fn host_channel() -> Result<String> {
    let path = crate::root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    channel_of(&text).with_context(|| format!("{}: no [toolchain] channel", path.display()))
}

/// Reads `[toolchain] channel` from a `rust-toolchain.toml`, refusing the
/// moving channels (`nightly`, `beta`, `stable`) that make builds drift.
pub fn channel_of(toml_text: &str) -> Option<String> {
    let value: toml::Value = toml::from_str(toml_text).ok()?;
    let channel = value
        .get("toolchain")?
        .get("channel")?
        .as_str()?
        .to_string();
    (!matches!(channel.as_str(), "nightly" | "beta" | "stable")).then_some(channel)
}

/// The LLVM major version from `rustc -vV` output (`LLVM version: 22.1.4`).
pub fn llvm_major_from_rustc(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// The LLVM major a binary links, from `ldd` output: `libLLVM.so.22.1`,
/// `libLLVM-22.so` or `libLLVM.so.22`.
pub fn llvm_major_from_ldd(ldd: &str) -> Option<u32> {
    ldd.lines().find_map(|line| {
        let name = line.split_whitespace().next()?;
        let rest = name.strip_prefix("libLLVM")?;
        let digits = rest
            .trim_start_matches(['-', '.'])
            .trim_start_matches("so.")
            .split(['.', '-'])
            .next()?;
        digits.parse().ok()
    })
}

/// The `llvm-NN` feature cargo recorded when it installed bpf-linker
/// (`~/.cargo/.crates2.json`), for a statically linked build.
pub fn llvm_major_from_crates2(json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let installs = v.get("installs")?.as_object()?;
    let (_, entry) = installs
        .iter()
        .find(|(k, _)| k.starts_with("bpf-linker "))?;
    let features = entry.get("features")?.as_array()?;
    let mut majors = features
        .iter()
        .filter_map(|f| f.as_str()?.strip_prefix("llvm-")?.parse::<u32>().ok());
    let first = majors.next()?;
    // Several llvm-NN features at once: ambiguous, treat as unknown.
    majors.next().is_none().then_some(first)
}

/// What setup must do about bpf-linker.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkerAction {
    /// Installed and built against the toolchain's LLVM major.
    Keep,
    /// Not installed.
    Install,
    /// Installed but against another (or an unknown) LLVM major.
    Rebuild {
        /// The LLVM major the installed linker uses, if known.
        have: Option<u32>,
    },
}

/// Decides whether bpf-linker must be (re)built for `want`, the LLVM major
/// of the pinned nightly.
pub fn linker_action(installed: bool, have: Option<u32>, want: u32) -> LinkerAction {
    match (installed, have) {
        (false, _) => LinkerAction::Install,
        (true, Some(h)) if h == want => LinkerAction::Keep,
        (true, have) => LinkerAction::Rebuild { have },
    }
}

/// Facts about the installed pair, as `doctor` prints them.
#[derive(Debug)]
pub struct Pair {
    /// The pinned channel.
    pub channel: String,
    /// `rustc -V` of that channel, if installed.
    pub rustc: Option<String>,
    /// Its LLVM major.
    pub rustc_llvm: Option<u32>,
    /// `bpf-linker --version`, if installed.
    pub linker: Option<String>,
    /// Where bpf-linker is.
    pub linker_path: Option<PathBuf>,
    /// The LLVM major bpf-linker links.
    pub linker_llvm: Option<u32>,
}

/// Runs a command and returns its stdout when it succeeds.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `~/.cargo/bin/bpf-linker` or whatever `PATH` finds.
fn linker_path() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(p) = home
        .map(|h| h.join("bin/bpf-linker"))
        .filter(|p| p.is_file())
    {
        return Some(p);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// The LLVM major of the bpf-linker at `path`.
fn linker_llvm(path: &Path) -> Option<u32> {
    if let Some(m) = output(Command::new("ldd").arg(path)).and_then(|o| llvm_major_from_ldd(&o)) {
        return Some(m);
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let json = std::fs::read_to_string(home.join(".crates2.json")).ok()?;
    llvm_major_from_crates2(&json)
}

/// Reads the installed pair.
pub fn pair() -> Result<Pair> {
    let channel = bpf_channel()?;
    let vv = output(Command::new("rustup").args(["run", &channel, "rustc", "-vV"]));
    let rustc = vv
        .as_deref()
        .and_then(|v| v.lines().next())
        .map(str::to_string);
    let rustc_llvm = vv.as_deref().and_then(llvm_major_from_rustc);
    let linker_path = linker_path();
    let linker = linker_path
        .as_ref()
        .and_then(|p| output(Command::new(p).arg("--version")))
        .map(|s| s.trim().to_string());
    let linker_llvm = linker_path.as_deref().and_then(linker_llvm);
    Ok(Pair {
        channel,
        rustc,
        rustc_llvm,
        linker,
        linker_path,
        linker_llvm,
    })
}

/// The LLVM major of the pinned nightly, which must be installed.
pub fn required_llvm(pair: &Pair) -> Result<u32> {
    match pair.rustc_llvm {
        Some(m) => Ok(m),
        None => bail!(
            "cannot read the LLVM version of toolchain {} (`rustup run {} rustc -vV` failed); \
             install it with `rustup toolchain install {} --component rust-src`",
            pair.channel,
            pair.channel,
            pair.channel
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (9eb3be26b 2026-05-18)\nbinary: rustc\n\
                  commit-hash: 9eb3be26b\ncommit-date: 2026-05-18\n\
                  host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major_from_rustc(vv), Some(22));
        let newer = "rustc 1.101.0-nightly\nLLVM version: 23.1.4\n";
        assert_eq!(llvm_major_from_rustc(newer), Some(23));
        assert_eq!(llvm_major_from_rustc("rustc 1.0\n"), None);
        assert_eq!(llvm_major_from_rustc("LLVM version: x.y\n"), None);
    }

    #[test]
    fn reads_llvm_major_from_ldd() {
        let debian = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007fdd)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert_eq!(llvm_major_from_ldd(debian), Some(22));
        let dash = "\tlibLLVM-21.so => /usr/lib/llvm-21/lib/libLLVM-21.so (0x1)\n";
        assert_eq!(llvm_major_from_ldd(dash), Some(21));
        let short = "\tlibLLVM.so.23 => /x/libLLVM.so.23 (0x1)\n";
        assert_eq!(llvm_major_from_ldd(short), Some(23));
        let static_build = "\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\tlibz.so.1 => /lib/libz.so.1\n";
        assert_eq!(llvm_major_from_ldd(static_build), None);
    }

    #[test]
    fn reads_llvm_feature_from_crates2() {
        let json = r#"{"installs":{
            "bpf-linker 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)":
              {"features":["llvm-22"],"no_default_features":true},
            "ripgrep 14.0.0 (registry+x)":{"features":[]}}}"#;
        assert_eq!(llvm_major_from_crates2(json), Some(22));
        let default = r#"{"installs":{"bpf-linker 0.13.0 (r)":{"features":[]}}}"#;
        assert_eq!(llvm_major_from_crates2(default), None);
        let two = r#"{"installs":{"bpf-linker 0.13.0 (r)":{"features":["llvm-21","llvm-22"]}}}"#;
        assert_eq!(llvm_major_from_crates2(two), None);
        assert_eq!(llvm_major_from_crates2("not json"), None);
    }

    #[test]
    fn decides_when_to_rebuild_the_linker() {
        assert_eq!(linker_action(false, None, 22), LinkerAction::Install);
        assert_eq!(linker_action(true, Some(22), 22), LinkerAction::Keep);
        assert_eq!(
            linker_action(true, Some(21), 22),
            LinkerAction::Rebuild { have: Some(21) }
        );
        // A linker whose LLVM cannot be told is rebuilt, never trusted.
        assert_eq!(
            linker_action(true, None, 22),
            LinkerAction::Rebuild { have: None }
        );
    }

    #[test]
    fn refuses_moving_channels() {
        assert_eq!(
            channel_of("[toolchain]\nchannel = \"nightly-2026-05-19\"\n").as_deref(),
            Some("nightly-2026-05-19")
        );
        assert_eq!(channel_of("[toolchain]\nchannel = \"nightly\"\n"), None);
        assert_eq!(channel_of("[toolchain]\nchannel = \"stable\"\n"), None);
        assert_eq!(channel_of("garbage ["), None);
    }

    #[test]
    fn the_project_pins_both_toolchains() {
        let bpf = bpf_channel().expect("lb-ebpf/rust-toolchain.toml names a dated nightly");
        assert!(bpf.starts_with("nightly-20"), "{bpf}");
        let host = host_channel().expect("rust-toolchain.toml names a fixed version");
        assert!(
            host.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{host}"
        );
    }
}
