//! Packet classification and the two translated directions: client → VIP
//! (select a real, DNAT) and backend → client (restore the VIP).
use core::ptr::addr_of;

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    hash::flow_hash, EndpointKey, FwdEntry, Listener, ListenerKey, Real, Reason, RevEntry,
    RouteCache, VipKey, FAMILY_V4, FWD_F_CLOSING, LISTENER_F_DROP_NEW, MAGLEV_TABLE_SIZE,
    PROTO_TCP, REAL_F_DRAINING, REAL_F_SERVING, REV_F_PASSTHROUGH,
};

use crate::{
    conntrack, debug, forward,
    maps::{LISTENERS, MAGLEV, REALS, REV_FALLBACK, VIPS},
    nat,
    packet::{get, ptr_at, Ipv4Hdr, TcpHdr, ETH_LEN, ETH_P_IP_BE, IP_FRAG_MASK_BE},
    stats,
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Handles one frame. `Ok(action)` when the program forwarded it itself;
/// `Err(reason)` says why it is passed or dropped (see `action_for`).
#[inline(always)]
pub fn process(ctx: &XdpContext) -> Result<u32, Reason> {
    let eth_type: *mut u16 = ptr_at(ctx, 12).ok_or(Reason::PassTruncated)?;
    if get(eth_type) != ETH_P_IP_BE {
        return Err(Reason::PassNotIpv4);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTruncated)?;
    // SAFETY: `ip` comes from `ptr_at`; addr_of creates no reference.
    let (ver_ihl, proto, frag, saddr, daddr, tot_len) = unsafe {
        (
            get(addr_of!((*ip).ver_ihl)),
            get(addr_of!((*ip).proto)),
            get(addr_of!((*ip).frag_off)),
            get(addr_of!((*ip).saddr)),
            get(addr_of!((*ip).daddr)),
            u16::from_be(get(addr_of!((*ip).tot_len))) as usize,
        )
    };
    if proto != PROTO_TCP {
        return Err(Reason::PassNotBalanced);
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 || frag & IP_FRAG_MASK_BE != 0 {
        if !is_vip(daddr) {
            return Err(Reason::PassNotBalanced);
        }
        return Err(
            if frag & IP_FRAG_MASK_BE != 0 && ver_ihl >> 4 == 4 && ihl >= 20 {
                Reason::DropFragment
            } else {
                Reason::DropMalformed
            },
        );
    }
    let tcp: *mut TcpHdr = match ptr_at(ctx, ETH_LEN + ihl) {
        Some(t) => t,
        None if is_vip(daddr) => return Err(Reason::DropMalformed),
        None => return Err(Reason::PassTruncated),
    };
    // The IP total length must cover both headers and fit in the frame.
    let frame_len = ctx.data_end() - ctx.data();
    let well_formed = tot_len >= ihl + 20 && ETH_LEN + tot_len <= frame_len;
    // SAFETY: `tcp` comes from `ptr_at`.
    let (sport, dport, off_flags) = unsafe {
        (
            get(addr_of!((*tcp).source)),
            get(addr_of!((*tcp).dest)),
            get(addr_of!((*tcp).off_flags)),
        )
    };
    let tcp_flags = (u16::from_be(off_flags) & 0xff) as u8;

    let lkey = ListenerKey {
        addr: [daddr, 0, 0, 0],
        port: dport,
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    if let Some(l) = LISTENERS.get_ptr(&lkey) {
        if !well_formed {
            return Err(Reason::DropMalformed);
        }
        if ihl > 20 {
            stats::count(Reason::IpOptions);
        }
        // SAFETY: copy out of a live map value.
        let listener = unsafe { *l };
        return to_backend(
            ctx, ip, tcp, &listener, saddr, daddr, sport, dport, tcp_flags, tot_len,
        );
    }
    if !well_formed {
        return Err(Reason::PassNotBalanced);
    }
    if is_backend_endpoint(daddr, dport) {
        // A client talking to a backend's listener port directly: remember
        // it, or its replies would look like untracked VIP replies.
        let rkey = conntrack::key_v4(daddr, saddr, dport, sport);
        conntrack::track_passthrough(&rkey);
        return Err(Reason::PassDirect);
    }
    to_client(ctx, ip, tcp, saddr, daddr, sport, dport, tcp_flags, tot_len)
}

/// True when `addr:port` is a backend endpoint of some listener.
#[inline(always)]
fn is_backend_endpoint(addr: u32, port: u16) -> bool {
    REV_FALLBACK
        .get_ptr(&EndpointKey::tcp_v4(addr, port))
        .is_some()
}

#[inline(always)]
fn is_vip(addr: u32) -> bool {
    VIPS.get_ptr(&VipKey {
        addr: [addr, 0, 0, 0],
    })
    .is_some()
}

/// Client → VIP: find or choose the real, DNAT, forward.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn to_backend(
    ctx: &XdpContext,
    ip: *mut Ipv4Hdr,
    tcp: *mut TcpHdr,
    listener: &Listener,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    len: usize,
) -> Result<u32, Reason> {
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let fkey = conntrack::key_v4(saddr, daddr, sport, dport);
    // A SYN without ACK opens a new connection: it may only go to a real
    // that takes new flows, even when an entry for the same tuple remains.
    let opening = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let closing = tcp_flags & (TCP_FIN | TCP_RST) != 0;

    let tracked = match conntrack::lookup_fwd(&fkey, now, closing) {
        Some((e, entry)) => {
            let keep = if opening {
                REAL_F_SERVING
            } else {
                REAL_F_SERVING | REAL_F_DRAINING
            };
            match REALS.get(e.real) {
                Some(r) if r.flags & keep != 0 && !(opening && e.flags & FWD_F_CLOSING != 0) => {
                    Some((e.real, *r, entry))
                }
                _ if opening => None,
                _ => {
                    debug::rescheduled(ctx, listener.id, e.real);
                    stats::count(Reason::Rescheduled);
                    stats::listener(listener.id, |s| s.rescheduled += 1);
                    None
                }
            }
        }
        None => None,
    };
    if let Some((real_id, real, entry)) = tracked {
        stats::count(Reason::ConntrackHit);
        nat::rewrite_dst(ip, tcp, real.addr[0], real.port);
        count_fwd(real_id, len);
        // SAFETY: `entry` points to the live map value just looked up.
        let cache = unsafe { core::ptr::addr_of_mut!((*entry).route) };
        return forward::send_cached(ctx, ip, saddr, real.addr[0], cache, now);
    }

    let (id, real) = select(listener, saddr, daddr, sport, dport)?;
    debug::new_flow(ctx, listener.id, id, saddr, sport);
    nat::rewrite_dst(ip, tcp, real.addr[0], real.port);
    count_fwd(id, len);
    let mut route = forward::Route::new();
    forward::lookup(ctx, ip, saddr, real.addr[0], &mut route);
    let fwd = FwdEntry {
        real: id,
        listener: listener.id,
        last_seen_ns: now,
        flags: if closing { FWD_F_CLOSING } else { 0 },
        _pad: 0,
        route: forward::to_cache(&route, now).unwrap_or(RouteCache::NONE),
    };
    let rkey = conntrack::key_v4(real.addr[0], saddr, real.port, sport);
    let rev = RevEntry {
        vip: [daddr, 0, 0, 0],
        vport: dport,
        flags: 0,
        real: id,
        listener: listener.id,
        _pad2: 0,
        route: RouteCache::NONE,
    };
    conntrack::track(&fkey, &fwd, &rkey, &rev);
    stats::count(Reason::NewFlow);
    stats::listener(listener.id, |s| s.new_flows += 1);
    stats::real(id, |s| s.new_flows += 1);
    forward::send(ctx, ip, &route)
}

/// Counts a client → backend packet on its real.
#[inline(always)]
fn count_fwd(real: u32, len: usize) {
    stats::real(real, |s| {
        s.fwd_packets += 1;
        s.fwd_bytes += len as u64;
    });
}

/// Chooses a real for a flow from the listener's active Maglev table.
#[inline(always)]
fn select(
    listener: &Listener,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
) -> Result<(u32, Real), Reason> {
    if listener.flags & LISTENER_F_DROP_NEW != 0 {
        stats::listener(listener.id, |s| s.rejected += 1);
        return Err(Reason::DropNoBackend);
    }
    let table = MAGLEV
        .get_ptr(listener.table)
        .ok_or(Reason::DropNoBackend)?;
    let slot = opaque(flow_hash(saddr, daddr, sport, dport, PROTO_TCP) % MAGLEV_TABLE_SIZE);
    // LLVM turns `%` into multiply-and-shift and would drop this check as
    // redundant; the verifier cannot follow that arithmetic and needs it.
    if slot >= MAGLEV_TABLE_SIZE {
        return Err(Reason::DropNoBackend);
    }
    // SAFETY: `table` points to a live map value; `slot` < MAGLEV_TABLE_SIZE,
    // the array's length, so the index is in bounds.
    let id = unsafe { *(*table).slots.as_ptr().add(slot as usize) };
    match REALS.get(id) {
        Some(r) if r.family != 0 => Ok((id, *r)),
        _ => {
            stats::listener(listener.id, |s| s.rejected += 1);
            Err(Reason::DropNoBackend)
        }
    }
}

/// Hides a value's known range from LLVM (a volatile stack round trip) so a
/// bounds check the verifier needs is kept.
#[inline(always)]
fn opaque(v: u32) -> u32 {
    let x = v;
    // SAFETY: reads a live local.
    unsafe { core::ptr::read_volatile(&x) }
}

/// Backend → client: restore the VIP as the source of a reply and forward it.
/// Replies addressed to the gateway itself (its health checks, its own
/// connections to backends) are left alone.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn to_client(
    ctx: &XdpContext,
    ip: *mut Ipv4Hdr,
    tcp: *mut TcpHdr,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    len: usize,
) -> Result<u32, Reason> {
    let rkey = conntrack::key_v4(saddr, daddr, sport, dport);
    if let Some((e, entry)) = conntrack::lookup_rev(&rkey) {
        if e.flags & REV_F_PASSTHROUGH != 0 {
            return Err(Reason::PassDirect);
        }
        // SAFETY: a helper with no arguments.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            conntrack::mark_closing(&conntrack::key_v4(daddr, e.vip[0], dport, e.vport));
        }
        nat::rewrite_src(ip, tcp, e.vip[0], e.vport);
        stats::count(Reason::ReplyTracked);
        count_rev(e.real, len);
        // SAFETY: `entry` points to the live map value just looked up.
        let cache = unsafe { core::ptr::addr_of_mut!((*entry).route) };
        return forward::send_cached(ctx, ip, e.vip[0], daddr, cache, now);
    }

    // Untracked: translate from the listener mapping, unless the reply is
    // for the gateway itself.
    let fb = REV_FALLBACK
        .get_ptr(&EndpointKey::tcp_v4(saddr, sport))
        .ok_or(Reason::PassNotBalanced)?;
    // SAFETY: copy out of a live map value.
    let fb = unsafe { *fb };
    let mut route = forward::Route::new();
    forward::lookup(ctx, ip, fb.vip[0], daddr, &mut route);
    if forward::is_local(&route) {
        return Err(Reason::PassLocal);
    }
    nat::rewrite_src(ip, tcp, fb.vip[0], fb.vport);
    stats::count(Reason::ReplyFallback);
    count_rev(fb.real, len);
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
