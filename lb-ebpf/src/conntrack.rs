//! Connection tracking in two tiers.
//!
//! **Established** (`CT_FWD`/`CT_REV`, `conntrack_capacity` entries each):
//! flows that proved they are real connections. **Embryonic** (`CT_EMB_REV`,
//! [`lb_common::EMBRYONIC_CAPACITY`] entries): everything else the gateway
//! must remember for a round trip, one entry per flow, keyed by the reply
//! direction (what the backend's answer is translated with). The client's
//! packets of an embryonic flow find its real by Maglev, which gives the
//! same one while the set of serving reals is stable, and then the entry
//! under that real's key: a new flow costs one insert, not two (a map
//! insert is most of a SYN's cost).
//!
//! Why two tiers: with one LRU table, every SYN inserted an entry, so a SYN
//! flood (spoofed sources never complete the handshake) pushed idle
//! established flows out, and their next reply left untranslated. Now only
//! proof moves a flow into the established tables, and a flood churns the
//! embryonic one alone:
//!
//! - a client SYN creates the embryonic entry (so the backend's SYN-ACK is
//!   translated); the SYN-ACK records the backend's ISN;
//!   the client's ACK acknowledging exactly that ISN + 1 promotes the flow.
//!   A spoofed source never sees the SYN-ACK, so it cannot promote.
//! - a mid-flow packet of a flow the gateway does not know (after a restart
//!   or an HA takeover) is forwarded by Maglev and creates an embryonic entry
//!   marked mid-flow; the backend answering with anything but a RST proves
//!   it holds the connection, and promotes it. A flood of bare ACKs draws
//!   RSTs from the backends and promotes nothing.
//!
//! Both tiers are shared (not per-CPU) LRU hashes: a reply may arrive on
//! another NIC and CPU than its request. They keep the kernel's common LRU
//! list: `BPF_F_NO_COMMON_LRU` (per-CPU LRU lists) made a SYN 1.45× slower
//! in the micro-benchmark (every insert then rotates the CPU's list), and it
//! would divide the capacity among CPUs for eviction.
use lb_common::{
    tcp, FlowKey, FwdEntry, Reason, RevEntry, RouteCache, FWD_F_CLOSING, FWD_F_FULLNAT,
    REV_F_FULLNAT, REV_F_MIDFLOW, REV_F_PASSTHROUGH, REV_F_SYNACK,
};

use crate::{
    maps::{CT_EMB_REV, CT_FWD, CT_REV},
    parse::TcpPacket,
    stats,
};

/// `BPF_NOEXIST`: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// How stale `last_seen_ns` may get before a packet refreshes it; bounds the
/// writes to the shared map to one per flow per second.
const REFRESH_NS: u64 = 1_000_000_000;

/// The established client→VIP entry of `key`.
#[inline(always)]
pub fn established_fwd(key: &FlowKey) -> Option<*mut FwdEntry> {
    CT_FWD.get_ptr_mut(key)
}

/// The established reply entry of `key`.
#[inline(always)]
pub fn established_rev(key: &FlowKey) -> Option<*mut RevEntry> {
    CT_REV.get_ptr_mut(key)
}

/// The embryonic reply entry of `key`.
#[inline(always)]
pub fn embryonic_rev(key: &FlowKey) -> Option<*mut RevEntry> {
    CT_EMB_REV.get_ptr_mut(key)
}

/// Updates an established forward entry for a client packet: refreshes its
/// timestamp (at most once a second) and recorded sequence number, and
/// marks it closing on a FIN or on a RST whose sequence number is plausible.
/// `e` is the entry as read before this packet.
#[inline(always)]
pub fn note_client(p: *mut FwdEntry, e: &FwdEntry, flags: u8, seq: u32, now: u64) {
    // SAFETY: `p` points to a live map value; concurrent writers only store
    // whole u64/u32 fields, so a torn read mixes fields of the same flow.
    let entry = unsafe { &mut *p };
    if now.wrapping_sub(e.last_seen_ns) > REFRESH_NS {
        entry.last_seen_ns = now;
    }
    if tcp::seq_advanced(e.seq, seq) {
        entry.seq = seq;
    }
    if e.flags & FWD_F_CLOSING == 0 && closes(flags, e.seq, seq) {
        entry.flags |= FWD_F_CLOSING;
    }
}

/// Updates an established reply entry for a backend packet (its recorded
/// sequence number) and marks the forward entry `fwd_key` closing on a FIN
/// or a plausible RST.
#[inline(always)]
pub fn note_backend(p: *mut RevEntry, e: &RevEntry, flags: u8, seq: u32, fwd_key: &FlowKey) {
    if tcp::seq_advanced(e.seq, seq) {
        // SAFETY: as in `note_client`.
        unsafe { (*p).seq = seq };
    }
    if closes(flags, e.seq, seq) {
        if let Some(f) = CT_FWD.get_ptr_mut(fwd_key) {
            // SAFETY: as in `note_client`.
            unsafe { (*f).flags |= FWD_F_CLOSING };
        }
    }
}

/// A FIN closes; a RST closes only when plausible for its sender
/// (otherwise it is forwarded, counted, and changes nothing: the endpoint
/// judges it exactly, the gateway only keeps its gauges honest).
#[inline(always)]
fn closes(flags: u8, recorded: u32, seq: u32) -> bool {
    if flags & tcp::FIN != 0 {
        return true;
    }
    if flags & tcp::RST == 0 {
        return false;
    }
    if tcp::rst_plausible(recorded, seq) {
        return true;
    }
    stats::count(Reason::RstOutOfWindow);
    false
}

/// Records a SYN's embryonic flow: its reply entry. False when the entry is
/// already there for a handshake in progress (a retransmitted SYN), which
/// keeps it; a mid-flow or direct connection's entry under the same key is
/// replaced (a new connection reuses the tuple).
#[inline(always)]
pub fn open_syn(rev_key: &FlowKey, rev: &RevEntry) -> bool {
    // One map operation for a new flow: insert only if absent.
    if CT_EMB_REV.insert(rev_key, rev, BPF_NOEXIST).is_ok() {
        return true;
    }
    if let Some(p) = CT_EMB_REV.get_ptr(rev_key) {
        // SAFETY: a live map value; one field read.
        if unsafe { (*p).flags } & (REV_F_MIDFLOW | REV_F_PASSTHROUGH) == 0 {
            return false;
        }
    }
    open_embryonic(rev_key, rev);
    true
}

/// Records (or replaces) an embryonic flow's reply entry.
#[inline(always)]
pub fn open_embryonic(rev_key: &FlowKey, rev: &RevEntry) {
    if CT_EMB_REV.insert(rev_key, rev, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
}

/// The client's ACK of the backend's SYN-ACK (exactly its ISN + 1, which a
/// spoofed source never saw) promotes the flow; `e` is its embryonic reply
/// entry, under `rkey`. True when it promoted.
#[inline(always)]
pub fn complete_handshake(pkt: &TcpPacket, rkey: &FlowKey, e: &RevEntry, now: u64) -> bool {
    if e.flags & REV_F_SYNACK == 0 || pkt.ack != e.seq.wrapping_add(1) {
        return false;
    }
    let closing = if pkt.flags & tcp::FIN != 0 {
        FWD_F_CLOSING
    } else {
        0
    };
    // A full-NAT flow's source is its reply key's destination.
    let fullnat = if e.flags & REV_F_FULLNAT != 0 {
        FWD_F_FULLNAT
    } else {
        0
    };
    let fwd = FwdEntry {
        real: e.real,
        listener: e.listener,
        last_seen_ns: now,
        flags: closing | fullnat,
        seq: pkt.seq,
        route: RouteCache::NONE,
        snat: rkey.dst,
        snat_port: rkey.dport,
        _pad: 0,
        _pad2: 0,
    };
    let mut rev = *e;
    rev.flags = e.flags & REV_F_FULLNAT;
    rev.seq = e.seq.wrapping_add(1);
    promote(&pkt.flow, &fwd, rkey, &rev);
    true
}

/// Moves a flow that proved established into the established tables.
#[inline(always)]
pub fn promote(fwd_key: &FlowKey, fwd: &FwdEntry, rev_key: &FlowKey, rev: &RevEntry) {
    track(fwd_key, fwd, rev_key, rev);
    let _ = CT_EMB_REV.remove(rev_key);
    stats::count(Reason::EmbryonicPromoted);
}

/// Removes an established flow that a new connection reusing its tuple
/// replaces (a SYN whose entry's node no longer takes new flows, or whose
/// flow was closing): its forward entry, and its reply entry `rev_key`
/// when its node is still known ([`reply_key`]). Left in place, the forward
/// entry would send the new connection's ACK to the old node, and the reply
/// entry would translate the new SYN-ACK as established, so the handshake
/// could never promote (a full-NAT one would also hold its source port).
/// Rare (reused tuples only), so a delete is cheap.
#[inline(always)]
pub fn forget(fwd_key: &FlowKey, rev_key: Option<FlowKey>) {
    let _ = CT_FWD.remove(fwd_key);
    if let Some(k) = rev_key {
        let _ = CT_REV.remove(&k);
    }
}

/// The reply key of the established flow `fwd_key` (entry `e`) on the node
/// `addr:port`: `node → client` for DNAT, `node → snat addr:port` for
/// full-NAT.
#[inline(always)]
pub fn reply_key(fwd_key: &FlowKey, e: &FwdEntry, addr: &[u32; 4], port: u16) -> FlowKey {
    if e.flags & FWD_F_FULLNAT != 0 {
        FlowKey {
            src: *addr,
            dst: e.snat,
            sport: port,
            dport: e.snat_port,
            proto: fwd_key.proto,
            family: fwd_key.family,
            _pad: [0; 2],
        }
    } else {
        fwd_key.with_dst(*addr, port).reverse()
    }
}

/// Records an established flow in both directions (a promotion, or a
/// tracked flow moved to another backend).
#[inline(always)]
pub fn track(fwd_key: &FlowKey, fwd: &FwdEntry, rev_key: &FlowKey, rev: &RevEntry) {
    if CT_FWD.insert(fwd_key, fwd, 0).is_err() || CT_REV.insert(rev_key, rev, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
}

/// Records an established flow's forward entry alone (its reply entry
/// was claimed with the source-NAT port).
#[inline(always)]
pub fn track_fwd(fwd_key: &FlowKey, fwd: &FwdEntry) {
    if CT_FWD.insert(fwd_key, fwd, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
}

/// A reply entry for a connection straight to a backend (not through a
/// VIP): its replies pass untranslated. The caller writes `flags` (and
/// `seq`) to say how far the handshake got.
#[inline(always)]
pub fn passthrough(rev_key: &FlowKey, flags: u16, seq: u32) -> RevEntry {
    // The source stays what it is; ids are "none". (Spelled out: an
    // all-zero value would be emitted as a memset, which BPF cannot call.)
    RevEntry {
        vip: rev_key.src,
        vport: rev_key.sport,
        flags: REV_F_PASSTHROUGH | flags,
        real: u32::MAX,
        listener: u32::MAX,
        seq,
        ingress: 0,
        cport: 0,
        _pad: 0,
        route: RouteCache::NONE,
        client: [0; 4],
    }
}

/// Records a direct connection's reply entry as embryonic.
#[inline(always)]
pub fn open_passthrough(rev_key: &FlowKey, e: &RevEntry) {
    if CT_EMB_REV.insert(rev_key, e, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
}

/// Moves a direct connection's reply entry to the established table.
#[inline(always)]
pub fn promote_passthrough(rev_key: &FlowKey, e: &RevEntry) {
    if CT_REV.insert(rev_key, e, 0).is_err() {
        stats::count(Reason::ConntrackInsertFailed);
    }
    let _ = CT_EMB_REV.remove(rev_key);
}
