//! Where the data path is pinned in bpffs, so it outlives the daemon.
//!
//! Layout under `[dataplane] pin_path` (default `/sys/fs/bpf/lb`):
//! `<layout>/maps/<MAP>` and `<layout>/links/<mode>/<iface>`, where
//! `<layout>` is [`maps::layout_dir_name`], a fingerprint of every map's
//! kind, key and value sizes and capacity computed from the shared types
//! (bpffs refuses names containing a dot, so a `.` in an interface name,
//! as in `eth0.100`, is stored as `:`, which interface names cannot contain).
//! The fingerprint in the path means a daemon never reuses maps of a layout
//! it does not know, and every pinned map is checked against the program's
//! expectations before it is adopted ([`Pins::check_maps`]); links of an older layout are taken over (the program on
//! them replaced atomically) and the old directory removed.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lb_common::{MAP_CT_FWD, MAP_CT_REV};
use tracing::{info, warn};

use super::maps::{self, PinMismatch, PinnedShape};
use super::AttachMode;

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Paths of one pin root.
#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
}

/// A pinned XDP link found on disk.
#[derive(Clone, Debug)]
pub struct PinnedLinkFile {
    /// Interface the link is attached to.
    pub iface: String,
    /// How it was attached.
    pub mode: AttachMode,
    /// The pin file.
    pub path: PathBuf,
}

impl Pins {
    /// Prepares `root` on a bpffs, mounting bpffs at `/sys/fs/bpf` when the
    /// root lies there and nothing is mounted yet.
    pub fn prepare(root: &Path) -> Result<Pins> {
        let bpffs = Path::new("/sys/fs/bpf");
        if root.starts_with(bpffs) && !is_bpffs(bpffs) {
            mount_bpffs(bpffs)?;
        }
        fs::create_dir_all(root)
            .with_context(|| format!("dataplane.pin_path: creating {}", root.display()))?;
        if !is_bpffs(root) {
            bail!(
                "dataplane.pin_path: {} is not on a bpf filesystem (mount one: mount -t bpf bpf <dir>)",
                root.display()
            );
        }
        let pins = Pins {
            root: root.to_path_buf(),
        };
        fs::create_dir_all(pins.maps_dir())?;
        for mode in [AttachMode::Native, AttachMode::Generic] {
            fs::create_dir_all(pins.links_dir().join(mode.as_str()))?;
        }
        Ok(pins)
    }

    /// Takes the pin root's lock: one daemon per pin path. The lock is an
    /// `flock` on the root directory itself (bpffs holds no regular files),
    /// held as long as the returned file is open, released by the kernel
    /// however the daemon ends. Fails at once when another daemon holds it.
    pub fn lock(&self) -> Result<fs::File> {
        use std::os::fd::AsRawFd;
        let dir = fs::File::open(&self.root)
            .with_context(|| format!("opening {} to lock it", self.root.display()))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "another `lb run` is using the data path pinned at {} (one daemon per dataplane.pin_path); nothing was changed",
                    self.root.display()
                );
            }
            return Err(e).with_context(|| format!("locking {}", self.root.display()));
        }
        Ok(dir)
    }

    fn version_dir(&self) -> PathBuf {
        self.root.join(maps::layout_dir_name())
    }

    /// Directory of this layout's pinned maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.version_dir().join("maps")
    }

    /// Directory of this layout's pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.version_dir().join("links")
    }

    /// Pin path of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Pin path of the link on `iface` attached in `mode`.
    pub fn link(&self, iface: &str, mode: AttachMode) -> PathBuf {
        self.links_dir()
            .join(mode.as_str())
            .join(iface.replace('.', ":"))
    }

    /// True when maps of this layout are pinned (a previous daemon ran).
    pub fn has_maps(&self) -> bool {
        fs::read_dir(self.maps_dir())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    }

    /// Checks every pinned map of this layout against what the program
    /// expects. A map of another type, key or value size or capacity is
    /// never adopted: the layout's maps are removed and created afresh
    /// (tracked flows are lost, as with a layout change). Conntrack maps
    /// pinned with another capacity than `conntrack_capacity` are kept
    /// (their flows matter more) and the difference is reported. Returns
    /// what was found, for the status.
    pub fn check_maps(&self, conntrack_capacity: u32) -> Vec<String> {
        let mut notes = Vec::new();
        let mut fresh = false;
        for spec in &maps::SPECS {
            match maps::check_pin(spec, &self.maps_dir(), conntrack_capacity) {
                Ok(()) => {}
                Err(PinMismatch::Capacity {
                    map,
                    found,
                    expected,
                }) if map == MAP_CT_FWD || map == MAP_CT_REV => {
                    let note = format!(
                        "conntrack_capacity = {expected} is not applied: the adopted {map} map holds {found} entries (tracked flows are kept; `lb run --reset` applies it, dropping them)"
                    );
                    warn!("{note}");
                    notes.push(note);
                }
                Err(e) => {
                    warn!(error = %e, "pinned maps do not fit this program: starting with fresh maps");
                    notes.push(format!("{e}: pinned maps replaced by fresh ones"));
                    fresh = true;
                }
            }
        }
        if fresh {
            let _ = fs::remove_dir_all(self.maps_dir());
            let _ = fs::create_dir_all(self.maps_dir());
        }
        notes.dedup();
        notes
    }

    /// Capacity of the pinned `CT_FWD` map, if there is one.
    pub fn pinned_conntrack_capacity(&self) -> Option<u32> {
        PinnedShape::read(&self.map(MAP_CT_FWD))
            .ok()
            .map(|s| s.max_entries)
    }

    /// Links pinned by this layout or older ones, for adoption.
    pub fn links(&self) -> Vec<PinnedLinkFile> {
        let mut out = Vec::new();
        let Ok(versions) = fs::read_dir(&self.root) else {
            return out;
        };
        for v in versions.flatten() {
            for mode in [AttachMode::Native, AttachMode::Generic] {
                let Ok(links) = fs::read_dir(v.path().join("links").join(mode.as_str())) else {
                    continue;
                };
                for l in links.flatten() {
                    let name = l.file_name().to_string_lossy().replace(':', ".");
                    out.push(PinnedLinkFile {
                        iface: name,
                        mode,
                        path: l.path(),
                    });
                }
            }
        }
        // This layout's links first.
        let current = self.links_dir();
        out.sort_by_key(|l| !l.path.starts_with(&current));
        out
    }

    /// Removes pinned maps and links of layouts other than this one (after
    /// their links were taken over).
    pub fn remove_other_layouts(&self) {
        let Ok(versions) = fs::read_dir(&self.root) else {
            return;
        };
        for v in versions.flatten() {
            if v.path() != self.version_dir() {
                info!(path = %v.path().display(), "removing pins of another map layout");
                let _ = fs::remove_dir_all(v.path());
            }
        }
    }

    /// Removes every pin and then the (empty) root: the host is left as it
    /// was before `lb run`. Only at exit, when the lock no longer matters.
    pub fn remove_everything(&self) {
        self.remove_all();
        let _ = fs::remove_dir(&self.root);
    }

    /// Removes every pin under the root (`lb run --reset`, or a clean
    /// stop). The root itself stays: its lock (see [`Pins::lock`]) is held
    /// on it.
    pub fn remove_all(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `st` is writable.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Mounts a new bpffs instance at `at`.
pub fn mount_bpffs(at: &Path) -> Result<()> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())?;
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs at {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
    }
    info!(path = %at.display(), "mounted bpffs");
    Ok(())
}
