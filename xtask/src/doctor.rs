//! `cargo xtask doctor`: prints the BPF toolchain pair and the kernel facts
//! the project relies on, and fails, saying why, when something is missing.
//!
//! The kernel probes are real: BTF is read from `/sys/kernel/btf/vmlinux`,
//! bpffs support from `/proc/filesystems`, an XDP program (two instructions,
//! `XDP_PASS`) is loaded and attached through a BPF link to a veth in a
//! throw-away network namespace, and `net.ipv4.ip_forward` is set inside it.
//! Everything created is removed before returning.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::toolchain;

/// One line of the report.
struct Check {
    what: &'static str,
    result: Result<String>,
}

/// Runs every check, prints them, and fails when one failed.
pub fn run() -> Result<()> {
    let mut checks = Vec::new();
    let pair = toolchain::pair();
    match &pair {
        Ok(p) => {
            checks.push(Check {
                what: "BPF toolchain",
                result: match (&p.rustc, p.rustc_llvm) {
                    (Some(v), Some(m)) => Ok(format!("{} = {v}, LLVM {m}", p.channel)),
                    _ => Err(anyhow::anyhow!(
                        "{} is not installed (run `cargo xtask setup`)",
                        p.channel
                    )),
                },
            });
            checks.push(Check {
                what: "rust-src",
                result: rust_src(&p.channel),
            });
            checks.push(Check {
                what: "bpf-linker",
                result: linker(p),
            });
        }
        Err(e) => checks.push(Check {
            what: "BPF toolchain",
            result: Err(anyhow::anyhow!("{e:#}")),
        }),
    }
    checks.push(Check {
        what: "host toolchain",
        result: host_toolchain(),
    });
    checks.push(Check {
        what: "kernel",
        result: kernel(),
    });
    checks.push(Check {
        what: "BTF",
        result: btf(),
    });
    checks.push(Check {
        what: "bpffs",
        result: bpffs(),
    });
    checks.push(Check {
        what: "XDP on veth",
        result: xdp_on_veth(),
    });
    let mut failed = Vec::new();
    println!("cargo xtask doctor");
    for c in &checks {
        match &c.result {
            Ok(s) => println!("  ok    {:<16} {s}", c.what),
            Err(e) => {
                println!("  FAIL  {:<16} {e:#}", c.what);
                failed.push(c.what);
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "doctor: {} check(s) failed: {} (see above; `cargo xtask setup` installs the toolchain)",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn rust_src(channel: &str) -> Result<String> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", channel])
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&out.stdout).contains("rust-src") {
        Ok(format!("installed in {channel}"))
    } else {
        bail!("rust-src is missing from {channel} (run `cargo xtask setup`)")
    }
}

fn linker(p: &toolchain::Pair) -> Result<String> {
    let Some(version) = &p.linker else {
        bail!("not installed (run `cargo xtask setup`)");
    };
    let path = p
        .linker_path
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match (p.linker_llvm, p.rustc_llvm) {
        (Some(have), Some(want)) if have == want => Ok(format!(
            "{version}, LLVM {have} ({path}): matches the toolchain"
        )),
        (have, want) => bail!(
            "{version} at {path} links LLVM {}, the pinned toolchain uses LLVM {}: \
             `cargo xtask setup` rebuilds it",
            have.map_or("(unknown)".into(), |h| h.to_string()),
            want.map_or("(unknown)".into(), |w| w.to_string()),
        ),
    }
}

fn host_toolchain() -> Result<String> {
    let channel = toolchain::host_channel()?;
    let out = Command::new("rustc").arg("-V").output().context("rustc")?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !v.contains(&channel) {
        bail!("rust-toolchain.toml pins {channel}, but rustc is {v}");
    }
    Ok(format!("{channel} = {v}"))
}

fn kernel() -> Result<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        bail!(
            "Linux {}, but not root: loading XDP needs CAP_BPF/CAP_NET_ADMIN",
            release.trim()
        );
    }
    Ok(format!("Linux {}, root", release.trim()))
}

fn btf() -> Result<String> {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let len = std::fs::metadata(path)
        .with_context(|| format!("{} is missing: the kernel has no BTF", path.display()))?
        .len();
    Ok(format!("{} ({len} bytes)", path.display()))
}

fn bpffs() -> Result<String> {
    let fs = std::fs::read_to_string("/proc/filesystems").context("reading /proc/filesystems")?;
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("bpf"))
    {
        bail!("the kernel does not offer bpffs: pinning (restart without dropping flows) is impossible");
    }
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"));
    Ok(if mounted {
        "supported, mounted".into()
    } else {
        "supported (not mounted yet; `lb run` mounts it at its pin_path)".into()
    })
}

/// A throw-away network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Loads a two-instruction XDP program and attaches it with a BPF link to a
/// veth inside a fresh namespace; sets `ip_forward` there.
fn xdp_on_veth() -> Result<String> {
    let ns = Netns(format!("lbdoctor{}", std::process::id()));
    ip(&["netns", "add", &ns.0])?;
    ip(&[
        "-n", &ns.0, "link", "add", "dr0", "type", "veth", "peer", "name", "dr1",
    ])?;
    ip(&["-n", &ns.0, "link", "set", "dr0", "up"])?;
    ip(&["-n", &ns.0, "link", "set", "dr1", "up"])?;
    let sysctl = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .context("running sysctl in the namespace")?;
    if !sysctl.success() {
        bail!("cannot set net.ipv4.ip_forward=1 in a network namespace");
    }
    in_netns(&ns.0, || {
        let ifindex = ifindex("dr0")?;
        let prog = load_xdp_pass()?;
        // Closing the link fd detaches the program.
        link_xdp(&prog, ifindex).map(drop)
    })?;
    Ok("loaded, attached (BPF link, native veth), detached; ip_forward settable in a netns".into())
}

/// Runs `f` with the calling thread inside namespace `ns`, then returns.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a namespace fd we own; it changes only this
            // (scoped, short-lived) thread's network namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    })
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated name.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface {name}");
    }
    Ok(idx)
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

/// Calls `bpf(cmd, attr)` with an attribute block laid out by hand.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a valid, zero-padded bpf_attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8; 128], off: usize, bytes: &[u8]) {
    attr[off..off + bytes.len()].copy_from_slice(bytes);
}

/// `r0 = XDP_PASS; exit`, loaded as an XDP program for link attachment.
fn load_xdp_pass() -> Result<OwnedFd> {
    // mov64 r0, 2 (XDP_PASS); exit
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
    put(&mut attr, 4, &2u32.to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, b"lb_doctor\0");
    put(&mut attr, 68, &BPF_XDP.to_ne_bytes());
    bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD of an XDP program")
}

/// Attaches `prog` to `ifindex` through a BPF link (detached when the link
/// fd closes).
fn link_xdp(prog: &OwnedFd, ifindex: u32) -> Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &ifindex.to_ne_bytes());
    put(&mut attr, 8, &BPF_XDP.to_ne_bytes());
    bpf(BPF_LINK_CREATE, &mut attr).context("BPF_LINK_CREATE (XDP) on a veth")
}
