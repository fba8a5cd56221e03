//! Packet classification (IPv4 here, IPv6 in `ipv6`, one flow logic for
//! both) and the client → VIP direction: validate, find the
//! flow's real (established, embryonic, or Maglev), DNAT, forward. Replies
//! are in `reply`, ICMP errors in `icmp`.
use core::mem::MaybeUninit;

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    hash::flow_key_hash, tcp, EndpointKey, FlowKey, FwdEntry, Listener, ListenerKey, Real, Reason,
    RevEntry, RouteCache, VipKey, FWD_F_CLOSING, FWD_F_FULLNAT, LISTENER_F_DROP_NEW,
    LISTENER_F_FULLNAT, MAGLEV_TABLE_SIZE, NO_TABLE, PROTO_TCP, REAL_F_DRAINING,
    REAL_F_KEEPS_FLOWS, REAL_F_SERVING, REV_F_MIDFLOW, REV_F_PASSTHROUGH, REV_F_SYNACK,
};

use crate::{
    conntrack, debug, evidence, forward, fullnat, icmp, ipv4, ipv6,
    maps::{LISTENERS, MAGLEV, REALS, REV_FALLBACK, VIPS},
    nat,
    packet::{get, ptr_at, IpHdr, Ipv4Hdr, Ipv6Hdr, ETH_LEN, ETH_P_IPV6_BE, ETH_P_IP_BE},
    parse::{attach, ipv4_checksum_ok, TcpPacket, CLASS_ICMP, CLASS_WELL_FORMED},
    reply, stats, too_big,
    verdict::Verdict,
};

/// Handles one frame. `Ok(action)` when the program forwarded it itself;
/// `Err(reason)` says why it is passed or dropped (see `action_for`).
#[inline(always)]
pub fn process(ctx: &XdpContext) -> Result<u32, Reason> {
    let eth_type: *mut u16 = ptr_at(ctx, 12).ok_or(Reason::PassTruncated)?;
    let eth_type = get(eth_type);
    // One slot for the parsed packet of either family, filled in place by
    // the family's classifier (a subprogram; see `parse::CLASS_OFF_MASK`).
    // Each family's packet then goes down its own copy of the flow logic (a
    // const generic), so the verifier never walks IPv6 header accesses with
    // an IPv4 packet's bounds.
    let mut slot = MaybeUninit::<TcpPacket>::uninit();
    if eth_type == ETH_P_IPV6_BE {
        let class = ipv6::classify(ctx, &mut slot).unpack()?;
        let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTruncated)?;
        let pkt = attach(ctx, &mut slot, ip as *mut u8, class)?;
        return balance::<true>(ctx, pkt, class & CLASS_WELL_FORMED != 0);
    }
    if eth_type != ETH_P_IP_BE {
        // Neither IPv4 nor IPv6 frames pass whatever their destination, so
        // ARP (broadcast) stays under `not_ipv4` and `not_for_us` counts
        // only IP frames sent to another host.
        return Err(Reason::PassNotIpv4);
    }
    let class = ipv4::classify(ctx, &mut slot).unpack()?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTruncated)?;
    if class & CLASS_ICMP != 0 {
        // The IP header length, a multiple of four of at most 60.
        return icmp::process(ctx, ip, (class & 0x3c) as usize).unpack();
    }
    let pkt = attach(ctx, &mut slot, ip as *mut u8, class)?;
    balance::<false>(ctx, pkt, class & CLASS_WELL_FORMED != 0)
}

/// A parsed TCP packet of the family `V6` says: to a listener, straight to
/// a backend, or possibly a backend's reply.
#[inline(always)]
fn balance<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    well_formed: bool,
) -> Result<u32, Reason> {
    let lkey = ListenerKey {
        addr: pkt.flow.dst,
        port: pkt.flow.dport,
        proto: PROTO_TCP,
        family: pkt.flow.family,
    };
    if let Some(l) = LISTENERS.get_ptr(&lkey) {
        validate_to_vip::<V6>(ctx, pkt, well_formed)?;
        // SAFETY: a live map value, read-only.
        let listener = unsafe { &*l };
        let action = or_answer::<V6>(ctx, pkt, to_backend::<V6>(ctx, pkt, listener).unpack())?;
        if action == fullnat::SLOW_PATH {
            // With debug records on (`lb run --ebpf-debug`) the verifier
            // also walks them, and the program with the full-NAT path
            // exceeds its million-instruction budget: full-NAT flows not
            // established yet are then passed to the kernel (a known
            // limit, in docs/abnormal-input.md).
            if debug::enabled() {
                return Err(Reason::PassNotBalanced);
            }
            // Sibling subprograms, not callees: their stack is not added
            // to `to_backend`'s.
            return or_answer::<V6>(ctx, pkt, fullnat::slow_path::<V6>(ctx, pkt, listener));
        }
        return Ok(action);
    }
    if !well_formed {
        return Err(Reason::PassNotBalanced);
    }
    if is_backend_endpoint(&pkt.flow.dst_endpoint()) {
        direct(pkt);
        return Err(Reason::PassDirect);
    }
    or_answer::<V6>(ctx, pkt, reply::to_client::<V6>(ctx, pkt).unpack())
}

/// A forwarding outcome, with a packet too big for its egress link
/// answered by the program itself (`too_big`).
#[inline(always)]
fn or_answer<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    r: Result<u32, Reason>,
) -> Result<u32, Reason> {
    match r {
        Err(Reason::PassTooBig) => too_big::answer::<V6>(ctx, pkt).unpack(),
        r => r,
    }
}

/// The rules a packet to a listener must pass before it may touch any
/// state or counter of a flow. Order matters only for which reason is
/// counted: structure first, then the checksum, then TCP semantics, then
/// the TTL (so a TTL-expired SYN is neither tracked nor a new flow).
#[inline(always)]
fn validate_to_vip<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    well_formed: bool,
) -> Result<(), Reason> {
    if !well_formed || !pkt.doff_valid() || tcp::is_malformed(pkt.flags) {
        return Err(Reason::DropMalformed);
    }
    // IPv6 has no header checksum.
    if !V6 && !ipv4_checksum_ok(ctx, pkt.ihl as usize) {
        return Err(Reason::DropBadChecksum);
    }
    if pkt.ttl <= 1 {
        return Err(TcpPacket::ttl_reason::<V6>());
    }
    if pkt.ihl > TcpPacket::base_len::<V6>() {
        stats::count(Reason::IpOptions);
    }
    Ok(())
}

/// True when `endpoint` is a backend endpoint of some listener.
#[inline(always)]
fn is_backend_endpoint(endpoint: &EndpointKey) -> bool {
    REV_FALLBACK.get_ptr(endpoint).is_some()
}

/// True when `addr` (an IPv4 address in word 0, or an IPv6 address) is a VIP.
#[inline(always)]
pub fn is_vip(addr: &[u32; 4]) -> bool {
    VIPS.get_ptr(&VipKey { addr: *addr }).is_some()
}

/// A client talking to a backend's listener port directly (not through a
/// VIP): remember it, or its replies would look like untracked VIP replies.
/// Tracked in two tiers like VIP flows, so a flood of such SYNs cannot
/// evict established flows either. Steady traffic costs one lookup.
#[inline(never)]
fn direct(pkt: &TcpPacket) {
    let rkey = pkt.flow.reverse();
    if conntrack::established_rev(&rkey).is_some() {
        return;
    }
    if tcp::is_open(pkt.flags) {
        conntrack::open_passthrough(&rkey, &conntrack::passthrough(&rkey, 0, 0));
        return;
    }
    if !tcp::is_established_segment(pkt.flags) {
        return;
    }
    match conntrack::embryonic_rev(&rkey) {
        Some(p) => {
            // SAFETY: copy of a live map value.
            let e = unsafe { *p };
            if e.flags & REV_F_SYNACK != 0 && pkt.ack == e.seq.wrapping_add(1) {
                conntrack::promote_passthrough(&rkey, &conntrack::passthrough(&rkey, 0, e.seq));
            }
        }
        None => conntrack::open_passthrough(
            &rkey,
            &conntrack::passthrough(&rkey, REV_F_MIDFLOW, pkt.ack),
        ),
    }
}

/// Client → VIP: find or choose the real, DNAT, forward. A subprogram of
/// its own, so its stack is not added to the reply path's.
#[inline(never)]
fn to_backend<const V6: bool>(ctx: &XdpContext, pkt: &TcpPacket, listener: &Listener) -> Verdict {
    Verdict::pack(to_backend_inner::<V6>(ctx, pkt, listener))
}

#[inline(always)]
fn to_backend_inner<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
) -> Result<u32, Reason> {
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let fkey = &pkt.flow;
    let ip = pkt.hdr::<V6>();
    // A SYN without ACK opens a new connection: it may only go to a real
    // that takes new flows, even when an entry for the same tuple remains.
    let opening = tcp::is_open(pkt.flags);

    // What an established entry says: forward along its cached route, or
    // (its real gone or proven dead) reschedule, or (a SYN reusing the
    // tuple) start over. A real that merely fails this gateway's checks
    // keeps its flows (`REAL_F_KEEPS_FLOWS`): after a takeover, the flows
    // another gateway started on it are promoted here with that real.
    let mut moved: Option<FwdEntry> = None;
    if let Some(p) = conntrack::established_fwd(fkey) {
        // SAFETY: copy of a live map value.
        let e = unsafe { *p };
        conntrack::note_client(p, &e, pkt.flags, pkt.seq, now);
        let keep = if opening { REAL_F_SERVING } else { KEEPS };
        match REALS.get(e.real) {
            Some(r) if r.flags & keep != 0 && !(opening && e.flags & FWD_F_CLOSING != 0) => {
                stats::count(Reason::ConntrackHit);
                nat::rewrite_dst(ip, pkt.tcp, &r.addr, r.port);
                if e.flags & FWD_F_FULLNAT != 0 {
                    nat::rewrite_src(ip, pkt.tcp, &e.snat, e.snat_port);
                }
                count_fwd(e.real, pkt.len as usize);
                evidence::sent(e.real, pkt, now);
                // SAFETY: `p` points to the live map value just looked up.
                let cache = unsafe { core::ptr::addr_of_mut!((*p).route) };
                return forward::send_cached(ctx, ip, &pkt.flow.src, &r.addr, cache, now);
            }
            // A new connection reusing the tuple: a new embryonic flow on
            // the node Maglev gives it now. The old flow's entries go, or
            // its handshake ACK would follow them to the old node.
            r if opening => conntrack::forget(
                fkey,
                r.map(|r| conntrack::reply_key(fkey, &e, &r.addr, r.port)),
            ),
            _ => moved = Some(e),
        }
    }
    // A full-NAT flow not established here (or moving to another node)
    // needs a source port: `fullnat`, called by the caller.
    let fullnat = match &moved {
        Some(e) => e.flags & FWD_F_FULLNAT != 0,
        None => listener.flags & LISTENER_F_FULLNAT != 0,
    };
    if fullnat {
        return Ok(fullnat::SLOW_PATH);
    }
    // One forwarding call for every other path: each inlined copy would
    // take its own stack for the route lookup.
    let mut promoted = false;
    let (id, real) = match moved {
        Some(e) => reschedule(ctx, pkt, listener, &e, now)?,
        None if opening => open(ctx, pkt, listener, now)?,
        None => untracked(pkt, listener, now, &mut promoted)?,
    };
    // A flow this packet just promoted has an established entry now: the
    // route looked up for this packet is cached in it, so its next packet
    // skips the lookup (the bucket was just walked: a cheap lookup). Only
    // then: other untracked packets have no entry to find.
    let cache = if promoted {
        conntrack::established_fwd(fkey)
    } else {
        None
    };
    forward_new(ctx, pkt, ip, id, &real, cache, now)
}

/// Real flags under which a real keeps the flows it has (all but SYNs).
pub(crate) const KEEPS: u8 = REAL_F_SERVING | REAL_F_DRAINING | REAL_F_KEEPS_FLOWS;

/// A packet (not a SYN) of a flow with no established entry: an embryonic
/// flow's, or a mid-flow packet of a flow not known here.
///
/// A flow in its handshake got its real from the healthy table at its SYN;
/// while the serving set is stable Maglev gives the same real again, and the
/// flow's one embryonic entry (the reply one, keyed by that real) is found
/// from that choice. Anything else is a mid-flow packet of a flow not known
/// here (a takeover, a restart): the mid-flow table decides, over every node
/// not gone or proven dead whatever this gateway's checks say (the table
/// the flow's first gateway used while all were up), and the flow waits in
/// the embryonic table for the backend to vouch for it. `promoted` is set
/// when this packet completed the handshake.
#[inline(always)]
fn untracked(
    pkt: &TcpPacket,
    listener: &Listener,
    now: u64,
    promoted: &mut bool,
) -> Result<(u32, Real), Reason> {
    let mut tried = u32::MAX;
    // `all_down = "drop"` refuses new flows only: a handshake cannot be in
    // progress then, so skip straight to the mid-flow choice.
    if listener.flags & LISTENER_F_DROP_NEW == 0 {
        if let Ok((id, real)) = lookup(listener, listener.table, &pkt.flow) {
            tried = id;
            let (_, rkey, _) = entries(pkt, listener, id, &real, now);
            if let Some(p) = conntrack::embryonic_rev(&rkey) {
                // SAFETY: copy of a live map value.
                let e = unsafe { *p };
                if e.flags & REV_F_PASSTHROUGH == 0 {
                    if e.flags & REV_F_MIDFLOW == 0 && tcp::is_established_segment(pkt.flags) {
                        *promoted = conntrack::complete_handshake(pkt, &rkey, &e, now);
                    }
                    return Ok((id, real));
                }
            }
        }
    }

    let (id, real) = select_midflow(listener, &pkt.flow)?;
    let (_, rkey, mut rev) = entries(pkt, listener, id, &real, now);
    if id != tried {
        if let Some(p) = conntrack::embryonic_rev(&rkey) {
            // SAFETY: copy of a live map value.
            if unsafe { (*p).flags } & REV_F_PASSTHROUGH == 0 {
                // Seen mid-flow before, still waiting for the backend.
                return Ok((id, real));
            }
        }
    }
    stats::count(Reason::UntrackedMidFlow);
    if tcp::is_established_segment(pkt.flags) {
        rev.flags = REV_F_MIDFLOW;
        rev.seq = pkt.ack;
        conntrack::open_embryonic(&rkey, &rev);
    }
    Ok((id, real))
}

/// A SYN: a real from Maglev and embryonic state only: the reply entry the
/// backend's SYN-ACK is translated with (one insert per new flow). A
/// retransmitted SYN finds that entry and leaves it (and the SYN-ACK it
/// may have recorded) alone.
#[inline(always)]
fn open(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
    now: u64,
) -> Result<(u32, Real), Reason> {
    let (id, real) = select(listener, &pkt.flow)?;
    let (_, rkey, rev) = entries(pkt, listener, id, &real, now);
    if conntrack::open_syn(&rkey, &rev) {
        debug::new_flow(ctx, listener.id, id, &pkt.flow);
        count_new_flow(listener.id, id);
    }
    Ok((id, real))
}

/// A tracked flow whose real stopped serving: Maglev gives it a new one,
/// tracked as established at once (the flow proved itself before).
#[inline(always)]
fn reschedule(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    listener: &Listener,
    old: &FwdEntry,
    now: u64,
) -> Result<(u32, Real), Reason> {
    debug::rescheduled(ctx, listener.id, old.real);
    stats::count(Reason::Rescheduled);
    stats::listener(listener.id, |s| s.rescheduled += 1);
    let (id, real) = select(listener, &pkt.flow)?;
    let (mut fwd, rkey, mut rev) = entries(pkt, listener, id, &real, now);
    fwd.flags = old.flags;
    // The new backend answers in the old backend's sequence space (its RST
    // carries the client's ACK), so record that.
    rev.seq = pkt.ack;
    conntrack::track(&pkt.flow, &fwd, &rkey, &rev);
    count_new_flow(listener.id, id);
    Ok((id, real))
}

/// The conntrack entries of a flow from `pkt`'s client to real `id`: the
/// forward entry (keyed by the flow itself), the reply key and entry.
#[inline(always)]
pub(crate) fn entries(
    pkt: &TcpPacket,
    listener: &Listener,
    id: u32,
    real: &Real,
    now: u64,
) -> (FwdEntry, FlowKey, RevEntry) {
    let fwd = FwdEntry {
        real: id,
        listener: listener.id,
        last_seen_ns: now,
        flags: 0,
        seq: pkt.seq,
        route: RouteCache::NONE,
        snat: pkt.flow.src,
        snat_port: pkt.flow.sport,
        _pad: 0,
        _pad2: 0,
    };
    let rkey = pkt.flow.with_dst(real.addr, real.port).reverse();
    let rev = RevEntry {
        vip: pkt.flow.dst,
        vport: pkt.flow.dport,
        flags: 0,
        real: id,
        listener: listener.id,
        seq: 0,
        ingress: 0,
        cport: pkt.flow.sport,
        _pad: 0,
        route: RouteCache::NONE,
        client: pkt.flow.src,
    };
    (fwd, rkey, rev)
}

/// DNATs and forwards a packet of a flow without a cached route; the route
/// is cached in `cache`, the flow's established entry, when there is one (and
/// it names the same real).
#[inline(always)]
fn forward_new(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    ip: IpHdr,
    id: u32,
    real: &Real,
    cache: Option<*mut FwdEntry>,
    now: u64,
) -> Result<u32, Reason> {
    nat::rewrite_dst(ip, pkt.tcp, &real.addr, real.port);
    count_fwd(id, pkt.len as usize);
    evidence::sent(id, pkt, now);
    let mut route = forward::Route::new();
    forward::lookup(ctx, ip, &pkt.flow.src, &real.addr, &mut route);
    if let (Some(p), Some(n)) = (cache, forward::to_cache(&route, now)) {
        // SAFETY: `p` points to a live conntrack map value.
        unsafe {
            if (*p).real == id {
                (*p).route = n;
            }
        }
    }
    forward::send(ctx, ip, &route)
}

/// Counts a flow assigned a backend by Maglev.
#[inline(always)]
pub(crate) fn count_new_flow(listener: u32, real: u32) {
    stats::count(Reason::NewFlow);
    stats::listener(listener, |s| s.new_flows += 1);
    stats::real(real, |s| s.new_flows += 1);
}

/// Counts a client → backend packet on its real.
#[inline(always)]
pub(crate) fn count_fwd(real: u32, len: usize) {
    stats::real(real, |s| {
        s.fwd_packets += 1;
        s.fwd_bytes += len as u64;
    });
}

/// Chooses a real for a new (or rescheduled) flow from the listener's
/// active Maglev table of healthy reals.
#[inline(always)]
pub(crate) fn select(listener: &Listener, flow: &FlowKey) -> Result<(u32, Real), Reason> {
    if listener.flags & LISTENER_F_DROP_NEW != 0 {
        stats::listener(listener.id, |s| s.rejected += 1);
        return Err(Reason::DropNoBackend);
    }
    lookup(listener, listener.table, flow)
}

/// Chooses a real for a mid-flow packet of an untracked flow from the
/// listener's mid-flow table (`all_down = "drop"` applies to new flows only).
#[inline(always)]
pub(crate) fn select_midflow(listener: &Listener, flow: &FlowKey) -> Result<(u32, Real), Reason> {
    if listener.midflow_table == NO_TABLE {
        stats::listener(listener.id, |s| s.rejected += 1);
        return Err(Reason::DropNoBackend);
    }
    lookup(listener, listener.midflow_table, flow)
}

/// The real in slot `flow_hash % MAGLEV_TABLE_SIZE` of Maglev table `index`.
#[inline(always)]
pub(crate) fn lookup(
    listener: &Listener,
    index: u32,
    flow: &FlowKey,
) -> Result<(u32, Real), Reason> {
    let table = MAGLEV.get_ptr(index).ok_or(Reason::DropNoBackend)?;
    let h = flow_key_hash(flow);
    let slot = opaque(h % MAGLEV_TABLE_SIZE);
    // LLVM turns `%` into multiply-and-shift and would drop this check as
    // redundant; the verifier cannot follow that arithmetic and needs it.
    if slot >= MAGLEV_TABLE_SIZE {
        return Err(Reason::DropNoBackend);
    }
    // SAFETY: `table` points to a live map value; `slot` < MAGLEV_TABLE_SIZE,
    // the array's length, so the index is in bounds.
    let id = unsafe { *(*table).slots.as_ptr().add(slot as usize) };
    match REALS.get(id) {
        // A real of the flow's family only (configuration guarantees it;
        // an IPv4 address must never be written into an IPv6 header).
        Some(r) if r.family == flow.family => Ok((id, *r)),
        _ => {
            stats::listener(listener.id, |s| s.rejected += 1);
            Err(Reason::DropNoBackend)
        }
    }
}

/// Hides a value's known range from LLVM (a volatile stack round trip) so a
/// bounds check the verifier needs is kept.
#[inline(always)]
pub(crate) fn opaque(v: u32) -> u32 {
    let x = v;
    // SAFETY: reads a live local.
    unsafe { core::ptr::read_volatile(&x) }
}
