//! Backend → client: restore the VIP as the source of a reply and forward
//! it, from the established tables, the embryonic ones, or the listener
//! mapping (`REV_FALLBACK`) when it is unambiguous. Replies addressed to the
//! gateway itself (its health checks) are left alone; replies that cannot
//! be translated unambiguously, or that arrive from where the backend does
//! not live, are dropped and counted rather than leaked.
use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    tcp, FlowKey, FwdEntry, Reason, RevEntry, RouteCache, FWD_F_FULLNAT, REV_F_AMBIGUOUS,
    REV_F_FULLNAT, REV_F_MIDFLOW, REV_F_PASSTHROUGH, REV_F_SYNACK,
};

use crate::{
    conntrack, evidence, forward, maps::REV_FALLBACK, nat, packet::IpHdr, parse::TcpPacket, snat,
    stats, verdict::Verdict,
};

/// Handles a packet that is not for a listener: possibly a backend's reply.
/// A subprogram of its own, so its stack is not added to the VIP path's.
#[inline(never)]
pub fn to_client<const V6: bool>(ctx: &XdpContext, pkt: &TcpPacket) -> Verdict {
    Verdict::pack(reply::<V6>(ctx, pkt))
}

#[inline(always)]
fn reply<const V6: bool>(ctx: &XdpContext, pkt: &TcpPacket) -> Result<u32, Reason> {
    let rkey = &pkt.flow;
    let ip = pkt.hdr::<V6>();
    let ingress = ctx.ingress_ifindex() as u32;
    if let Some(p) = conntrack::established_rev(rkey) {
        // SAFETY: a live map value, read in place (a copy would cost the
        // stack the call chain shares).
        let e = unsafe { &*p };
        if e.flags & REV_F_PASSTHROUGH != 0 {
            return Err(Reason::PassDirect);
        }
        if pkt.ttl <= 1 {
            return Err(TcpPacket::ttl_reason::<V6>());
        }
        // The verified ingress is cached in the entry: the established fast
        // path compares one field and looks nothing up.
        if e.ingress != ingress {
            if !forward::routed_via_ingress(ctx, V6, &pkt.flow.src) {
                return Err(Reason::DropWrongInterface);
            }
            // SAFETY: `p` points to the live map value.
            unsafe { (*p).ingress = ingress };
        }
        let fwd_key = client_key(rkey, e);
        conntrack::note_backend(p, e, pkt.flags, pkt.seq, &fwd_key);
        // SAFETY: a helper with no arguments.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        let client = restore(ip, pkt, e);
        stats::count(Reason::ReplyTracked);
        count_rev(e.real, pkt.len as usize);
        evidence::reply(e.real, now);
        // SAFETY: `p` points to the live map value just looked up.
        let cache = unsafe { core::ptr::addr_of_mut!((*p).route) };
        return forward::send_cached(ctx, ip, &e.vip, &client, cache, now);
    }
    if let Some(p) = conntrack::embryonic_rev(rkey) {
        return embryonic::<V6>(ctx, pkt, ip, p);
    }
    // A node's packet to a source-NAT port with no flow must never be
    // translated by the listener fallback.
    if let Some(reason) = snat::untracked_to_snat(rkey) {
        return Err(reason);
    }
    fallback::<V6>(ctx, pkt, ip)
}

/// The client's flow (client → VIP) of a reply `rkey` and its entry `e`.
#[inline(always)]
fn client_key(rkey: &FlowKey, e: &RevEntry) -> FlowKey {
    if e.flags & REV_F_FULLNAT != 0 {
        snat::fwd_key(e, rkey)
    } else {
        rkey.reverse().with_dst(e.vip, e.vport)
    }
}

/// Restores the VIP as a reply's source and, for a full-NAT flow, the
/// client as its destination; returns the client's address.
#[inline(always)]
fn restore(ip: IpHdr, pkt: &TcpPacket, e: &RevEntry) -> [u32; 4] {
    nat::rewrite_src(ip, pkt.tcp, &e.vip, e.vport);
    if e.flags & REV_F_FULLNAT != 0 {
        nat::rewrite_dst(ip, pkt.tcp, &e.client, e.cport);
        return e.client;
    }
    pkt.flow.dst
}

/// A reply of a flow still in the embryonic table.
#[inline(always)]
fn embryonic<const V6: bool>(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    ip: IpHdr,
    p: *mut RevEntry,
) -> Result<u32, Reason> {
    // SAFETY: a live map value, read in place.
    let e = unsafe { &*p };
    let rkey = &pkt.flow;
    if e.flags & REV_F_PASSTHROUGH != 0 {
        if tcp::is_syn_ack(pkt.flags) {
            record_syn_ack(p, pkt.seq, 0);
        } else if e.flags & REV_F_MIDFLOW != 0 && tcp::is_established_segment(pkt.flags) {
            conntrack::promote_passthrough(rkey, &conntrack::passthrough(rkey, 0, pkt.seq));
        }
        return Err(Reason::PassDirect);
    }
    // A packet that cannot be forwarded must not change state.
    if pkt.ttl <= 1 {
        return Err(TcpPacket::ttl_reason::<V6>());
    }
    // Checked on every embryonic reply (a handshake's worth of packets).
    if !forward::routed_via_ingress(ctx, V6, &pkt.flow.src) {
        return Err(Reason::DropWrongInterface);
    }
    let ingress = ctx.ingress_ifindex() as u32;
    // The node refused the client's SYN (no SYN-ACK yet, a RST): kept from
    // the client while another node serves, so its retransmitted SYN finds
    // one (the daemon takes this node out of the new-flow table).
    if e.flags & (REV_F_SYNACK | REV_F_MIDFLOW) == 0 && pkt.flags & tcp::RST != 0 {
        // SAFETY: a helper with no arguments.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        evidence::reply(e.real, now);
        if evidence::refused(e, rkey.family, now) {
            return Err(Reason::DropRefusedHeld);
        }
    }
    if tcp::is_syn_ack(pkt.flags) {
        record_syn_ack(p, pkt.seq, ingress);
    } else if e.flags & REV_F_MIDFLOW != 0 && tcp::is_established_segment(pkt.flags) {
        // The backend answered a mid-flow packet with a real segment: it
        // holds the connection. Its ACK is the client's sequence number.
        // SAFETY: a helper with no arguments.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        let fwd = FwdEntry {
            real: e.real,
            listener: e.listener,
            last_seen_ns: now,
            flags: if e.flags & REV_F_FULLNAT != 0 {
                FWD_F_FULLNAT
            } else {
                0
            },
            seq: pkt.ack,
            route: RouteCache::NONE,
            snat: rkey.dst,
            snat_port: rkey.dport,
            _pad: 0,
            _pad2: 0,
        };
        let mut rev = *e;
        rev.flags = e.flags & REV_F_FULLNAT;
        rev.seq = pkt.seq;
        rev.ingress = ingress;
        conntrack::promote(&client_key(rkey, e), &fwd, rkey, &rev);
    }
    // The SYN-ACK's route is the established replies' route: cached in the
    // entry (promotion copies it), the flow's first reply skips the lookup.
    let cache = if tcp::is_syn_ack(pkt.flags) {
        // SAFETY: `p` points to the live map value; addr_of_mut creates no reference.
        Some(unsafe { core::ptr::addr_of_mut!((*p).route) })
    } else {
        None
    };
    translate(ctx, pkt, ip, e, cache)
}

/// Notes the backend's SYN-ACK: its ISN is what the client's ACK must
/// acknowledge to promote the flow.
#[inline(always)]
fn record_syn_ack(p: *mut RevEntry, seq: u32, ingress: u32) {
    // SAFETY: `p` points to a live map value; single-field stores.
    unsafe {
        (*p).seq = seq;
        (*p).ingress = ingress;
        (*p).flags |= REV_F_SYNACK;
    }
}

/// An untracked reply: translated from the listener mapping when the
/// backend endpoint serves one VIP:port, dropped when it serves several.
#[inline(always)]
fn fallback<const V6: bool>(ctx: &XdpContext, pkt: &TcpPacket, ip: IpHdr) -> Result<u32, Reason> {
    let fb = REV_FALLBACK
        .get_ptr(&pkt.flow.src_endpoint())
        .ok_or(Reason::PassNotBalanced)?;
    // SAFETY: copy out of a live map value.
    let fb = unsafe { *fb };
    let mut route = forward::Route::new();
    forward::lookup(ctx, ip, &fb.vip, &pkt.flow.dst, &mut route);
    if forward::is_local(&route) {
        // Its own (a health check's reply), or unroutable (a SYN-ACK to a
        // spoofed client): the packet is still untouched.
        return Err(forward::not_forwarded(ctx, ip, &mut route));
    }
    if fb.flags & REV_F_AMBIGUOUS != 0 {
        return Err(Reason::DropReplyUntranslatable);
    }
    if !forward::routed_via_ingress(ctx, V6, &pkt.flow.src) {
        return Err(Reason::DropWrongInterface);
    }
    // IPv6 hands an expiring packet to the kernel, so it must still be the
    // packet that arrived. (IPv4 drops it after rewriting, as it always did.)
    if V6 && pkt.ttl <= 1 {
        return Err(Reason::PassHopLimit);
    }
    nat::rewrite_src(ip, pkt.tcp, &fb.vip, fb.vport);
    stats::count(Reason::ReplyFallback);
    count_rev(fb.real, pkt.len as usize);
    // SAFETY: a helper with no arguments.
    evidence::reply(fb.real, unsafe { bpf_ktime_get_coarse_ns() });
    forward::send(ctx, ip, &route)
}

/// Restores the VIP as the source and forwards after a route lookup, whose
/// result is stored in `cache` when given.
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    pkt: &TcpPacket,
    ip: IpHdr,
    e: &RevEntry,
    cache: Option<*mut RouteCache>,
) -> Result<u32, Reason> {
    let client = restore(ip, pkt, e);
    stats::count(Reason::ReplyTracked);
    count_rev(e.real, pkt.len as usize);
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    evidence::reply(e.real, now);
    let mut route = forward::Route::new();
    forward::lookup(ctx, ip, &e.vip, &client, &mut route);
    if let Some(c) = cache {
        if let Some(n) = forward::to_cache(&route, now) {
            // SAFETY: `c` points into a live conntrack map value.
            unsafe { *c = n };
        }
    }
    forward::send(ctx, ip, &route)
}

/// Counts a backend → client packet on its real.
#[inline(always)]
fn count_rev(real: u32, len: usize) {
    stats::real(real, |s| {
        s.rev_packets += 1;
        s.rev_bytes += len as u64;
    });
}
