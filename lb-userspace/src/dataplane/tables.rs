//! Writes the desired balancing state into the maps, in an order that keeps
//! every packet's view consistent: a real is set up before any table names
//! it, a table is complete before its listener switches to it (one hash-map
//! update), and a real stops serving only after no active table names it.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use lb_common::{
    v4_words, EndpointKey, Listener, ListenerKey, MaglevTable, Real, RevEntry, VipKey, FAMILY_V4,
    LISTENER_F_DROP_NEW, MAGLEV_TABLE_SIZE, MAP_LISTENERS, MAP_MAGLEV, MAP_REALS, MAP_REV_FALLBACK,
    MAP_VIPS, REAL_F_SERVING,
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
    /// Whether it takes new flows (is in the table).
    pub serving: bool,
}

/// One listener as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerPlan {
    /// Listener id: index into `LISTENER_STATS`, and owner of Maglev tables `2*id`, `2*id+1`.
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

/// What the writer remembers of what it wrote.
#[derive(Default)]
pub struct Written {
    /// Active table slot (0/1) and serving set per listener id.
    active: BTreeMap<u32, (u32, Vec<u32>)>,
}

impl Written {
    /// Writes `plan`, touching only what changed since the last call.
    pub fn apply(&mut self, dp: &mut Dataplane, plan: &Plan) -> Result<()> {
        write_static(dp, plan)?;
        for l in &plan.listeners {
            let serving: Vec<u32> = l.serving().iter().map(|r| r.id).collect();
            let prev = self.active.get(&l.id).cloned();
            if prev.as_ref().map(|(_, s)| s) == Some(&serving) {
                continue;
            }
            // 1. Reals that start serving are complete before a table names them.
            write_reals(dp, l, |r| r.serving)?;
            // 2. Build the new table into the slot packets are not reading.
            let slot = match prev {
                Some((s, _)) => s ^ 1,
                None => 0,
            };
            let table_index = l.id * 2 + slot;
            let drop_new = serving.is_empty();
            if !drop_new {
                write_table(dp, l, table_index)?;
            }
            // 3. Switch the listener in one update.
            let key = ListenerKey::tcp_v4(l.vip.octets(), l.port);
            let value = Listener {
                id: l.id,
                table: table_index,
                target_port: l.target_port.to_be(),
                flags: if drop_new { LISTENER_F_DROP_NEW } else { 0 },
                _pad: 0,
            };
            let mut listeners: HashMap<_, ListenerKey, Listener> =
                HashMap::try_from(dp.ebpf.map_mut(MAP_LISTENERS).context("LISTENERS")?)?;
            listeners.insert(key, value, 0)?;
            // 4. Reals that stopped serving lose their flag last: their
            //    tracked flows are rescheduled from now on.
            write_reals(dp, l, |_| true)?;
            self.active.insert(l.id, (slot, serving));
        }
        Ok(())
    }
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
        let value = Real {
            addr: v4_words(r.addr.octets()),
            port: l.target_port.to_be(),
            family: FAMILY_V4,
            flags: if r.serving { REAL_F_SERVING } else { 0 },
        };
        reals.set(r.id, value, 0)?;
    }
    Ok(())
}

fn write_table(dp: &mut Dataplane, l: &ListenerPlan, index: u32) -> Result<()> {
    let serving = l.serving();
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

/// VIPS and REV_FALLBACK depend only on the configuration.
fn write_static(dp: &mut Dataplane, plan: &Plan) -> Result<()> {
    let mut vips: HashMap<_, VipKey, u32> =
        HashMap::try_from(dp.ebpf.map_mut(MAP_VIPS).context("VIPS")?)?;
    for l in &plan.listeners {
        vips.insert(
            VipKey {
                addr: v4_words(l.vip.octets()),
            },
            1,
            0,
        )?;
    }
    // A backend endpoint that serves exactly one VIP:port can have its
    // untracked replies translated (a restarted or second gateway carries
    // existing flows); one serving several is ambiguous and left alone.
    let mut owners: BTreeMap<(Ipv4Addr, u16), BTreeSet<(u32, u32)>> = BTreeMap::new();
    for l in &plan.listeners {
        for r in &l.reals {
            owners
                .entry((r.addr, l.target_port))
                .or_default()
                .insert((l.id, r.id));
        }
    }
    let by_id: BTreeMap<u32, &ListenerPlan> = plan.listeners.iter().map(|l| (l.id, l)).collect();
    let mut fallback: HashMap<_, EndpointKey, RevEntry> =
        HashMap::try_from(dp.ebpf.map_mut(MAP_REV_FALLBACK).context("REV_FALLBACK")?)?;
    for ((addr, port), set) in owners {
        let key = EndpointKey::tcp_v4(u32::from_ne_bytes(addr.octets()), port.to_be());
        let distinct_vips: BTreeSet<(Ipv4Addr, u16)> = set
            .iter()
            .map(|(lid, _)| (by_id[lid].vip, by_id[lid].port))
            .collect();
        if distinct_vips.len() == 1 {
            let (lid, rid) = *set.iter().next().expect("non-empty");
            let l = by_id[&lid];
            fallback.insert(
                key,
                RevEntry {
                    vip: v4_words(l.vip.octets()),
                    vport: l.port.to_be(),
                    flags: 0,
                    real: rid,
                    listener: lid,
                    _pad2: 0,
                },
                0,
            )?;
        } else {
            let _ = fallback.remove(&key);
        }
    }
    Ok(())
}
