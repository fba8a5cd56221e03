//! Loads the embedded XDP object; attaching it to interfaces is in
//! [`attach`].
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{links::FdLink, xdp::XdpLinkId, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::{MAP_CT_FWD, MAP_CT_REV, PROGRAM_NAME};

use super::maps::{self, Maps};
use super::pins::Pins;
use serde::{Deserialize, Serialize};
use tracing::info;

#[path = "attach.rs"]
pub mod attach;
pub use attach::detach_pinned;

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
    /// The kernel's id of the loaded program, to recognise it on an
    /// interface (see [`Dataplane::verify_attached`]).
    prog_id: u32,
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
        let prog_id = prog.info().map(|i| i.id()).unwrap_or(0);
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
            prog_id,
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
    fn real_seen(&self, ids: &[u32]) -> std::collections::BTreeMap<u32, lb_common::RealSeen> {
        self.maps.real_seen(ids)
    }
    fn tracked_flows(&self, id: u32) -> Option<u64> {
        self.maps.tracked_flows(id)
    }
}
