//! Reads the per-CPU counters and sums them. Reading costs the data path
//! nothing: the program never waits for userspace.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use lb_common::{Reason, FWD_F_CLOSING};
use serde::Serialize;

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

/// A tracked flow counts as active while neither side has sent FIN or RST
/// and a packet was seen within this window.
pub const FLOW_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Active tracked flows per real id (see [`FLOW_IDLE`]). Walks the
/// conntrack map: cost grows with the number of tracked flows, so call it
/// on demand (status, drain), not per packet or on a timer.
pub fn tracked_flows(maps: &impl AsRef<Maps>) -> Result<BTreeMap<u32, u64>> {
    let ct = &maps.as_ref().ct_fwd;
    let now = monotonic_ns();
    let idle = FLOW_IDLE.as_nanos() as u64;
    let mut out = BTreeMap::new();
    for entry in ct.iter() {
        // Entries can vanish (LRU) between listing keys and reading values.
        let Ok((_, e)) = entry else { continue };
        if e.flags & FWD_F_CLOSING == 0 && now.saturating_sub(e.last_seen_ns) < idle {
            *out.entry(e.real).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_coarse_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
