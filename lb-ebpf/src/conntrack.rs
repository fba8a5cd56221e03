//! Connection tracking: client→VIP flows pinned to a real, and the reverse
//! entries that restore the VIP on replies. Both maps are shared LRU hashes,
//! because a reply may arrive on another NIC and CPU than its request.
use lb_common::{
    FlowKey, FwdEntry, Reason, RevEntry, RouteCache, FAMILY_V4, FWD_F_CLOSING, PROTO_TCP,
    REV_F_PASSTHROUGH,
};

use crate::{
    maps::{CT_FWD, CT_REV},
    stats,
};

/// How stale `last_seen_ns` may get before a packet refreshes it; bounds the
/// writes to the shared map to one per flow per second.
const REFRESH_NS: u64 = 1_000_000_000;

/// Builds an IPv4 TCP flow key (addresses and ports in network order).
#[inline(always)]
pub fn key_v4(src: u32, dst: u32, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: [src, 0, 0, 0],
        dst: [dst, 0, 0, 0],
        sport,
        dport,
        proto: PROTO_TCP,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// Looks up a tracked client→VIP flow; refreshes its timestamp when stale
/// and records a FIN/RST. Returns the entry as it was before this packet,
/// and where it lives (to cache a route in it).
#[inline(always)]
pub fn lookup_fwd(key: &FlowKey, now: u64, closing: bool) -> Option<(FwdEntry, *mut FwdEntry)> {
    let p = CT_FWD.get_ptr_mut(key)?;
    // SAFETY: the pointer is to a live map value; concurrent writers only
    // store whole u64/u32 fields, so a torn read can only mix fields of two
    // valid entries of the same flow.
    let e = unsafe { &mut *p };
    let before = *e;
    if now.wrapping_sub(e.last_seen_ns) > REFRESH_NS {
        e.last_seen_ns = now;
    }
    if closing && e.flags & FWD_F_CLOSING == 0 {
        e.flags |= FWD_F_CLOSING;
    }
    Some((before, p))
}

/// Records that a tracked flow is closing (FIN or RST from the backend).
#[inline(always)]
pub fn mark_closing(key: &FlowKey) {
    if let Some(p) = CT_FWD.get_ptr_mut(key) {
        // SAFETY: as in `lookup_fwd`.
        unsafe { (*p).flags |= FWD_F_CLOSING };
    }
}

/// Records a flow in both directions.
#[inline(always)]
pub fn track(fwd_key: &FlowKey, fwd: &FwdEntry, rev_key: &FlowKey, rev: &RevEntry) {
    if CT_FWD.insert(fwd_key, fwd, 0).is_err() || CT_REV.insert(rev_key, rev, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
}

/// Marks a backend→client flow as a direct connection whose replies pass
/// untranslated. Written only when missing, so steady traffic costs one lookup.
#[inline(always)]
pub fn track_passthrough(rev_key: &FlowKey) {
    if CT_REV.get_ptr(rev_key).is_some() {
        return;
    }
    // The source stays what it is; ids are "none". (Spelled out: an
    // all-zero value would be emitted as a memset, which BPF cannot call.)
    let e = RevEntry {
        vip: [rev_key.src[0], 0, 0, 0],
        vport: rev_key.sport,
        flags: REV_F_PASSTHROUGH,
        real: u32::MAX,
        listener: u32::MAX,
        _pad2: 0,
        route: RouteCache::NONE,
    };
    if CT_REV.insert(rev_key, &e, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
}

/// Looks up the reverse entry of a reply, and where it lives.
#[inline(always)]
pub fn lookup_rev(key: &FlowKey) -> Option<(RevEntry, *mut RevEntry)> {
    // SAFETY: copy of a live map value.
    CT_REV.get_ptr_mut(key).map(|p| (unsafe { *p }, p))
}
