//! The one place that knows the program's maps: their names, kinds and
//! layouts ([`SPECS`]), the layout fingerprint pins are versioned by
//! ([`layout_id`]), the check a pinned map must pass before it is adopted
//! ([`check_pin`]), and the typed handles the daemon uses ([`Maps`]), each
//! map taken once when the program is loaded.
//!
//! The writer ([`super::tables::Written`]) goes through the [`TableMaps`]
//! trait rather than the handles directly, so its ordering and failure
//! handling are unit-tested with an in-memory implementation that can be
//! told to fail.
use std::collections::BTreeMap;
use std::mem::{align_of, size_of};
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{
    Array, DevMapHash, HashMap, Map, MapData, MapError, MapInfo, MapType, PerCpuArray, PerCpuValues,
};
use aya::Ebpf;
use lb_common::{
    EndpointKey, FlowKey, FwdEntry, IfaceMacs, Listener, ListenerKey, ListenerStats, MaglevTable,
    Real, RealSeen, RealStats, RevEntry, SnatConfig, SnatScratch, VipKey, EMBRYONIC_CAPACITY,
    FWD_F_CLOSING, IFACE_MAC_SLOTS, LAYOUT_VERSION, MAGLEV_TABLES, MAGLEV_TABLE_SIZE,
    MAP_CT_EMB_REV, MAP_CT_FWD, MAP_CT_REV, MAP_IFACE_MACS, MAP_LISTENERS, MAP_LISTENER_STATS,
    MAP_MAGLEV, MAP_REALS, MAP_REAL_SEEN, MAP_REAL_STATS, MAP_REV_FALLBACK, MAP_SNAT,
    MAP_SNAT_ADDRS, MAP_SNAT_SCRATCH, MAP_STATS, MAP_TX_PORTS, MAP_VIPS, MAX_INTERFACES,
    MAX_LISTENERS, MAX_REALS, MAX_SNAT_ADDR_ENTRIES, NUM_REASONS, SNAT_FAMILIES,
};

/// Kind of a map, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray,
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    DevMapHash,
}

impl Kind {
    fn matches(self, t: MapType) -> bool {
        matches!(
            (self, t),
            (Kind::Hash, MapType::Hash)
                | (Kind::LruHash, MapType::LruHash)
                | (Kind::Array, MapType::Array)
                | (Kind::PerCpuArray, MapType::PerCpuArray)
                | (Kind::DevMapHash, MapType::DevMapHash)
        )
    }
}

/// What the program expects of one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Map name (also its pin file name).
    pub name: &'static str,
    /// Map type.
    pub kind: Kind,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity; `None` for the conntrack maps, sized by the configuration.
    pub max_entries: Option<u32>,
}

const fn spec<K, V>(name: &'static str, kind: Kind, max_entries: Option<u32>) -> MapSpec {
    MapSpec {
        name,
        kind,
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
    }
}

/// Every map of the program, with the layout the shared types give it.
pub const SPECS: [MapSpec; 17] = [
    spec::<ListenerKey, Listener>(MAP_LISTENERS, Kind::Hash, Some(MAX_LISTENERS)),
    spec::<VipKey, u32>(MAP_VIPS, Kind::Hash, Some(MAX_LISTENERS)),
    spec::<u32, MaglevTable>(MAP_MAGLEV, Kind::Array, Some(MAGLEV_TABLES)),
    spec::<u32, Real>(MAP_REALS, Kind::Array, Some(MAX_REALS)),
    spec::<FlowKey, FwdEntry>(MAP_CT_FWD, Kind::LruHash, None),
    spec::<FlowKey, RevEntry>(MAP_CT_REV, Kind::LruHash, None),
    spec::<EndpointKey, RevEntry>(MAP_REV_FALLBACK, Kind::Hash, Some(MAX_REALS)),
    spec::<u32, u64>(MAP_STATS, Kind::PerCpuArray, Some(NUM_REASONS)),
    spec::<u32, RealStats>(MAP_REAL_STATS, Kind::PerCpuArray, Some(MAX_REALS)),
    spec::<u32, ListenerStats>(MAP_LISTENER_STATS, Kind::PerCpuArray, Some(MAX_LISTENERS)),
    // Values are `struct bpf_devmap_val`: the ifindex and a program fd.
    spec::<u32, [u32; 2]>(MAP_TX_PORTS, Kind::DevMapHash, Some(MAX_INTERFACES)),
    spec::<FlowKey, RevEntry>(MAP_CT_EMB_REV, Kind::LruHash, Some(EMBRYONIC_CAPACITY)),
    spec::<u32, IfaceMacs>(MAP_IFACE_MACS, Kind::Array, Some(IFACE_MAC_SLOTS)),
    spec::<u32, SnatConfig>(MAP_SNAT, Kind::Array, Some(SNAT_FAMILIES)),
    spec::<VipKey, u32>(MAP_SNAT_ADDRS, Kind::Hash, Some(MAX_SNAT_ADDR_ENTRIES)),
    spec::<u32, SnatScratch>(MAP_SNAT_SCRATCH, Kind::PerCpuArray, Some(1)),
    spec::<u32, RealSeen>(MAP_REAL_SEEN, Kind::Array, Some(MAX_REALS)),
];

/// Names of every map, for pinning.
pub fn names() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.name)
}

/// FNV-1a over 64-bit words, usable in a `const`.
const fn fnv(mut h: u64, v: u64) -> u64 {
    let bytes = v.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Fingerprint of the map layout, computed at build time from the shared
/// types: every key's and value's size and alignment, every map's kind and
/// capacity, the `MAX_*` limits and [`LAYOUT_VERSION`] (kept for changes of
/// meaning that leave sizes alone). Pins live under a directory named after
/// it, so a daemon never adopts maps of another layout, and nobody has to
/// remember to bump a number when a type grows.
pub const fn layout_id() -> u64 {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, LAYOUT_VERSION as u64);
    let mut i = 0;
    while i < SPECS.len() {
        let s = &SPECS[i];
        h = fnv(h, s.kind as u64);
        h = fnv(h, s.key_size as u64);
        h = fnv(h, s.value_size as u64);
        h = fnv(
            h,
            match s.max_entries {
                Some(n) => n as u64,
                None => u64::MAX,
            },
        );
        i += 1;
    }
    let aligns = [
        align_of::<ListenerKey>(),
        align_of::<Listener>(),
        align_of::<VipKey>(),
        align_of::<Real>(),
        align_of::<FlowKey>(),
        align_of::<FwdEntry>(),
        align_of::<RevEntry>(),
        align_of::<EndpointKey>(),
        align_of::<RealStats>(),
        align_of::<ListenerStats>(),
        align_of::<IfaceMacs>(),
        align_of::<SnatConfig>(),
        align_of::<SnatScratch>(),
        MAGLEV_TABLE_SIZE as usize,
    ];
    let mut j = 0;
    while j < aligns.len() {
        h = fnv(h, aligns[j] as u64);
        j += 1;
    }
    h
}

/// The pin directory name of this layout (`v<version>-<fingerprint>`).
pub fn layout_dir_name() -> String {
    format!("v{LAYOUT_VERSION}-{:016x}", layout_id())
}

/// Why a pinned map cannot be adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinMismatch {
    /// Reading the pin failed.
    #[error("map {map}: reading the pin: {error}")]
    Unreadable {
        /// Map name.
        map: &'static str,
        /// The error.
        error: String,
    },
    /// The pinned map's type, key size or value size differ.
    #[error("map {map}: pinned layout {found} differs from the program's {expected}")]
    Layout {
        /// Map name.
        map: &'static str,
        /// What the pin has.
        found: String,
        /// What the program expects.
        expected: String,
    },
    /// The pinned map has another capacity.
    #[error("map {map}: pinned with {found} entries, the program expects {expected}")]
    Capacity {
        /// Map name.
        map: &'static str,
        /// Capacity of the pin.
        found: u32,
        /// Capacity expected.
        expected: u32,
    },
}

/// What a pinned map looks like (from `BPF_OBJ_GET_INFO_BY_FD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedShape {
    /// Map type, if the kernel's type is one the program uses.
    pub kind: Option<Kind>,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
}

impl PinnedShape {
    /// Reads the shape of the map pinned at `path`.
    pub fn read(path: &Path) -> Result<PinnedShape, MapError> {
        let info = MapInfo::from_pin(path)?;
        let t = info.map_type().ok();
        let kind = [
            Kind::Hash,
            Kind::LruHash,
            Kind::Array,
            Kind::PerCpuArray,
            Kind::DevMapHash,
        ]
        .into_iter()
        .find(|k| t.is_some_and(|t| k.matches(t)));
        Ok(PinnedShape {
            kind,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        })
    }
}

/// Compares a pinned map's shape with `spec` (`conntrack_capacity` stands
/// for the conntrack maps' capacity).
pub fn compare(
    spec: &MapSpec,
    found: &PinnedShape,
    conntrack_capacity: u32,
) -> Result<(), PinMismatch> {
    if found.kind != Some(spec.kind)
        || found.key_size != spec.key_size
        || found.value_size != spec.value_size
    {
        return Err(PinMismatch::Layout {
            map: spec.name,
            found: format!(
                "{:?} key {} value {}",
                found.kind, found.key_size, found.value_size
            ),
            expected: format!(
                "{:?} key {} value {}",
                spec.kind, spec.key_size, spec.value_size
            ),
        });
    }
    let expected = spec.max_entries.unwrap_or(conntrack_capacity);
    if found.max_entries != expected {
        return Err(PinMismatch::Capacity {
            map: spec.name,
            found: found.max_entries,
            expected,
        });
    }
    Ok(())
}

/// Checks the map pinned for `spec` under `dir` (absent is fine: it will
/// be created).
pub fn check_pin(spec: &MapSpec, dir: &Path, conntrack_capacity: u32) -> Result<(), PinMismatch> {
    let path = dir.join(spec.name);
    if !path.exists() {
        return Ok(());
    }
    let shape = PinnedShape::read(&path).map_err(|e| PinMismatch::Unreadable {
        map: spec.name,
        error: e.to_string(),
    })?;
    compare(spec, &shape, conntrack_capacity)
}

/// Why a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MapOpError {
    /// The map is missing from the loaded object.
    #[error("map {0} missing from the XDP object")]
    Missing(&'static str),
    /// The kernel refused an operation.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The error.
        #[source]
        source: MapError,
    },
    /// Duplicating a map descriptor failed.
    #[error("map {map}: duplicating its descriptor: {source}")]
    Dup {
        /// Map name.
        map: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Counting CPUs failed.
    #[error("counting possible CPUs: {0}")]
    Cpus(std::io::Error),
    /// An injected failure (tests).
    #[error("injected failure: {0}")]
    Injected(String),
}

pub(super) fn op<T>(map: &'static str, r: Result<T, MapError>) -> Result<T, MapOpError> {
    r.map_err(|source| MapOpError::Map { map, source })
}

/// A new descriptor of map `name` of `ebpf`, as an owned map.
fn dup(ebpf: &Ebpf, name: &'static str) -> Result<Map, MapOpError> {
    let map = ebpf.map(name).ok_or(MapOpError::Missing(name))?;
    let data: &MapData = match map {
        Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::DevMapHash(d) => d,
        _ => return Err(MapOpError::Missing(name)),
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| MapOpError::Dup { map: name, source })?;
    let owned = op(name, MapData::from_fd(fd))?;
    Ok(match map {
        Map::HashMap(_) => Map::HashMap(owned),
        Map::LruHashMap(_) => Map::LruHashMap(owned),
        Map::Array(_) => Map::Array(owned),
        Map::PerCpuArray(_) => Map::PerCpuArray(owned),
        _ => Map::DevMapHash(owned),
    })
}

/// Typed handles on every map. Each holds its own descriptor, so a set of
/// handles can live in another task than the loaded program (the writer
/// owns one set; readers open their own with [`Maps::open`]).
pub struct Maps {
    /// `LISTENERS`.
    pub listeners: HashMap<MapData, ListenerKey, Listener>,
    /// `VIPS`.
    pub vips: HashMap<MapData, VipKey, u32>,
    /// `MAGLEV`.
    pub maglev: Array<MapData, MaglevTable>,
    /// `REALS`.
    pub reals: Array<MapData, Real>,
    /// `CT_FWD`.
    pub ct_fwd: HashMap<MapData, FlowKey, FwdEntry>,
    /// `CT_REV`.
    pub ct_rev: HashMap<MapData, FlowKey, RevEntry>,
    /// `REV_FALLBACK`.
    pub rev_fallback: HashMap<MapData, EndpointKey, RevEntry>,
    /// `STATS`.
    pub stats: PerCpuArray<MapData, u64>,
    /// `REAL_STATS`.
    pub real_stats: PerCpuArray<MapData, RealStats>,
    /// `LISTENER_STATS`.
    pub listener_stats: PerCpuArray<MapData, ListenerStats>,
    /// `TX_PORTS`.
    pub tx_ports: DevMapHash<MapData>,
    /// `CT_EMB_REV`: flows not proven established yet (reply direction).
    pub ct_emb_rev: HashMap<MapData, FlowKey, RevEntry>,
    /// `IFACE_MACS`: destination MACs each interface accepts.
    pub iface_macs: Array<MapData, IfaceMacs>,
    /// `SNAT`: source-NAT addresses and port range per family (index
    /// `SNAT_V4`, `SNAT_V6`); write with [`Maps::set_snat`].
    pub snat: Array<MapData, SnatConfig>,
    /// `SNAT_ADDRS`: every source-NAT address; write with
    /// [`Maps::set_snat_addr`] / [`Maps::remove_snat_addr`].
    pub snat_addrs: HashMap<MapData, VipKey, u32>,
    /// `REAL_SEEN`: evidence of life per real (read only here).
    pub real_seen: Array<MapData, RealSeen>,
    /// Capacity of `CT_FWD` (and `CT_REV`).
    pub conntrack_capacity: u32,
    cpus: usize,
}

impl Maps {
    /// Opens typed handles on every map of `ebpf` (new descriptors).
    pub fn open(ebpf: &Ebpf) -> Result<Maps, MapOpError> {
        let ct_fwd = dup(ebpf, MAP_CT_FWD)?;
        let conntrack_capacity = match &ct_fwd {
            Map::LruHashMap(d) | Map::HashMap(d) => op(MAP_CT_FWD, d.info())?.max_entries(),
            _ => return Err(MapOpError::Missing(MAP_CT_FWD)),
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapOpError::Cpus(e))?;
        Ok(Maps {
            listeners: op(MAP_LISTENERS, dup(ebpf, MAP_LISTENERS)?.try_into())?,
            vips: op(MAP_VIPS, dup(ebpf, MAP_VIPS)?.try_into())?,
            maglev: op(MAP_MAGLEV, dup(ebpf, MAP_MAGLEV)?.try_into())?,
            reals: op(MAP_REALS, dup(ebpf, MAP_REALS)?.try_into())?,
            ct_fwd: op(MAP_CT_FWD, ct_fwd.try_into())?,
            ct_rev: op(MAP_CT_REV, dup(ebpf, MAP_CT_REV)?.try_into())?,
            rev_fallback: op(MAP_REV_FALLBACK, dup(ebpf, MAP_REV_FALLBACK)?.try_into())?,
            stats: op(MAP_STATS, dup(ebpf, MAP_STATS)?.try_into())?,
            real_stats: op(MAP_REAL_STATS, dup(ebpf, MAP_REAL_STATS)?.try_into())?,
            listener_stats: op(
                MAP_LISTENER_STATS,
                dup(ebpf, MAP_LISTENER_STATS)?.try_into(),
            )?,
            tx_ports: op(MAP_TX_PORTS, dup(ebpf, MAP_TX_PORTS)?.try_into())?,
            ct_emb_rev: op(MAP_CT_EMB_REV, dup(ebpf, MAP_CT_EMB_REV)?.try_into())?,
            iface_macs: op(MAP_IFACE_MACS, dup(ebpf, MAP_IFACE_MACS)?.try_into())?,
            snat: op(MAP_SNAT, dup(ebpf, MAP_SNAT)?.try_into())?,
            snat_addrs: op(MAP_SNAT_ADDRS, dup(ebpf, MAP_SNAT_ADDRS)?.try_into())?,
            real_seen: op(MAP_REAL_SEEN, dup(ebpf, MAP_REAL_SEEN)?.try_into())?,
            conntrack_capacity,
            cpus,
        })
    }
}

impl AsRef<Maps> for Maps {
    fn as_ref(&self) -> &Maps {
        self
    }
}

/// The writes the table writer makes. Implemented by [`Maps`], and in tests
/// by an in-memory model that can fail on demand.
pub trait TableMaps {
    /// Sets `REALS[id]`.
    fn set_real(&mut self, id: u32, real: Real) -> Result<(), MapOpError>;
    /// Inserts or replaces a `LISTENERS` entry.
    fn set_listener(&mut self, key: ListenerKey, value: Listener) -> Result<(), MapOpError>;
    /// Removes a `LISTENERS` entry (absent is fine).
    fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), MapOpError>;
    /// Sets `MAGLEV[index]`.
    fn set_table(&mut self, index: u32, table: &MaglevTable) -> Result<(), MapOpError>;
    /// Zeroes every CPU's `REAL_STATS[id]` (and `REAL_SEEN[id]`).
    fn reset_real_stats(&mut self, id: u32) -> Result<(), MapOpError>;
    /// Marks an address as a VIP.
    fn set_vip(&mut self, key: VipKey) -> Result<(), MapOpError>;
    /// Unmarks a VIP (absent is fine).
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapOpError>;
    /// Inserts or replaces a `REV_FALLBACK` entry.
    fn set_fallback(&mut self, key: EndpointKey, value: RevEntry) -> Result<(), MapOpError>;
    /// Removes a `REV_FALLBACK` entry (absent is fine).
    fn remove_fallback(&mut self, key: &EndpointKey) -> Result<(), MapOpError>;
    /// Reads `REAL_SEEN` of the reals `ids` (a real that cannot be read
    /// is left out). Read-only; the in-memory model has no data path.
    fn real_seen(&self, ids: &[u32]) -> BTreeMap<u32, RealSeen> {
        let _ = ids;
        BTreeMap::new()
    }
    /// Tracked flows of real `id` that are not closing (a walk of
    /// `CT_FWD`: for a rare log line, not for every tick).
    fn tracked_flows(&self, id: u32) -> Option<u64> {
        let _ = id;
        None
    }
}

/// `ENOENT` from a removal means the entry is already gone.
pub(super) fn absent_ok(map: &'static str, r: Result<(), MapError>) -> Result<(), MapOpError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => op(map, r),
    }
}

impl TableMaps for Maps {
    fn set_real(&mut self, id: u32, real: Real) -> Result<(), MapOpError> {
        op(MAP_REALS, self.reals.set(id, real, 0))
    }
    fn set_listener(&mut self, key: ListenerKey, value: Listener) -> Result<(), MapOpError> {
        op(MAP_LISTENERS, self.listeners.insert(key, value, 0))
    }
    fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), MapOpError> {
        absent_ok(MAP_LISTENERS, self.listeners.remove(key))
    }
    fn set_table(&mut self, index: u32, table: &MaglevTable) -> Result<(), MapOpError> {
        op(MAP_MAGLEV, self.maglev.set(index, table, 0))
    }
    fn reset_real_stats(&mut self, id: u32) -> Result<(), MapOpError> {
        let zero = PerCpuValues::try_from(vec![RealStats::default(); self.cpus])
            .map_err(MapOpError::Cpus)?;
        op(MAP_REAL_STATS, self.real_stats.set(id, zero, 0))?;
        // A new real under a reused id starts without the old one's
        // evidence of life (it must not inherit a silence).
        op(
            MAP_REAL_SEEN,
            self.real_seen.set(id, RealSeen::default(), 0),
        )
    }
    fn set_vip(&mut self, key: VipKey) -> Result<(), MapOpError> {
        op(MAP_VIPS, self.vips.insert(key, 1, 0))
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapOpError> {
        absent_ok(MAP_VIPS, self.vips.remove(key))
    }
    fn set_fallback(&mut self, key: EndpointKey, value: RevEntry) -> Result<(), MapOpError> {
        op(MAP_REV_FALLBACK, self.rev_fallback.insert(key, value, 0))
    }
    fn remove_fallback(&mut self, key: &EndpointKey) -> Result<(), MapOpError> {
        absent_ok(MAP_REV_FALLBACK, self.rev_fallback.remove(key))
    }
    fn real_seen(&self, ids: &[u32]) -> BTreeMap<u32, RealSeen> {
        ids.iter()
            .filter_map(|id| self.real_seen.get(id, 0).ok().map(|s| (*id, s)))
            .collect()
    }
    fn tracked_flows(&self, id: u32) -> Option<u64> {
        let n = self
            .ct_fwd
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(_, v)| v.real == id && v.flags & FWD_F_CLOSING == 0)
            .count();
        Some(n as u64)
    }
}

#[cfg(test)]
#[path = "fake_maps.rs"]
mod fake;
#[cfg(test)]
pub use fake::FakeMaps;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_id_is_stable_and_named_after_the_version() {
        assert_eq!(layout_id(), layout_id());
        assert!(layout_dir_name().starts_with(&format!("v{LAYOUT_VERSION}-")));
    }

    #[test]
    fn a_grown_value_or_another_capacity_is_refused() {
        let ct = SPECS.iter().find(|s| s.name == MAP_CT_FWD).unwrap();
        let mut shape = PinnedShape {
            kind: Some(Kind::LruHash),
            key_size: ct.key_size,
            value_size: ct.value_size,
            max_entries: 1024,
        };
        assert_eq!(compare(ct, &shape, 1024), Ok(()));
        assert!(matches!(
            compare(ct, &shape, 2048),
            Err(PinMismatch::Capacity {
                found: 1024,
                expected: 2048,
                ..
            })
        ));
        // Conntrack values grew from 24 to 48 bytes once without a version bump.
        shape.value_size = 24;
        assert!(matches!(
            compare(ct, &shape, 1024),
            Err(PinMismatch::Layout { .. })
        ));
        shape.value_size = ct.value_size;
        shape.kind = Some(Kind::Hash);
        assert!(matches!(
            compare(ct, &shape, 1024),
            Err(PinMismatch::Layout { .. })
        ));
    }

    /// The table above must describe the object the binary embeds.
    #[test]
    fn specs_match_the_embedded_object() {
        let object = super::super::loader::object();
        if object.is_empty() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: the XDP object must be embedded"
            );
            return;
        }
        let obj = aya_obj::Object::parse(object).expect("parse the XDP object");
        // Every map of the program is described (global data sections and
        // aya-log's buffer are not the daemon's).
        for name in obj.maps.keys() {
            if name.starts_with('.') || name.starts_with("AYA_") {
                continue;
            }
            assert!(SPECS.iter().any(|s| s.name == name), "{name} has no spec");
        }
        for s in &SPECS {
            let m = obj
                .maps
                .get(s.name)
                .unwrap_or_else(|| panic!("{} in object", s.name));
            assert_eq!(m.key_size(), s.key_size, "{} key", s.name);
            assert_eq!(m.value_size(), s.value_size, "{} value", s.name);
            if let Some(n) = s.max_entries {
                assert_eq!(m.max_entries(), n, "{} max_entries", s.name);
            }
        }
    }
}
