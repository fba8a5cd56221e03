//! Will the pins outlive this process? A bpffs mounted inside a private
//! mount namespace (`ip netns exec` gives every command one, and so do most
//! containers) vanishes with the last process in that namespace, and with it
//! every pinned map and link: a restart then starts from nothing and resets
//! every flow, although `keep_attached` promised otherwise.
//!
//! Every `mount -t bpf` creates a new bpffs instance with its own device
//! number. The pins outlive the daemon when the daemon shares the host's
//! mount namespace, or when the instance holding `pin_path` (same device
//! number) is also mounted in the host's namespace, as for a bpffs the host
//! mounted before `ip netns exec` copied its mounts. Anything else is
//! private. "The host's namespace" is PID 1's; where PID 1 cannot be
//! inspected (some sandboxes and containers), the nearest ancestor process
//! in another mount namespace stands in for it (for `ip netns exec`, the
//! shell or service manager that started it). The decision is a pure
//! function of the namespace ids and `mountinfo` texts, unit-tested below.
use std::path::{Path, PathBuf};

/// Where the pins live, as far as their lifetime goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinScope {
    /// Visible from PID 1's mount namespace: pins outlive the daemon.
    Host,
    /// Only in this process's mount namespace: pins vanish when it exits.
    Private {
        /// The bpffs mount point holding the pin path.
        mount_point: PathBuf,
    },
    /// Cannot tell (e.g. `/proc/1` unreadable).
    Unknown(String),
}

impl PinScope {
    /// The operator-facing warning for a scope that loses pins, if any.
    pub fn warning(&self, pin_path: &Path) -> Option<String> {
        match self {
            PinScope::Host => None,
            PinScope::Private { mount_point } => Some(format!(
                "pins will not survive a restart: pin_path {} is on a bpffs ({}) private to \
                 this process's mount namespace (started under `ip netns exec` or in a \
                 container?), which vanishes when lb exits, so a restart or upgrade resets every \
                 flow. Fix: mount a bpffs in the host's mount namespace (e.g. `mount -t bpf bpf \
                 /run/lb/bpffs` on the host) and point [dataplane] pin_path into it",
                pin_path.display(),
                mount_point.display()
            )),
            PinScope::Unknown(why) => Some(format!(
                "cannot tell whether pins in {} survive a restart: {why}",
                pin_path.display()
            )),
        }
    }
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug)]
struct Mount<'a> {
    dev: &'a str,
    mount_point: &'a str,
    fs_type: &'a str,
}

fn parse_line(line: &str) -> Option<Mount<'_>> {
    let mut fields = line.split(' ');
    let dev = fields.nth(2)?;
    let mount_point = fields.nth(1)?;
    // Optional fields (shared:N, master:N, ...) run up to the "-".
    fields.by_ref().find(|f| *f == "-")?;
    let fs_type = fields.next()?;
    Some(Mount {
        dev,
        mount_point,
        fs_type,
    })
}

/// mountinfo escapes spaces and a few other bytes as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount namespace standing in for the host's, and its mountinfo.
#[derive(Clone, Copy, Debug)]
pub struct Witness<'a> {
    /// Its mount namespace id (`mnt:[…]`).
    pub ns: &'a str,
    /// Its `/proc/<pid>/mountinfo`.
    pub mountinfo: &'a str,
}

/// Decides the scope of `pin_path` from this process's mount namespace id
/// and mountinfo and the host's (`None`: no other namespace could be seen,
/// so this one is taken as the host's).
pub fn classify(
    own_ns: &str,
    own_mountinfo: &str,
    host: Option<Witness<'_>>,
    pin_path: &Path,
) -> PinScope {
    // The mount holding the path: the longest mount point above it; a later
    // line for the same point shadows an earlier one.
    let holding = own_mountinfo
        .lines()
        .filter_map(parse_line)
        .filter(|m| pin_path.starts_with(unescape(m.mount_point)))
        .fold(None::<Mount>, |best, m| match best {
            Some(b) if b.mount_point.len() > m.mount_point.len() => Some(b),
            _ => Some(m),
        });
    let Some(mount) = holding else {
        return PinScope::Unknown(format!("no mount holds {}", pin_path.display()));
    };
    if mount.fs_type != "bpf" {
        return PinScope::Unknown(format!(
            "{} is on {} ({}), not bpffs",
            pin_path.display(),
            mount.mount_point,
            mount.fs_type
        ));
    }
    let Some(host) = host.filter(|h| h.ns != own_ns) else {
        return PinScope::Host;
    };
    let in_host = host
        .mountinfo
        .lines()
        .filter_map(parse_line)
        .any(|m| m.fs_type == "bpf" && m.dev == mount.dev);
    if in_host {
        PinScope::Host
    } else {
        PinScope::Private {
            mount_point: PathBuf::from(unescape(mount.mount_point)),
        }
    }
}

fn read(p: &str) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"))
}

fn ns_of(pid: &str) -> Result<String, String> {
    let p = format!("/proc/{pid}/ns/mnt");
    std::fs::read_link(&p)
        .map(|l| l.display().to_string())
        .map_err(|e| format!("reading {p}: {e}"))
}

fn parent_of(pid: &str) -> Option<String> {
    read(&format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_string())
        .filter(|p| p != "0")
}

/// Reads `/proc` and decides the scope of `pin_path` (after it was mounted).
pub fn detect(pin_path: &Path) -> PinScope {
    let (own_ns, own_mi) = match (ns_of("self"), read("/proc/self/mountinfo")) {
        (Ok(n), Ok(m)) => (n, m),
        (Err(e), _) | (_, Err(e)) => return PinScope::Unknown(e),
    };
    // PID 1, or else the nearest ancestor in another mount namespace.
    let mut witness = None;
    if let (Ok(ns), Ok(mi)) = (ns_of("1"), read("/proc/1/mountinfo")) {
        witness = Some((ns, mi));
    } else {
        let mut pid = parent_of("self");
        while let Some(p) = pid {
            if let (Ok(ns), Ok(mi)) = (ns_of(&p), read(&format!("/proc/{p}/mountinfo"))) {
                if ns != own_ns {
                    witness = Some((ns, mi));
                    break;
                }
            }
            pid = parent_of(&p);
        }
    }
    let host = witness
        .as_ref()
        .map(|(ns, mi)| Witness { ns, mountinfo: mi });
    classify(&own_ns, &own_mi, host, pin_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
40 23 0:33 / /sys/fs/bpf rw,relatime shared:15 - bpf bpf rw
61 22 0:50 / /run/lb/bpffs rw,relatime shared:30 - bpf bpf rw
";

    /// `ip netns exec`: the host's mounts copied (same devices), /sys
    /// remounted fresh, and the daemon mounted its own bpffs at /sys/fs/bpf.
    const NETNS_EXEC: &str = "\
300 250 254:1 / / rw,relatime master:1 - ext4 /dev/vda rw
301 300 0:50 / /run/lb/bpffs rw,relatime master:30 - bpf bpf rw
302 300 0:60 / /sys rw,relatime - sysfs ns1 rw
303 302 0:61 / /sys/fs/bpf rw,relatime - bpf bpf rw
";

    fn host() -> Option<Witness<'static>> {
        Some(Witness {
            ns: "mnt:[1]",
            mountinfo: HOST,
        })
    }

    #[test]
    fn the_host_namespace_keeps_pins() {
        let p = Path::new("/sys/fs/bpf/lb");
        assert_eq!(classify("mnt:[1]", HOST, host(), p), PinScope::Host);
        // No other namespace visible: this one is the host's.
        assert_eq!(classify("mnt:[1]", HOST, None, p), PinScope::Host);
    }

    #[test]
    fn a_bpffs_mounted_inside_ip_netns_exec_is_private() {
        let p = Path::new("/sys/fs/bpf/lb");
        let scope = classify("mnt:[9]", NETNS_EXEC, host(), p);
        assert_eq!(
            scope,
            PinScope::Private {
                mount_point: "/sys/fs/bpf".into()
            }
        );
        let w = scope.warning(p).unwrap();
        assert!(w.contains("will not survive a restart"), "{w}");
        assert!(w.contains("pin_path"), "{w}");
    }

    #[test]
    fn a_host_bpffs_seen_through_ip_netns_exec_keeps_pins() {
        let p = Path::new("/run/lb/bpffs/lb");
        assert_eq!(classify("mnt:[9]", NETNS_EXEC, host(), p), PinScope::Host);
    }

    #[test]
    fn private_mounts_without_propagation_tags_are_told_apart_by_device() {
        // Sandboxes whose mounts carry no shared/master tags at all.
        let host_mi = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                       90 27 0:70 / /tmp/lab/bpffs rw - bpf bpf rw\n";
        let own = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                   90 27 0:70 / /tmp/lab/bpffs rw - bpf bpf rw\n\
                   95 27 0:90 / /sys rw - sysfs s rw\n\
                   96 95 0:91 / /sys/fs/bpf rw - bpf bpf rw\n";
        let h = Some(Witness {
            ns: "mnt:[1]",
            mountinfo: host_mi,
        });
        assert_eq!(
            classify("mnt:[2]", own, h, Path::new("/tmp/lab/bpffs/lb")),
            PinScope::Host
        );
        assert!(matches!(
            classify("mnt:[2]", own, h, Path::new("/sys/fs/bpf/lb")),
            PinScope::Private { .. }
        ));
    }

    #[test]
    fn a_path_not_on_bpffs_is_reported() {
        let p = Path::new("/var/lib/lb");
        assert!(matches!(
            classify("mnt:[1]", HOST, host(), p),
            PinScope::Unknown(_)
        ));
    }

    #[test]
    fn escaped_mount_points_are_matched() {
        let own = "70 22 0:80 / /run/my\\040pins rw shared:44 - bpf bpf rw\n";
        let p = Path::new("/run/my pins/lb");
        assert_eq!(classify("a", own, None, p), PinScope::Host);
    }
}
