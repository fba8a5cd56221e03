//! Reads the per-CPU counters and sums them. Reading costs the data path
//! nothing: the program never waits for userspace.
//!
//! Every value comes straight from the maps: per-CPU counters are summed
//! across CPUs and never computed as deltas from the daemon's start, so they
//! only go up, also across a restart that adopts pinned maps.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::maps::MapError;
use lb_common::{Reason, MAP_REALS, REAL_F_DRAINING, REAL_F_KEEPS_FLOWS, REAL_F_SERVING};
use serde::Serialize;

pub use super::clock::monotonic_ns;
use super::maps::Maps;

/// Summed counters of one real.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RealCounters {
    /// Packets client → backend.
    pub fwd_packets: u64,
    /// Bytes client → backend.
    pub fwd_bytes: u64,
    /// Packets backend → client.
    pub rev_packets: u64,
    /// Bytes backend → client.
    pub rev_bytes: u64,
    /// Flows assigned.
    pub new_flows: u64,
}

/// Summed counters of one listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenerCounters {
    /// Flows assigned a backend.
    pub new_flows: u64,
    /// Packets dropped for want of a backend.
    pub rejected: u64,
    /// Tracked flows moved off a backend that is gone or proven dead.
    pub rescheduled: u64,
}

/// Global counters by name ([`Reason::name`]).
pub fn global(maps: &impl AsRef<Maps>) -> Result<BTreeMap<&'static str, u64>> {
    let mut out = BTreeMap::new();
    for r in Reason::ALL {
        let v = maps
            .as_ref()
            .stats
            .get(&(r as u32), 0)
            .context("reading STATS")?;
        out.insert(r.name(), v.iter().sum());
    }
    Ok(out)
}

/// Counters of real `id`.
pub fn real(maps: &impl AsRef<Maps>, id: u32) -> Result<RealCounters> {
    let mut c = RealCounters::default();
    let values = maps
        .as_ref()
        .real_stats
        .get(&id, 0)
        .context("reading REAL_STATS")?;
    for s in values.iter() {
        c.fwd_packets += s.fwd_packets;
        c.fwd_bytes += s.fwd_bytes;
        c.rev_packets += s.rev_packets;
        c.rev_bytes += s.rev_bytes;
        c.new_flows += s.new_flows;
    }
    Ok(c)
}

/// Counters of listener `id`.
pub fn listener(maps: &impl AsRef<Maps>, id: u32) -> Result<ListenerCounters> {
    let mut c = ListenerCounters::default();
    let values = maps
        .as_ref()
        .listener_stats
        .get(&id, 0)
        .context("reading LISTENER_STATS")?;
    for s in values.iter() {
        c.new_flows += s.new_flows;
        c.rejected += s.rejected;
        c.rescheduled += s.rescheduled;
    }
    Ok(c)
}

/// Why reading the maps failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The object has no map of that name (or of another type).
    #[error("map {0} missing from the XDP object")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("reading map {map}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What the kernel said.
        #[source]
        source: MapError,
    },
    /// Duplicating a map's file descriptor failed.
    #[error("duplicating the descriptor of map {map}")]
    Dup {
        /// Map name.
        map: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Reading the per-CPU counters failed.
    #[error(transparent)]
    Counters(#[from] anyhow::Error),
}

/// One real's counters and data-path flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealSample {
    /// Summed per-CPU counters.
    pub counters: RealCounters,
    /// Takes new flows (`REAL_F_SERVING`).
    pub serving: bool,
    /// Keeps its flows but takes no new ones (`REAL_F_DRAINING`).
    pub draining: bool,
    /// Not gone or proven dead: keeps its flows and its mid-flow table
    /// slots even while down (`REAL_F_KEEPS_FLOWS`).
    pub keeps_flows: bool,
    /// The data path's evidence of life (`REAL_SEEN`).
    pub seen: lb_common::RealSeen,
}

/// The counters of one scrape, read under the daemon's lock (a few
/// per-CPU lookups per listener and real).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Global counters, in [`Reason::ALL`] order.
    pub global: Vec<(Reason, u64)>,
    /// Per listener id.
    pub listeners: BTreeMap<u32, ListenerCounters>,
    /// Per real id.
    pub reals: BTreeMap<u32, RealSample>,
    /// The data path's clock (CLOCK_MONOTONIC, ns) when read.
    pub now_ns: u64,
}

impl Counters {
    /// Reads the global counters, those of `listeners` and those (and the
    /// flags) of `reals` (ids).
    pub fn read(
        maps: &Maps,
        listeners: impl IntoIterator<Item = u32>,
        reals: impl IntoIterator<Item = u32>,
    ) -> Result<Counters, KernelError> {
        let (listener_ids, real_ids) = (listeners, reals);
        let by_name = global(maps)?;
        let global = Reason::ALL
            .iter()
            .map(|r| (*r, by_name.get(r.name()).copied().unwrap_or(0)))
            .collect();
        let mut listeners = BTreeMap::new();
        for id in listener_ids {
            listeners.insert(id, listener(maps, id)?);
        }
        let reals_map = &maps.reals;
        let mut reals = BTreeMap::new();
        for id in real_ids {
            let flags = reals_map
                .get(&id, 0)
                .map_err(|source| KernelError::Map {
                    map: MAP_REALS,
                    source,
                })?
                .flags;
            reals.insert(
                id,
                RealSample {
                    counters: real(maps, id)?,
                    serving: flags & REAL_F_SERVING != 0,
                    draining: flags & REAL_F_DRAINING != 0,
                    keeps_flows: flags & REAL_F_KEEPS_FLOWS != 0,
                    seen: maps.real_seen.get(&id, 0).unwrap_or_default(),
                },
            );
        }
        Ok(Counters {
            global,
            listeners,
            reals,
            now_ns: monotonic_ns(),
        })
    }
}
