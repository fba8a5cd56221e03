//! Writes the desired balancing state into the maps, in an order that keeps
//! every packet's view consistent: a real is set up before any table names
//! it, a table is complete before its listener switches to it (one hash-map
//! update), and a real stops serving only after no active table names it.
//!
//! Each listener has two tables, each double-buffered:
//!
//! - the **healthy table** ([`Listener::table`]), over the reals that take
//!   new flows (`serving`): SYNs and rescheduled flows use it;
//! - the **mid-flow table** ([`Listener::midflow_table`]), over the reals
//!   that keep flows (`keeps_flows`: not gone, not proven dead), whatever
//!   their health: mid-flow packets of flows this gateway does not track
//!   use it. Maglev depends only on the set of names, so two gateways with
//!   the same configuration build the same mid-flow table, and it equals
//!   the healthy table a gateway built while every node was up: after a
//!   takeover, the survivor sends a stream to the node the old master
//!   picked even when its own checks to that node fail.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context, Result};
use lb_common::{
    ip_family, ip_from_words, ip_words, EndpointKey, Listener, ListenerKey, MaglevTable, Real,
    RevEntry, RouteCache, VipKey, LISTENER_F_DROP_NEW, LISTENER_F_FULLNAT, LISTENER_F_ONE_SERVING,
    MAGLEV_TABLE_SIZE, MAX_REALS, NO_TABLE, REAL_F_DRAINING, REAL_F_KEEPS_FLOWS, REAL_F_SERVING,
    REV_F_AMBIGUOUS,
};

use super::maps::TableMaps;
pub use super::plan::{ListenerPlan, MapState, Plan, RealPlan};
use super::snat::{self, SnatMaps, SnatPlan};
use super::Dataplane;
use crate::maglev;

/// Which of a listener's two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// New flows: the serving reals.
    Healthy,
    /// Mid-flow packets of untracked flows: the reals that keep flows.
    MidFlow,
}

impl Kind {
    /// Index into `MAGLEV` of buffer `slot` (0/1) of this table of listener `id`.
    fn index(self, id: u32, slot: u32) -> u32 {
        let base = match self {
            Kind::Healthy => 0,
            Kind::MidFlow => 2,
        };
        id * 4 + base + slot
    }

    /// The reals this table is built over.
    fn reals(self, l: &ListenerPlan) -> Vec<&RealPlan> {
        match self {
            Kind::Healthy => l.serving(),
            Kind::MidFlow => l.keeping(),
        }
    }
}

impl MapState {
    /// Reads the listener and real entries from (adopted) maps.
    pub fn read(dp: &Dataplane) -> Result<MapState> {
        let listeners = dp
            .maps
            .listeners
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .context("reading LISTENERS")?;
        let mut used = Vec::new();
        for id in 0..MAX_REALS {
            let r = dp.maps.reals.get(&id, 0).context("reading REALS")?;
            if r.family != 0 {
                used.push((id, r));
            }
        }
        Ok(MapState {
            listeners,
            reals: used,
            snat_addrs: snat::read_addrs(&dp.maps).context("reading SNAT_ADDRS")?,
        })
    }
}

/// What the writer remembers of what it wrote.
///
/// A failed write leaves the maps somewhere between the last plan and the
/// one being written. The writer then keeps its record of the last complete
/// plan, remembers everything that may now be in the maps (so entries no
/// plan names are still removed later), never zeroes a counter twice for the
/// same owner, and rewrites every listener at the next call.
#[derive(Default)]
pub struct Written {
    /// The last plan written completely.
    prev: Option<Plan>,
    /// A write failed after `prev`: the next call rewrites everything.
    dirty: bool,
    /// Slot (0/1) of the healthy table each listener id reads now.
    slots: BTreeMap<u32, u32>,
    /// Slot (0/1) of the mid-flow table each listener id reads now.
    midflow_slots: BTreeMap<u32, u32>,
    /// `LISTENERS` entries that may be in the map, with their listener id.
    listeners_present: BTreeMap<ListenerKey, u32>,
    /// `REALS` slots that may be in use.
    reals_present: BTreeSet<u32>,
    /// Real ids whose counters belong to their current owner (zeroed when
    /// the id was first given to it, or adopted).
    counted: BTreeSet<u32>,
    /// VIPs that may be in `VIPS`.
    vips_present: BTreeSet<IpAddr>,
    /// `REV_FALLBACK` keys that may be in the map.
    fallback_present: BTreeSet<EndpointKey>,
    /// Addresses that may be in `SNAT_ADDRS`.
    snat_addrs_present: BTreeSet<IpAddr>,
}

impl Written {
    /// A writer continuing from maps a previous daemon left: tables go into
    /// the slot packets are not reading, and entries the new plan lacks are removed.
    pub fn adopt(state: &MapState) -> Written {
        let slots = state
            .listeners
            .iter()
            .map(|(_, l)| (l.id, l.table.saturating_sub(l.id * 4).min(1)))
            .collect();
        let midflow_slots = state
            .listeners
            .iter()
            .filter(|(_, l)| l.midflow_table != NO_TABLE)
            .map(|(_, l)| (l.id, l.midflow_table.saturating_sub(l.id * 4 + 2).min(1)))
            .collect();
        let mut by_listener: BTreeMap<u32, ListenerPlan> = BTreeMap::new();
        for (k, l) in &state.listeners {
            // A key of a family this daemon does not know is still removed
            // (listeners_present), but has no plan to continue from.
            let Some(vip) = k.ip() else { continue };
            by_listener.insert(
                l.id,
                ListenerPlan {
                    id: l.id,
                    vip,
                    port: u16::from_be(k.port),
                    target_port: u16::from_be(l.target_port),
                    fullnat: l.flags & LISTENER_F_FULLNAT != 0,
                    reals: vec![],
                },
            );
        }
        for (id, r) in &state.reals {
            let (Some(l), Some(addr)) = (
                by_listener.get_mut(&r.listener),
                ip_from_words(r.family, r.addr),
            ) else {
                continue;
            };
            l.reals.push(RealPlan {
                id: *id,
                name: String::new(),
                addr,
                port: u16::from_be(r.port),
                fullnat: false,
                // Unknown: forces every table to be rewritten once.
                serving: false,
                draining: false,
                keeps_flows: false,
            });
        }
        let prev = Plan {
            listeners: by_listener.into_values().collect(),
            // Unknown: forces the source-NAT maps to be written once.
            snat: SnatPlan {
                retiring: state.snat_addrs.iter().copied().collect(),
                ..SnatPlan::default()
            },
        };
        Written {
            listeners_present: state.listeners.iter().map(|(k, l)| (*k, l.id)).collect(),
            reals_present: state.reals.iter().map(|(id, _)| *id).collect(),
            counted: state.reals.iter().map(|(id, _)| *id).collect(),
            vips_present: prev.listeners.iter().map(|l| l.vip).collect(),
            fallback_present: fallback_entries(&prev).into_keys().collect(),
            snat_addrs_present: state.snat_addrs.iter().copied().collect(),
            prev: Some(prev),
            dirty: false,
            slots,
            midflow_slots,
        }
    }

    /// Writes `plan` into the loaded program's maps (see [`Written::apply_to`]).
    pub fn apply(&mut self, dp: &mut Dataplane, plan: &Plan) -> Result<()> {
        self.apply_to(&mut dp.maps, plan)
    }

    /// Writes `plan`, touching only what changed since the last complete
    /// write (an unchanged plan writes nothing). On error the maps may hold
    /// part of `plan`; calling again (with this plan or another) completes
    /// the maps to that plan.
    pub fn apply_to(&mut self, maps: &mut (impl TableMaps + SnatMaps), plan: &Plan) -> Result<()> {
        if !self.dirty && self.prev.as_ref() == Some(plan) {
            return Ok(());
        }
        let result = self.write(maps, plan);
        match &result {
            Ok(()) => {
                self.prev = Some(plan.clone());
                self.dirty = false;
            }
            Err(_) => self.dirty = true,
        }
        result
    }

    /// The last plan written completely (what the maps hold, unless
    /// [`Written::is_dirty`]).
    pub fn current(&self) -> Option<&Plan> {
        self.prev.as_ref()
    }

    /// True when the last write failed (the maps may hold a mix of plans).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    fn write(&mut self, maps: &mut (impl TableMaps + SnatMaps), plan: &Plan) -> Result<()> {
        let prev = self.prev.clone();
        // 0. Source-NAT addresses and configuration before any listener
        //    switches to full-NAT (see `snat`).
        if self.dirty || prev.as_ref().map(|p| &p.snat) != Some(&plan.snat) {
            snat::write_config(maps, &plan.snat, &mut self.snat_addrs_present)?;
        }
        let prev_by_id: BTreeMap<u32, &ListenerPlan> = match (&prev, self.dirty) {
            (Some(p), false) => p.listeners.iter().map(|l| (l.id, l)).collect(),
            // After a failed write nothing is known to be in place.
            _ => BTreeMap::new(),
        };
        self.write_lookup_maps(maps, plan)?;
        // A real id seen for the first time starts its counters at zero: an
        // id freed by a removed backend must not carry that backend's totals.
        // Zeroed once per owner: a retried write never resets them again.
        for r in plan.listeners.iter().flat_map(|l| l.reals.iter()) {
            if !self.counted.contains(&r.id) {
                maps.reset_real_stats(r.id)?;
                self.counted.insert(r.id);
            }
        }
        for l in &plan.listeners {
            let before = prev_by_id.get(&l.id).copied();
            if before == Some(l) {
                continue;
            }
            // 1. Reals that start serving, draining or keeping flows are
            //    complete before a table names them.
            self.write_reals(maps, l, |r| r.serving || r.draining || r.keeps_flows)?;
            // 2. A new table goes into the slot packets are not reading.
            let slot = write_if_changed(maps, Kind::Healthy, self.slots.get(&l.id), before, l)?;
            let midflow_slot = write_if_changed(
                maps,
                Kind::MidFlow,
                self.midflow_slots.get(&l.id),
                before,
                l,
            )?;
            // 3. The listener switches in one update.
            let key = ListenerKey::tcp(l.vip, l.port);
            let mut flags = if l.serving().is_empty() {
                LISTENER_F_DROP_NEW
            } else {
                0
            };
            if l.fullnat {
                flags |= LISTENER_F_FULLNAT;
            }
            // A refused SYN goes to the client when no other node could
            // take its retry (see `lb_common::evidence`).
            if l.serving().len() <= 1 {
                flags |= LISTENER_F_ONE_SERVING;
            }
            let value = Listener {
                id: l.id,
                table: Kind::Healthy.index(l.id, slot),
                target_port: l.target_port.to_be(),
                flags,
                midflow_table: if l.keeping().is_empty() {
                    NO_TABLE
                } else {
                    Kind::MidFlow.index(l.id, midflow_slot)
                },
            };
            self.listeners_present.insert(key, l.id);
            maps.set_listener(key, value)?;
            self.slots.insert(l.id, slot);
            self.midflow_slots.insert(l.id, midflow_slot);
            // 4. Reals that stopped serving lose their flag last: their
            //    tracked flows are rescheduled (or kept, when draining).
            self.write_reals(maps, l, |_| true)?;
        }
        // 5. Listeners and reals the plan no longer has. A key the plan
        //    still uses (under whatever id) is never removed.
        let keys_now: BTreeSet<ListenerKey> = plan
            .listeners
            .iter()
            .map(|l| ListenerKey::tcp(l.vip, l.port))
            .collect();
        let ids_now: BTreeSet<u32> = plan.listeners.iter().map(|l| l.id).collect();
        let stale: Vec<(ListenerKey, u32)> = self
            .listeners_present
            .iter()
            .filter(|(k, _)| !keys_now.contains(k))
            .map(|(k, id)| (*k, *id))
            .collect();
        for (key, id) in stale {
            maps.remove_listener(&key)?;
            self.listeners_present.remove(&key);
            if !ids_now.contains(&id) {
                self.slots.remove(&id);
                self.midflow_slots.remove(&id);
            }
        }
        let reals_now: BTreeSet<u32> = plan
            .listeners
            .iter()
            .flat_map(|l| l.reals.iter().map(|r| r.id))
            .collect();
        let stale: Vec<u32> = self.reals_present.difference(&reals_now).copied().collect();
        for id in stale {
            maps.set_real(id, Real::default())?;
            self.reals_present.remove(&id);
            self.counted.remove(&id);
        }
        // 6. Source-NAT addresses no configuration names and no flow needs.
        snat::remove_stale(maps, &plan.snat, &mut self.snat_addrs_present)?;
        Ok(())
    }

    /// Writes the REALS entries of `l` selected by `which`.
    fn write_reals(
        &mut self,
        maps: &mut impl TableMaps,
        l: &ListenerPlan,
        which: impl Fn(&RealPlan) -> bool,
    ) -> Result<()> {
        for r in l.reals.iter().filter(|r| which(r)) {
            let mut flags = 0;
            if r.serving {
                flags |= REAL_F_SERVING;
            }
            if r.draining {
                flags |= REAL_F_DRAINING;
            }
            if r.keeps_flows {
                flags |= REAL_F_KEEPS_FLOWS;
            }
            let value = Real {
                addr: ip_words(r.addr),
                port: r.port.to_be(),
                family: ip_family(r.addr),
                flags,
                listener: l.id,
            };
            self.reals_present.insert(r.id);
            maps.set_real(r.id, value)?;
        }
        Ok(())
    }

    /// VIPS and REV_FALLBACK: derived from the listeners and their reals.
    fn write_lookup_maps(&mut self, maps: &mut impl TableMaps, plan: &Plan) -> Result<()> {
        let new: BTreeSet<IpAddr> = plan.listeners.iter().map(|l| l.vip).collect();
        for v in &new {
            self.vips_present.insert(*v);
            maps.set_vip(VipKey::of(*v))?;
        }
        let stale: Vec<IpAddr> = self.vips_present.difference(&new).copied().collect();
        for v in stale {
            maps.remove_vip(&VipKey::of(v))?;
            self.vips_present.remove(&v);
        }
        let new = fallback_entries(plan);
        for (key, value) in &new {
            self.fallback_present.insert(*key);
            maps.set_fallback(*key, *value)?;
        }
        let stale: Vec<EndpointKey> = self
            .fallback_present
            .iter()
            .filter(|k| !new.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            maps.remove_fallback(&key)?;
            self.fallback_present.remove(&key);
        }
        Ok(())
    }
}

/// Writes table `kind` of `l` into the slot packets are not reading when
/// its set of reals changed since `before` (or nothing is known); returns
/// the slot the listener should read.
fn write_if_changed(
    maps: &mut impl TableMaps,
    kind: Kind,
    current: Option<&u32>,
    before: Option<&ListenerPlan>,
    l: &ListenerPlan,
) -> Result<u32> {
    let ids = |p: &ListenerPlan| -> Vec<u32> { kind.reals(p).iter().map(|r| r.id).collect() };
    let unchanged = before.map(ids) == Some(ids(l));
    match (current, unchanged) {
        (Some(s), true) => Ok(*s),
        (Some(s), false) => {
            let s = s ^ 1;
            write_table(maps, &kind.reals(l), kind.index(l.id, s))?;
            Ok(s)
        }
        (None, _) => {
            write_table(maps, &kind.reals(l), kind.index(l.id, 0))?;
            Ok(0)
        }
    }
}

/// Builds the Maglev table over `reals` (keyed by name) into `MAGLEV[index]`.
fn write_table(maps: &mut impl TableMaps, reals: &[&RealPlan], index: u32) -> Result<()> {
    if reals.is_empty() {
        // Nothing to write: the listener is marked DROP_NEW (or NO_TABLE) instead.
        return Ok(());
    }
    let keys: Vec<&str> = reals.iter().map(|r| r.name.as_str()).collect();
    let owners = maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
        .context("building the Maglev table")?
        .context("no serving backend to build a Maglev table from")?;
    // Zeroed on the heap: the table is 256 KiB, too big to build on a stack.
    // SAFETY: MaglevTable is plain integers; all-zero is a valid value.
    let mut table: Box<MaglevTable> = unsafe { Box::new_zeroed().assume_init() };
    for (slot, owner) in table.slots.iter_mut().zip(owners.iter()) {
        *slot = reals[*owner as usize].id;
    }
    maps.set_table(index, table.as_ref())?;
    Ok(())
}

/// A backend endpoint that serves exactly one VIP:port can have its
/// untracked replies translated (a restarted or second gateway carries
/// existing flows); one serving several is written with `REV_F_AMBIGUOUS`.
fn fallback_entries(plan: &Plan) -> BTreeMap<EndpointKey, RevEntry> {
    // Backend endpoint -> the (VIP, VIP port, listener id, real id) it serves.
    type Served = BTreeSet<(IpAddr, u16, u32, u32)>;
    let mut owners: BTreeMap<(IpAddr, u16), Served> = BTreeMap::new();
    for l in &plan.listeners {
        // Replies of full-NAT flows go to a source-NAT address: an
        // untracked one cannot be translated from the endpoint alone.
        for r in l.reals.iter().filter(|r| !r.fullnat) {
            owners
                .entry((r.addr, r.port))
                .or_default()
                .insert((l.vip, l.port, l.id, r.id));
        }
    }
    let mut out = BTreeMap::new();
    for ((addr, port), set) in owners {
        let vips: BTreeSet<(IpAddr, u16)> = set.iter().map(|(v, p, _, _)| (*v, *p)).collect();
        // An endpoint serving several VIP:ports is still written, marked
        // ambiguous: the data path drops (and counts) its untracked replies
        // instead of leaking them with the node's address.
        let flags = if vips.len() == 1 { 0 } else { REV_F_AMBIGUOUS };
        let (vip, vport, lid, rid) = *set.iter().next().expect("non-empty");
        out.insert(
            EndpointKey::tcp(addr, port),
            RevEntry {
                vip: ip_words(vip),
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
