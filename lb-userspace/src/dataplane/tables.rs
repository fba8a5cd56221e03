//! Writes the desired balancing state into the maps, in an order that keeps
//! every packet's view consistent: a real is set up before any table names
//! it, a table is complete before its listener switches to it (one hash-map
//! update), and a real stops serving only after no active table names it.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use lb_common::{
    v4_words, EndpointKey, Listener, ListenerKey, MaglevTable, Real, RealStats, RevEntry,
    RouteCache, VipKey, FAMILY_V4, LISTENER_F_DROP_NEW, MAGLEV_TABLE_SIZE, MAP_LISTENERS,
    MAP_MAGLEV, MAP_REALS, MAP_REAL_STATS, MAP_REV_FALLBACK, MAP_VIPS, MAX_REALS, REAL_F_DRAINING,
    REAL_F_SERVING, REV_F_AMBIGUOUS,
};

use super::Dataplane;
use crate::maglev;

/// One (listener, backend) pair as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealPlan {
    /// Real id: index into `REALS` and `REAL_STATS`.
    pub id: u32,
    /// Backend name: the Maglev key, so every listener with the same healthy
    /// set builds the same table, and two gateways agree.
    pub name: String,
    /// Backend address.
    pub addr: Ipv4Addr,
    /// Takes new flows (is in the table).
    pub serving: bool,
    /// Keeps its tracked flows but takes no new ones.
    pub draining: bool,
}

/// One listener as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerPlan {
    /// Listener id: index into `LISTENER_STATS`, owner of Maglev tables `2*id`, `2*id+1`.
    pub id: u32,
    /// VIP.
    pub vip: Ipv4Addr,
    /// VIP port.
    pub port: u16,
    /// Backend port.
    pub target_port: u16,
    /// Every real of the listener; the serving ones make up the table.
    pub reals: Vec<RealPlan>,
}

impl ListenerPlan {
    fn serving(&self) -> Vec<&RealPlan> {
        self.reals.iter().filter(|r| r.serving).collect()
    }
}

/// The whole desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Listeners, in id order.
    pub listeners: Vec<ListenerPlan>,
}

/// What the maps held when a daemon started on pinned maps.
#[derive(Clone, Debug, Default)]
pub struct MapState {
    /// Listener entries.
    pub listeners: Vec<(ListenerKey, Listener)>,
    /// Used real slots.
    pub reals: Vec<(u32, Real)>,
}

impl MapState {
    /// Reads the listener and real entries from (adopted) maps.
    pub fn read(dp: &Dataplane) -> Result<MapState> {
        let listeners: HashMap<&MapData, ListenerKey, Listener> =
            HashMap::try_from(dp.ebpf.map(MAP_LISTENERS).context("LISTENERS")?)?;
        let listeners = listeners.iter().collect::<Result<Vec<_>, _>>()?;
        let reals: Array<&MapData, Real> =
            Array::try_from(dp.ebpf.map(MAP_REALS).context("REALS")?)?;
        let mut used = Vec::new();
        for id in 0..MAX_REALS {
            let r = reals.get(&id, 0)?;
            if r.family != 0 {
                used.push((id, r));
            }
        }
        Ok(MapState {
            listeners,
            reals: used,
        })
    }
}

/// What the writer remembers of what it wrote.
#[derive(Default)]
pub struct Written {
    prev: Option<Plan>,
    /// Slot (0/1) of the table each listener id reads now.
    slots: BTreeMap<u32, u32>,
}

impl Written {
    /// A writer continuing from maps a previous daemon left: tables go into
    /// the slot packets are not reading, and entries the new plan lacks are removed.
    pub fn adopt(state: &MapState) -> Written {
        let slots = state
            .listeners
            .iter()
            .map(|(_, l)| (l.id, l.table.saturating_sub(l.id * 2).min(1)))
            .collect();
        let mut by_listener: BTreeMap<u32, ListenerPlan> = BTreeMap::new();
        for (k, l) in &state.listeners {
            by_listener.insert(
                l.id,
                ListenerPlan {
                    id: l.id,
                    vip: Ipv4Addr::from(k.addr[0].to_ne_bytes()),
                    port: u16::from_be(k.port),
                    target_port: u16::from_be(l.target_port),
                    reals: vec![],
                },
            );
        }
        for (id, r) in &state.reals {
            if let Some(l) = by_listener.get_mut(&r.listener) {
                l.reals.push(RealPlan {
                    id: *id,
                    name: String::new(),
                    addr: Ipv4Addr::from(r.addr[0].to_ne_bytes()),
                    // Unknown: forces every table to be rewritten once.
                    serving: false,
                    draining: false,
                });
            }
        }
        Written {
            prev: Some(Plan {
                listeners: by_listener.into_values().collect(),
            }),
            slots,
        }
    }

    /// Writes `plan`, touching only what changed since the last call (an
    /// unchanged plan writes nothing).
    pub fn apply(&mut self, dp: &mut Dataplane, plan: &Plan) -> Result<()> {
        if self.prev.as_ref() == Some(plan) {
            return Ok(());
        }
        let prev = self.prev.take().unwrap_or_default();
        let prev_by_id: BTreeMap<u32, &ListenerPlan> =
            prev.listeners.iter().map(|l| (l.id, l)).collect();
        write_lookup_maps(dp, &prev, plan)?;
        // A real id seen for the first time starts its counters at zero: an
        // id freed by a removed backend must not carry that backend's totals.
        let known: BTreeSet<u32> = prev
            .listeners
            .iter()
            .flat_map(|l| l.reals.iter().map(|r| r.id))
            .collect();
        for r in plan.listeners.iter().flat_map(|l| l.reals.iter()) {
            if !known.contains(&r.id) {
                reset_real_stats(dp, r.id)?;
            }
        }
        for l in &plan.listeners {
            let before = prev_by_id.get(&l.id).copied();
            if before == Some(l) {
                continue;
            }
            // 1. Reals that start serving or draining are complete before a
            //    table names them.
            write_reals(dp, l, |r| r.serving || r.draining)?;
            let serving_before: Option<Vec<u32>> =
                before.map(|b| b.serving().iter().map(|r| r.id).collect());
            let serving_now: Vec<u32> = l.serving().iter().map(|r| r.id).collect();
            let slot = match (
                self.slots.get(&l.id),
                serving_before == Some(serving_now.clone()),
            ) {
                (Some(s), true) => *s,
                // 2. A new table goes into the slot packets are not reading.
                (Some(s), false) => {
                    let s = s ^ 1;
                    write_table(dp, l, l.id * 2 + s)?;
                    s
                }
                (None, _) => {
                    write_table(dp, l, l.id * 2)?;
                    0
                }
            };
            // 3. The listener switches in one update.
            let key = ListenerKey::tcp_v4(l.vip.octets(), l.port);
            let value = Listener {
                id: l.id,
                table: l.id * 2 + slot,
                target_port: l.target_port.to_be(),
                flags: if serving_now.is_empty() {
                    LISTENER_F_DROP_NEW
                } else {
                    0
                },
                _pad: 0,
            };
            let mut listeners: HashMap<_, ListenerKey, Listener> =
                HashMap::try_from(dp.ebpf.map_mut(MAP_LISTENERS).context("LISTENERS")?)?;
            listeners.insert(key, value, 0)?;
            self.slots.insert(l.id, slot);
            // 4. Reals that stopped serving lose their flag last: their
            //    tracked flows are rescheduled (or kept, when draining).
            write_reals(dp, l, |_| true)?;
        }
        // 5. Listeners and reals the plan no longer has.
        let now_ids: BTreeSet<u32> = plan
            .listeners
            .iter()
            .flat_map(|l| l.reals.iter().map(|r| r.id))
            .collect();
        let now_listeners: BTreeSet<u32> = plan.listeners.iter().map(|l| l.id).collect();
        for l in &prev.listeners {
            if !now_listeners.contains(&l.id) {
                let mut listeners: HashMap<_, ListenerKey, Listener> =
                    HashMap::try_from(dp.ebpf.map_mut(MAP_LISTENERS).context("LISTENERS")?)?;
                let _ = listeners.remove(&ListenerKey::tcp_v4(l.vip.octets(), l.port));
                self.slots.remove(&l.id);
            }
            let mut reals: Array<&mut MapData, Real> =
                Array::try_from(dp.ebpf.map_mut(MAP_REALS).context("REALS")?)?;
            for r in l.reals.iter().filter(|r| !now_ids.contains(&r.id)) {
                reals.set(r.id, Real::default(), 0)?;
            }
        }
        self.prev = Some(plan.clone());
        Ok(())
    }
}

/// Zeroes every CPU's counters of real `id`.
fn reset_real_stats(dp: &mut Dataplane, id: u32) -> Result<()> {
    let mut stats: PerCpuArray<&mut MapData, RealStats> =
        PerCpuArray::try_from(dp.ebpf.map_mut(MAP_REAL_STATS).context("REAL_STATS")?)?;
    let zero = PerCpuValues::try_from(vec![RealStats::default(); nr_cpus()?])?;
    stats.set(id, zero, 0)?;
    Ok(())
}

fn nr_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| anyhow::anyhow!("counting possible CPUs: {e}"))
}

/// Writes the REALS entries of `l` selected by `which`.
fn write_reals(
    dp: &mut Dataplane,
    l: &ListenerPlan,
    which: impl Fn(&RealPlan) -> bool,
) -> Result<()> {
    let mut reals: Array<&mut MapData, Real> =
        Array::try_from(dp.ebpf.map_mut(MAP_REALS).context("REALS")?)?;
    for r in l.reals.iter().filter(|r| which(r)) {
        let mut flags = 0;
        if r.serving {
            flags |= REAL_F_SERVING;
        }
        if r.draining {
            flags |= REAL_F_DRAINING;
        }
        let value = Real {
            addr: v4_words(r.addr.octets()),
            port: l.target_port.to_be(),
            family: FAMILY_V4,
            flags,
            listener: l.id,
        };
        reals.set(r.id, value, 0)?;
    }
    Ok(())
}

fn write_table(dp: &mut Dataplane, l: &ListenerPlan, index: u32) -> Result<()> {
    let serving = l.serving();
    if serving.is_empty() {
        // Nothing to write: the listener is marked DROP_NEW instead.
        return Ok(());
    }
    let keys: Vec<&str> = serving.iter().map(|r| r.name.as_str()).collect();
    let owners = maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
        .context("building the Maglev table")?
        .context("no serving backend to build a Maglev table from")?;
    // Zeroed on the heap: the table is 256 KiB, too big to build on a stack.
    // SAFETY: MaglevTable is plain integers; all-zero is a valid value.
    let mut table: Box<MaglevTable> = unsafe { Box::new_zeroed().assume_init() };
    for (slot, owner) in table.slots.iter_mut().zip(owners.iter()) {
        *slot = serving[*owner as usize].id;
    }
    let mut tables: Array<&mut MapData, MaglevTable> =
        Array::try_from(dp.ebpf.map_mut(MAP_MAGLEV).context("MAGLEV")?)?;
    tables.set(index, table.as_ref(), 0)?;
    Ok(())
}

/// VIPS and REV_FALLBACK: derived from the listeners and their reals.
fn write_lookup_maps(dp: &mut Dataplane, prev: &Plan, plan: &Plan) -> Result<()> {
    let vips_of = |p: &Plan| -> BTreeSet<Ipv4Addr> { p.listeners.iter().map(|l| l.vip).collect() };
    let mut vips: HashMap<_, VipKey, u32> =
        HashMap::try_from(dp.ebpf.map_mut(MAP_VIPS).context("VIPS")?)?;
    let (old, new) = (vips_of(prev), vips_of(plan));
    for v in &new {
        vips.insert(
            VipKey {
                addr: v4_words(v.octets()),
            },
            1,
            0,
        )?;
    }
    for v in old.difference(&new) {
        let _ = vips.remove(&VipKey {
            addr: v4_words(v.octets()),
        });
    }

    let (old, new) = (fallback_entries(prev), fallback_entries(plan));
    let mut fallback: HashMap<_, EndpointKey, RevEntry> =
        HashMap::try_from(dp.ebpf.map_mut(MAP_REV_FALLBACK).context("REV_FALLBACK")?)?;
    for (key, value) in &new {
        fallback.insert(key, value, 0)?;
    }
    for key in old.keys().filter(|k| !new.contains_key(k)) {
        let _ = fallback.remove(key);
    }
    Ok(())
}

/// A backend endpoint that serves exactly one VIP:port can have its
/// untracked replies translated (a restarted or second gateway carries
/// existing flows); one serving several is written with `REV_F_AMBIGUOUS`.
fn fallback_entries(plan: &Plan) -> BTreeMap<EndpointKey, RevEntry> {
    // Backend endpoint -> the (VIP, VIP port, listener id, real id) it serves.
    type Served = BTreeSet<(Ipv4Addr, u16, u32, u32)>;
    let mut owners: BTreeMap<(Ipv4Addr, u16), Served> = BTreeMap::new();
    for l in &plan.listeners {
        for r in &l.reals {
            owners
                .entry((r.addr, l.target_port))
                .or_default()
                .insert((l.vip, l.port, l.id, r.id));
        }
    }
    let mut out = BTreeMap::new();
    for ((addr, port), set) in owners {
        let vips: BTreeSet<(Ipv4Addr, u16)> = set.iter().map(|(v, p, _, _)| (*v, *p)).collect();
        // An endpoint serving several VIP:ports is still written, marked
        // ambiguous: the data path drops (and counts) its untracked replies
        // instead of leaking them with the node's address.
        let flags = if vips.len() == 1 { 0 } else { REV_F_AMBIGUOUS };
        let (vip, vport, lid, rid) = *set.iter().next().expect("non-empty");
        out.insert(
            EndpointKey::tcp_v4(u32::from_ne_bytes(addr.octets()), port.to_be()),
            RevEntry {
                vip: v4_words(vip.octets()),
                vport: vport.to_be(),
                flags,
                real: rid,
                listener: lid,
                route: RouteCache::NONE,
                ..RevEntry::default()
            },
        );
    }
    out
}
