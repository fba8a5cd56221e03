//! Client → VIP packets of full-NAT flows that are not established here:
//! a SYN, a packet of a flow in its handshake or of a flow not known here
//! (a takeover, a restart), and an established flow moving off its node.
//! Established full-NAT flows stay on `balance`'s fast path (one flag test
//! and a source rewrite); everything that needs a source port comes here.
//!
//! The entry frame calls it ([`slow_path`]) when `balance::to_backend`
//! answers [`SLOW_PATH`]: its subprograms are siblings of `to_backend`, not
//! callees, because the call chain shares 512 bytes of stack and the port
//! claim would not fit under `to_backend`'s frame. The design (why the same
//! conntrack tiers, port choice, freeing, HA) is in the `snat` module
//! comment.
//!
//! With debug records on (`lb run --ebpf-debug`) this path is not taken
//! (`balance` passes such packets to the kernel): the verifier walks the
//! records too, and the program then exceeds its instruction budget. Its
//! own events are not logged for the same reason.
use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    tcp, FlowKey, FwdEntry, Listener, Reason, RevEntry, RouteCache, FWD_F_FULLNAT,
    LISTENER_F_DROP_NEW, REV_F_FULLNAT, REV_F_MIDFLOW, SNAT_PROBES,
};

use crate::{
    balance, conntrack, evidence, forward,
    maps::{CT_REV, REALS},
    nat,
    parse::TcpPacket,
    snat, stats,
    verdict::Verdict,
};

/// What `balance::to_backend` answers for a packet that needs this path
/// (not an XDP action).
pub const SLOW_PATH: u32 = 0xff;

/// Bit of a decision: this packet promoted its flow (its route is cached).
const PROMOTED: u32 = 1 << 30;

/// The full-NAT path, in three subprograms the entry frame calls one after
/// the other (each on its own frame, none under another): [`decide`]
/// (node, and the port if the flow has one), `snat::claim` (a port, when
/// it needs one), [`finish`] (rewrite and forward). Their state between
/// calls is in the decision value and the per-CPU scratch map.
#[inline(always)]
pub fn slow_path<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
) -> Result<u32, Reason> {
    slow_path_inner::<V6>(ctx, pkt, listener)
}

#[inline(always)]
fn slow_path_inner<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
) -> Result<u32, Reason> {
    let d = decide(pkt, listener).unpack()?;
    let c = if d & snat::CLAIM != 0 {
        snat::claim(pkt, d).unpack()?
    } else {
        snat::choice(d)
    };
    finish::<V6>(ctx, pkt, listener, d, c).unpack()
}

/// Finds the flow's node and, when it has one, its source port; else
/// writes the reply entry to claim into the scratch map and says how to
/// claim. The decision: the real id at `snat::ID_SHIFT`, then either
/// `snat::CLAIM` and the mode, or the packed choice (and [`PROMOTED`]).
#[inline(never)]
fn decide(pkt: &TcpPacket, listener: &Listener) -> Verdict {
    Verdict::pack(decide_inner(pkt, listener))
}

#[inline(always)]
fn decide_inner(pkt: &TcpPacket, listener: &Listener) -> Result<u32, Reason> {
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let s = snat::scratch()?;
    let (id, mode) = if tcp::is_open(pkt.flags) {
        // A stale established entry of the tuple is gone already
        // (`balance::to_backend`, `conntrack::forget`).
        let (id, _) = balance::select(listener, &pkt.flow)?;
        (id, snat::MODE_SYN)
    } else if let Some(p) = conntrack::established_fwd(&pkt.flow) {
        // SAFETY: a live map value; one field read.
        let old_flags = unsafe { (*p).flags };
        stats::count(Reason::Rescheduled);
        stats::listener(listener.id, |s| s.rescheduled += 1);
        drop_old_reply(p, &pkt.flow);
        // SAFETY: `s` is this CPU's scratch value; `finish` reads it.
        unsafe { (*s).fwd.flags = old_flags };
        let (id, _) = balance::select(listener, &pkt.flow)?;
        (id, snat::MODE_ESTABLISHED)
    } else {
        match untracked(pkt, listener, now)? {
            (id, Ok(c)) => return Ok(id << snat::ID_SHIFT | c),
            (id, Err(mode)) => (id, mode),
        }
    };
    let seq = if mode == snat::MODE_SYN { 0 } else { pkt.ack };
    let flags = if mode == snat::MODE_MIDFLOW {
        REV_F_FULLNAT | REV_F_MIDFLOW
    } else {
        REV_F_FULLNAT
    };
    // SAFETY: `s` is this CPU's scratch value.
    unsafe { (*s).rev = reply_entry(pkt, listener, id, flags, seq) };
    Ok(snat::CLAIM | id << snat::ID_SHIFT | mode)
}

/// Counts what the claim did, records a moved flow's forward entry,
/// rewrites both ends and forwards. `d` is the decision, `c` the choice.
#[inline(never)]
fn finish<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
    d: u32,
    c: u32,
) -> Verdict {
    Verdict::pack(finish_inner::<V6>(ctx, pkt, listener, d, c))
}

#[inline(always)]
fn finish_inner<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
    d: u32,
    c: u32,
) -> Result<u32, Reason> {
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let id = (d >> snat::ID_SHIFT) & 0xfff;
    let real = *REALS.get(id).ok_or(Reason::DropNoBackend)?;
    let (addr, port) = snat::source_of(pkt.flow.family, c)?;
    if d & snat::CLAIM != 0 {
        let mode = d & 3;
        if mode == snat::MODE_SYN && c & snat::NEW != 0 {
            balance::count_new_flow(listener.id, id);
        }
        if mode == snat::MODE_ESTABLISHED {
            track_moved(pkt, listener, id, &addr, port, now)?;
        }
    }
    let ip = pkt.hdr::<V6>();
    nat::rewrite_src(ip, pkt.tcp, &addr, port);
    nat::rewrite_dst(ip, pkt.tcp, &real.addr, real.port);
    balance::count_fwd(id, pkt.len as usize);
    evidence::sent(id, pkt, now);
    let mut route = forward::Route::new();
    forward::lookup(ctx, ip, &addr, &real.addr, &mut route);
    // The flow this packet promoted caches the route (see `balance`).
    if d & (snat::CLAIM | PROMOTED) == PROMOTED {
        if let (Some(p), Some(n)) = (
            conntrack::established_fwd(&pkt.flow),
            forward::to_cache(&route, now),
        ) {
            // SAFETY: `p` points to a live conntrack map value.
            unsafe {
                if (*p).real == id {
                    (*p).route = n;
                }
            }
        }
    }
    forward::send(ctx, ip, &route)
}

/// The reply entry of a full-NAT flow of `pkt`'s client to real `id`.
#[inline(always)]
fn reply_entry(pkt: &TcpPacket, listener: &Listener, id: u32, flags: u16, seq: u32) -> RevEntry {
    RevEntry {
        vip: pkt.flow.dst,
        vport: pkt.flow.dport,
        flags,
        real: id,
        listener: listener.id,
        seq,
        ingress: 0,
        cport: pkt.flow.sport,
        _pad: 0,
        route: RouteCache::NONE,
        client: pkt.flow.src,
    }
}

/// Records a rescheduled flow's forward entry with its new node and port
/// (its reply entry was claimed straight into the established tier).
#[inline(always)]
fn track_moved(
    pkt: &TcpPacket,
    listener: &Listener,
    id: u32,
    addr: &[u32; 4],
    port: u16,
    now: u64,
) -> Result<(), Reason> {
    let s = snat::scratch()?;
    // SAFETY: `s` is this CPU's scratch value; `decide` left the old
    // entry's flags in it.
    let fwd = unsafe { &mut (*s).fwd };
    let old_flags = fwd.flags;
    *fwd = FwdEntry {
        real: id,
        listener: listener.id,
        last_seen_ns: now,
        flags: old_flags | FWD_F_FULLNAT,
        seq: pkt.seq,
        route: RouteCache::NONE,
        snat: *addr,
        snat_port: port,
        _pad: 0,
        _pad2: 0,
    };
    conntrack::track_fwd(&pkt.flow, fwd);
    balance::count_new_flow(listener.id, id);
    Ok(())
}

/// Removes the reply entry of the established entry at `p` (of the client
/// flow `flow`, either mode) of a flow moving to another node, so it
/// neither holds its port nor translates for the flow any more.
#[inline(always)]
fn drop_old_reply(p: *const FwdEntry, flow: &FlowKey) {
    // SAFETY: a live map value, read in place.
    let e = unsafe { &*p };
    if let (Some(r), Ok(s)) = (REALS.get(e.real), snat::scratch()) {
        // SAFETY: `s` is this CPU's scratch value.
        let k = unsafe { &mut (*s).fkey };
        *k = conntrack::reply_key(flow, e, &r.addr, r.port);
        let _ = CT_REV.remove(k);
    }
}

/// The handshake ACK's promotion, as a subprogram: its entries are built
/// on a frame of its own, not on the path's.
#[inline(never)]
fn promote(pkt: &TcpPacket, rkey: &FlowKey, p: *const RevEntry, now: u64) -> u32 {
    // SAFETY: a live map value, read in place.
    conntrack::complete_handshake(pkt, rkey, unsafe { &*p }, now) as u32
}

/// A packet (not a SYN) of a full-NAT flow with no established entry, as
/// `balance::untracked` handles DNAT ones: a handshake in progress finds
/// its embryonic entry by walking its probes toward the Maglev choice; a
/// flow not known here gets the mid-flow table's node and its first-choice
/// port (a claim mode as `Err`), and waits in the embryonic table for the
/// node to vouch for it.
#[inline(always)]
fn untracked(
    pkt: &TcpPacket,
    listener: &Listener,
    now: u64,
) -> Result<(u32, Result<u32, u32>), Reason> {
    let mut tried = u32::MAX;
    if listener.flags & LISTENER_F_DROP_NEW == 0 {
        if let Ok((id, real)) = balance::lookup(listener, listener.table, &pkt.flow) {
            tried = id;
            if let Ok(c) = snat::find(pkt, &real, SNAT_PROBES).unpack() {
                let mut c = c;
                if tcp::is_established_segment(pkt.flags) {
                    let rkey = snat::key_of(&pkt.flow, &real, c)?;
                    if let Some(p) = conntrack::embryonic_rev(&rkey) {
                        // SAFETY: a live map value; one field read.
                        if unsafe { (*p).flags } & REV_F_MIDFLOW == 0
                            && promote(pkt, &rkey, p, now) != 0
                        {
                            c |= PROMOTED;
                        }
                    }
                }
                return Ok((id, Ok(c)));
            }
        }
    }
    let (id, real) = balance::select_midflow(listener, &pkt.flow)?;
    if id != tried {
        // Seen mid-flow before (first choices only), still waiting for
        // the node.
        if let Ok(c) = snat::find(pkt, &real, 1).unpack() {
            return Ok((id, Ok(c)));
        }
    }
    stats::count(Reason::UntrackedMidFlow);
    let mode = if tcp::is_established_segment(pkt.flags) {
        snat::MODE_MIDFLOW
    } else {
        snat::MODE_STATELESS
    };
    Ok((id, Err(mode)))
}
