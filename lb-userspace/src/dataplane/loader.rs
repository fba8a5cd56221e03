//! Loads the embedded XDP object and attaches it to interfaces.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{MAP_CT_FWD, MAP_CT_REV, PROGRAM_NAME};

use super::maps::{self, Maps};
use super::pins::Pins;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::XdpMode as ConfigMode;

/// The XDP object built by `cargo xtask build-ebpf`, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// The embedded XDP object (empty when built without it).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the kernel's generic (skb) path.
    Generic,
}

impl AttachMode {
    /// `native` or `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// An attachment the daemon holds: a pinned bpf_link (survives the daemon)
/// or, on kernels without XDP links, a netlink attachment.
enum Attachment {
    Pinned { link: FdLink, pin: PathBuf },
    Managed(XdpLinkId),
}

/// The loaded program, its maps and its attachments.
pub struct Dataplane {
    /// The loaded object (maps and program). The daemon reaches the maps
    /// through [`Dataplane::maps`]; this stays public for the packet tests
    /// and the benchmark.
    pub ebpf: Ebpf,
    /// Typed handles on every map, taken once at load.
    pub maps: Maps,
    /// Pinned maps that could not be adopted as they were (and why), or a
    /// configured capacity the adopted maps do not have: reported in status.
    pub layout_notes: Vec<String>,
    attached: BTreeMap<String, (Attachment, AttachMode)>,
    pins: Option<Pins>,
    /// The maps were found pinned: a previous daemon's state was adopted.
    pub adopted: bool,
    /// The pin root's lock (see [`Pins::lock`]), held while the daemon runs.
    lock: Option<std::fs::File>,
    /// Interface index each attachment was made on (a re-created interface
    /// has a new one).
    ifindexes: BTreeMap<String, u32>,
}

impl Dataplane {
    /// Loads the program and creates its maps, with conntrack maps of
    /// `conntrack_capacity` entries per direction. Nothing is attached yet.
    pub fn load(conntrack_capacity: u32) -> Result<Self> {
        Self::load_with(OBJECT, conntrack_capacity, None, false)
    }

    /// [`Dataplane::load`] with another build of the XDP object than the
    /// embedded one: the benchmark times two builds side by side with it.
    pub fn load_object(object: &[u8], conntrack_capacity: u32) -> Result<Self> {
        Self::load_with(object, conntrack_capacity, None, false)
    }

    /// Loads the program with its maps pinned under `pin_root` (see
    /// [`super::pins`]): maps already pinned there by an earlier daemon of
    /// the same layout are reused with their contents (conntrack, counters),
    /// so established flows survive a restart or an upgrade. `reset` removes
    /// every pin (and so detaches earlier links) first. `ebpf_debug` turns
    /// the program's aya-log debug records on (see `dataplane::ebpf_log`).
    pub fn open(
        conntrack_capacity: u32,
        pin_root: &Path,
        reset: bool,
        ebpf_debug: bool,
    ) -> Result<Self> {
        let lock = Pins::prepare(pin_root)?.lock()?;
        let pins = Pins::prepare(pin_root)?;
        if reset {
            info!(path = %pin_root.display(), "--reset: removing pinned maps and links");
            pins.remove_all();
        }
        let pins = Pins::prepare(pin_root)?;
        let notes = pins.check_maps(conntrack_capacity);
        let adopted = pins.has_maps();
        let capacity = pins
            .pinned_conntrack_capacity()
            .unwrap_or(conntrack_capacity);
        let mut dp = Self::load_with(OBJECT, capacity, Some(&pins), ebpf_debug)?;
        dp.adopted = adopted;
        dp.pins = Some(pins);
        dp.layout_notes = notes;
        dp.lock = Some(lock);
        Ok(dp)
    }

    fn load_with(
        object: &[u8],
        conntrack_capacity: u32,
        pins: Option<&Pins>,
        ebpf_debug: bool,
    ) -> Result<Self> {
        if object.is_empty() {
            bail!("this lb binary was built without the XDP object: run `cargo xtask build-ebpf`, then rebuild");
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_CT_FWD, conntrack_capacity)
            .map_max_entries(MAP_CT_REV, conntrack_capacity);
        if ebpf_debug {
            loader.override_global(crate::dataplane::ebpf_log::DEBUG_GLOBAL, &1u8, true);
        }
        let paths: Vec<(&str, PathBuf)> = match pins {
            Some(p) => maps::names().map(|m| (m, p.map(m))).collect(),
            None => vec![],
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object).context("loading the XDP object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("XDP program missing from the object")?
            .try_into()?;
        prog.load().context("the kernel refused the XDP program")?;
        let maps = Maps::open(&ebpf).context("opening the program's maps")?;
        Ok(Self {
            ebpf,
            maps,
            layout_notes: Vec::new(),
            attached: BTreeMap::new(),
            pins: None,
            adopted: false,
            lock: None,
            ifindexes: BTreeMap::new(),
        })
    }

    /// The loaded XDP program (also used by packet tests through BPF_PROG_TEST_RUN).
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Attaches to `iface`. A link pinned there by an earlier daemon is
    /// taken over: the program on it is replaced atomically, so not one packet
    /// misses the data path. Otherwise `Auto` tries native XDP first and falls
    /// back to generic, logging which one took; the new link is pinned.
    pub fn attach(&mut self, iface: &str, mode: ConfigMode) -> Result<AttachMode> {
        let ifindex = ifindex(iface)?;
        self.ifindexes.insert(iface.to_string(), ifindex);
        if let Some(found) = self.take_over(iface)? {
            self.allow_redirect(ifindex)?;
            super::macs::write_or_warn(self, iface, ifindex);
            return Ok(found);
        }
        let tries: &[(XdpMode, AttachMode)] = match mode {
            ConfigMode::Native => &[(XdpMode::Driver, AttachMode::Native)],
            ConfigMode::Generic => &[(XdpMode::Skb, AttachMode::Generic)],
            ConfigMode::Auto => &[
                (XdpMode::Driver, AttachMode::Native),
                (XdpMode::Skb, AttachMode::Generic),
            ],
        };
        let mut last_err = None;
        for (xdp_mode, attach_mode) in tries {
            match self.program().attach(iface, *xdp_mode) {
                Ok(link) => {
                    info!(
                        interface = iface,
                        mode = attach_mode.as_str(),
                        "XDP attached"
                    );
                    let attachment = self.pin_link(link, iface, *attach_mode)?;
                    self.attached
                        .insert(iface.to_string(), (attachment, *attach_mode));
                    self.allow_redirect(ifindex)?;
                    super::macs::write_or_warn(self, iface, ifindex);
                    return Ok(*attach_mode);
                }
                Err(e) => {
                    if mode == ConfigMode::Auto {
                        warn!(interface = iface, mode = attach_mode.as_str(), error = %e, "XDP attach failed, trying the next mode");
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(anyhow::Error::new(
            last_err.expect("at least one mode tried"),
        ))
        .with_context(|| format!("attaching XDP to {iface}"))
    }

    /// Replaces the program on a link pinned for `iface` (this layout or an
    /// older one) with this daemon's program.
    fn take_over(&mut self, iface: &str) -> Result<Option<AttachMode>> {
        let Some(pins) = self.pins.clone() else {
            return Ok(None);
        };
        for found in pins.links().into_iter().filter(|l| l.iface == iface) {
            let pinned = match PinnedLink::from_pin(&found.path) {
                Ok(p) => p,
                Err(e) => {
                    warn!(path = %found.path.display(), error = %e, "stale link pin, removing it");
                    let _ = std::fs::remove_file(&found.path);
                    continue;
                }
            };
            let xdp_link = match XdpLink::try_from(FdLink::from(pinned)) {
                Ok(l) => l,
                Err(e) => {
                    warn!(path = %found.path.display(), error = %e, "pinned link is not an XDP link, removing it");
                    let _ = std::fs::remove_file(&found.path);
                    continue;
                }
            };
            let id = match self.program().attach_to_link(xdp_link) {
                Ok(id) => id,
                Err(e) => {
                    // ENOLINK "Link has been severed": the interface was
                    // deleted (and maybe re-created) since; the link is dead.
                    warn!(interface = iface, path = %found.path.display(), error = %e,
                        "pinned link cannot be taken over (severed?): removing it and attaching afresh");
                    let _ = std::fs::remove_file(&found.path);
                    continue;
                }
            };
            let link = self.program().take_link(id)?;
            let fd = FdLink::try_from(link).context("adopted link is not a bpf_link")?;
            let pin = pins.link(iface, found.mode);
            if found.path != pin {
                // A link of an older layout: pin it under this layout's path.
                let fd2 = fd.pin(&pin).context("re-pinning an adopted link")?;
                let _ = std::fs::remove_file(&found.path);
                let fd = FdLink::from(fd2);
                self.attached.insert(
                    iface.to_string(),
                    (Attachment::Pinned { link: fd, pin }, found.mode),
                );
            } else {
                self.attached.insert(
                    iface.to_string(),
                    (Attachment::Pinned { link: fd, pin }, found.mode),
                );
            }
            info!(
                interface = iface,
                mode = found.mode.as_str(),
                "XDP link adopted: program replaced atomically"
            );
            return Ok(Some(found.mode));
        }
        Ok(None)
    }

    /// Pins a fresh link so the data path outlives the daemon.
    fn pin_link(&mut self, id: XdpLinkId, iface: &str, mode: AttachMode) -> Result<Attachment> {
        let Some(pins) = self.pins.clone() else {
            return Ok(Attachment::Managed(id));
        };
        let link = self.program().take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                let pin = pins.link(iface, mode);
                let pinned = fd
                    .pin(&pin)
                    .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
                Ok(Attachment::Pinned {
                    link: FdLink::from(pinned),
                    pin,
                })
            }
            Err(_) => {
                warn!(interface = iface, "kernel gave a netlink XDP attachment: it cannot be pinned, so it ends with the daemon");
                Err(anyhow::anyhow!(
                    "XDP attachment of {iface} is not a bpf_link"
                ))
            }
        }
    }

    /// Removes pins of other layouts once their links were taken over.
    pub fn finish_adoption(&self) {
        if let Some(p) = &self.pins {
            p.remove_other_layouts();
        }
    }

    /// Lets the program redirect packets to interface `ifindex` (done for
    /// every attached interface; packet tests call it directly).
    pub fn allow_redirect(&mut self, ifindex: u32) -> Result<()> {
        self.maps
            .tx_ports
            .insert(ifindex, ifindex, None, 0)
            .context("TX_PORTS: allowing redirects")?;
        Ok(())
    }

    /// Forgets the attachment of `iface` (the interface was deleted: its
    /// link is severed and cannot be reused) and removes its pin.
    pub fn forget(&mut self, iface: &str) -> bool {
        self.ifindexes.remove(iface);
        match self.attached.remove(iface) {
            Some((Attachment::Pinned { link, pin }, _)) => {
                let _ = std::fs::remove_file(&pin);
                drop(link);
                true
            }
            Some((Attachment::Managed(_), _)) => true,
            None => false,
        }
    }

    /// Detaches `iface`, an attachment this daemon made, and removes its pin
    /// (undoing a start-up that failed further on).
    pub fn detach(&mut self, iface: &str) {
        self.ifindexes.remove(iface);
        match self.attached.remove(iface) {
            Some((Attachment::Pinned { link, pin }, _)) => {
                let _ = std::fs::remove_file(&pin);
                drop(link);
                info!(interface = iface, "XDP detached");
            }
            Some((Attachment::Managed(id), _)) => {
                if let Err(e) = self.program().detach(id) {
                    warn!(interface = iface, error = %e, "XDP detach failed");
                }
            }
            None => {}
        }
    }

    /// True when a link pinned for `iface` (this layout or an older one)
    /// waits to be taken over.
    pub fn has_pinned_link(&self, iface: &str) -> bool {
        self.pins
            .as_ref()
            .is_some_and(|p| p.links().iter().any(|l| l.iface == iface))
    }

    /// Attached interfaces that no longer exist, or exist under another
    /// index (deleted and re-created): their links are severed.
    pub fn stale_attachments(&self) -> Vec<String> {
        self.attached
            .keys()
            .filter(|i| ifindex(i).ok() != self.ifindexes.get(*i).copied())
            .cloned()
            .collect()
    }

    /// Interfaces the program is attached to, with the mode of each.
    pub fn attachments(&self) -> Vec<(String, AttachMode)> {
        self.attached
            .iter()
            .map(|(k, (_, m))| (k.clone(), *m))
            .collect()
    }

    /// Detaches from every interface and removes every pin: the host is
    /// left as it was before `lb run`.
    pub fn detach_all(&mut self) {
        for (iface, (attachment, _)) in std::mem::take(&mut self.attached) {
            match attachment {
                Attachment::Pinned { link, pin } => {
                    let _ = std::fs::remove_file(&pin);
                    drop(link);
                    info!(interface = %iface, "XDP detached");
                }
                Attachment::Managed(id) => match self.program().detach(id) {
                    Ok(()) => info!(interface = %iface, "XDP detached"),
                    Err(e) => warn!(interface = %iface, error = %e, "XDP detach failed"),
                },
            }
        }
        if let Some(p) = &self.pins {
            p.remove_everything();
        }
    }

    /// Leaves the data path running: links and maps stay pinned, and the
    /// next `lb run` adopts them.
    pub fn keep_attached(&mut self) {
        let n = self.attached.len();
        for (_, (attachment, _)) in std::mem::take(&mut self.attached) {
            if let Attachment::Pinned { link, .. } = attachment {
                // Closing our fd leaves the pinned link attached.
                drop(link);
            }
        }
        info!(interfaces = n, "leaving the data path attached (pinned)");
    }
}

/// Removes the data path a daemon left attached at `pin_root`: every
/// pinned link (the XDP programs detach as their last reference goes) and
/// every pinned map. Takes the pin root's lock first, so it refuses while a
/// daemon runs. Returns how many links were removed.
pub fn detach_pinned(pin_root: &Path) -> Result<usize> {
    let pins = Pins::prepare(pin_root)?;
    let _lock = pins.lock()?;
    let links = pins.links().len();
    pins.remove_everything();
    for l in pins.links() {
        warn!(path = %l.path.display(), "could not remove a pinned link");
    }
    Ok(links)
}

/// The kernel's index of a network interface.
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name contains NUL")?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {iface:?} in this network namespace");
    }
    Ok(idx)
}

impl AsRef<Maps> for Dataplane {
    fn as_ref(&self) -> &Maps {
        &self.maps
    }
}

/// The loaded program's maps are written through its typed handles.
impl super::maps::TableMaps for Dataplane {
    fn set_real(&mut self, id: u32, real: lb_common::Real) -> Result<(), maps::MapOpError> {
        self.maps.set_real(id, real)
    }
    fn set_listener(
        &mut self,
        key: lb_common::ListenerKey,
        value: lb_common::Listener,
    ) -> Result<(), maps::MapOpError> {
        self.maps.set_listener(key, value)
    }
    fn remove_listener(&mut self, key: &lb_common::ListenerKey) -> Result<(), maps::MapOpError> {
        self.maps.remove_listener(key)
    }
    fn set_table(
        &mut self,
        index: u32,
        table: &lb_common::MaglevTable,
    ) -> Result<(), maps::MapOpError> {
        self.maps.set_table(index, table)
    }
    fn reset_real_stats(&mut self, id: u32) -> Result<(), maps::MapOpError> {
        self.maps.reset_real_stats(id)
    }
    fn set_vip(&mut self, key: lb_common::VipKey) -> Result<(), maps::MapOpError> {
        self.maps.set_vip(key)
    }
    fn remove_vip(&mut self, key: &lb_common::VipKey) -> Result<(), maps::MapOpError> {
        self.maps.remove_vip(key)
    }
    fn set_fallback(
        &mut self,
        key: lb_common::EndpointKey,
        value: lb_common::RevEntry,
    ) -> Result<(), maps::MapOpError> {
        self.maps.set_fallback(key, value)
    }
    fn remove_fallback(&mut self, key: &lb_common::EndpointKey) -> Result<(), maps::MapOpError> {
        self.maps.remove_fallback(key)
    }
}
