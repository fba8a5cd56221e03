//! The one place that takes the program's maps by name: the typed handles
//! the daemon uses ([`Maps`]), each map taken once when the program is
//! loaded. Their layout (names, kinds, sizes, the fingerprint and the
//! check of pinned maps) is [`super::layout`], re-exported here.
//!
//! The writer ([`super::tables::Written`]) goes through the [`TableMaps`]
//! trait rather than the handles directly, so its ordering and failure
//! handling are unit-tested with an in-memory implementation that can be
//! told to fail.
use std::collections::BTreeMap;
use std::os::fd::AsFd;

use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::Ebpf;

pub use super::layout::*;
use lb_common::{
    EndpointKey, FlowKey, FwdEntry, IfaceMacs, Listener, ListenerKey, ListenerStats, MaglevTable,
    Real, RealSeen, RealStats, RevEntry, SnatConfig, VipKey, FWD_F_CLOSING, MAP_CT_EMB_REV,
    MAP_CT_FWD, MAP_CT_REV, MAP_IFACE_MACS, MAP_LISTENERS, MAP_LISTENER_STATS, MAP_MAGLEV,
    MAP_REALS, MAP_REAL_SEEN, MAP_REAL_STATS, MAP_REV_FALLBACK, MAP_SNAT, MAP_SNAT_ADDRS,
    MAP_STATS, MAP_TX_PORTS, MAP_VIPS,
};

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
