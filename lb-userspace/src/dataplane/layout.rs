//! The program's map layout: every map's name, kind, key and value size
//! and capacity ([`SPECS`]), the fingerprint pins are versioned by
//! ([`layout_id`]), and the check a pinned map must pass before a daemon
//! adopts it ([`check_pin`]). The typed handles are in [`super::maps`].
use std::mem::{align_of, size_of};
use std::path::Path;

use aya::maps::{MapError, MapInfo, MapType};
use lb_common::{
    EndpointKey, FlowKey, FwdEntry, IfaceMacs, Listener, ListenerKey, ListenerStats, MaglevTable,
    Real, RealSeen, RealStats, RevEntry, SnatConfig, SnatScratch, VipKey, EMBRYONIC_CAPACITY,
    IFACE_MAC_SLOTS, LAYOUT_VERSION, MAGLEV_TABLES, MAGLEV_TABLE_SIZE, MAP_CT_EMB_REV, MAP_CT_FWD,
    MAP_CT_REV, MAP_IFACE_MACS, MAP_LISTENERS, MAP_LISTENER_STATS, MAP_MAGLEV, MAP_REALS,
    MAP_REAL_SEEN, MAP_REAL_STATS, MAP_REV_FALLBACK, MAP_SNAT, MAP_SNAT_ADDRS, MAP_SNAT_SCRATCH,
    MAP_STATS, MAP_TX_PORTS, MAP_VIPS, MAX_INTERFACES, MAX_LISTENERS, MAX_REALS,
    MAX_SNAT_ADDR_ENTRIES, NUM_REASONS, SNAT_FAMILIES,
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
