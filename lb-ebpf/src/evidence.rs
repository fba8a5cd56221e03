//! Evidence of life per real (see `lb_common::evidence`): when a segment
//! that wants an answer was last sent to a real, when the real last sent
//! anything, and its refusals of SYNs. A few writes per real per second to
//! a shared array, never one per packet.
use lb_common::{evidence::wants_answer, ListenerKey, RevEntry, LISTENER_F_ONE_SERVING, PROTO_TCP};

use crate::{
    maps::{LISTENERS, REAL_SEEN},
    parse::TcpPacket,
};

/// A client's segment was forwarded to real `id`.
#[inline(always)]
pub fn sent(id: u32, pkt: &TcpPacket, now: u64) {
    if !wants_answer(pkt.flags, pkt.len, pkt.ihl, pkt.doff) {
        return;
    }
    if let Some(p) = REAL_SEEN.get_ptr_mut(id) {
        // SAFETY: a live map value; `note_sent` stores whole u64 fields, so
        // a concurrent writer on another CPU can only make a time stale by
        // a tick, never torn.
        unsafe { (*p).note_sent(now) };
    }
}

/// A packet from real `id` was translated to its client.
#[inline(always)]
pub fn reply(id: u32, now: u64) {
    if let Some(p) = REAL_SEEN.get_ptr_mut(id) {
        // SAFETY: as in `sent`.
        unsafe { (*p).note_reply(now) };
    }
}

/// The real of the embryonic flow `e` answered the client's SYN with a
/// RST. True when the RST is kept from the client: another real of the
/// listener takes new flows, and the real's refusal episode is young (see
/// `RealSeen::note_refused`).
#[inline(always)]
pub fn refused(e: &RevEntry, family: u8, now: u64) -> bool {
    let key = ListenerKey {
        addr: e.vip,
        port: e.vport,
        proto: PROTO_TCP,
        family,
    };
    let Some(l) = LISTENERS.get_ptr(&key) else {
        return false;
    };
    // SAFETY: a live map value; one field read.
    if unsafe { (*l).flags } & LISTENER_F_ONE_SERVING != 0 {
        return false;
    }
    match REAL_SEEN.get_ptr_mut(e.real) {
        // SAFETY: as in `sent`.
        Some(p) => unsafe { (*p).note_refused(now) },
        None => false,
    }
}
