//! The program's maps. Names and sizes come from `lb_common`; conntrack sizes
//! are overridden by the daemon at load time.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::*;

#[map(name = "LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, Listener> = HashMap::with_max_entries(MAX_LISTENERS, 0);

#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, u32> = HashMap::with_max_entries(MAX_LISTENERS, 0);

#[map(name = "MAGLEV")]
pub static MAGLEV: Array<MaglevTable> = Array::with_max_entries(MAGLEV_TABLES, 0);

#[map(name = "REALS")]
pub static REALS: Array<Real> = Array::with_max_entries(MAX_REALS, 0);

#[map(name = "CT_FWD")]
pub static CT_FWD: LruHashMap<FlowKey, FwdEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONNTRACK_CAPACITY, 0);

#[map(name = "CT_REV")]
pub static CT_REV: LruHashMap<FlowKey, RevEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONNTRACK_CAPACITY, 0);

#[map(name = "REV_FALLBACK")]
pub static REV_FALLBACK: HashMap<EndpointKey, RevEntry> = HashMap::with_max_entries(MAX_REALS, 0);

#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_REASONS, 0);

#[map(name = "REAL_STATS")]
pub static REAL_STATS: PerCpuArray<RealStats> = PerCpuArray::with_max_entries(MAX_REALS, 0);

#[map(name = "LISTENER_STATS")]
pub static LISTENER_STATS: PerCpuArray<ListenerStats> =
    PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_INTERFACES, 0);

#[map(name = "CT_EMB_REV")]
pub static CT_EMB_REV: LruHashMap<FlowKey, RevEntry> =
    LruHashMap::with_max_entries(EMBRYONIC_CAPACITY, 0);

#[map(name = "IFACE_MACS")]
pub static IFACE_MACS: Array<IfaceMacs> = Array::with_max_entries(IFACE_MAC_SLOTS, 0);

#[map(name = "SNAT")]
pub static SNAT: Array<SnatConfig> = Array::with_max_entries(SNAT_FAMILIES, 0);

#[map(name = "SNAT_ADDRS")]
pub static SNAT_ADDRS: HashMap<VipKey, u32> = HashMap::with_max_entries(MAX_SNAT_ADDR_ENTRIES, 0);

#[map(name = "SNAT_SCRATCH")]
pub static SNAT_SCRATCH: PerCpuArray<SnatScratch> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "REAL_SEEN")]
pub static REAL_SEEN: Array<RealSeen> = Array::with_max_entries(MAX_REALS, 0);
