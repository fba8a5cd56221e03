//! ICMP "fragmentation needed" (type 3, code 4) about a tracked flow is
//! translated so path MTU discovery works through the gateway, as Linux
//! conntrack does for related ICMP errors:
//!
//! - **toward the client**: a backend, or a router between the gateway and
//!   the backend, reports a client → backend packet as too big. The embedded
//!   packet's destination (backend:port) becomes VIP:port, and the outer
//!   source too when it is the backend itself. Accepted only from where the
//!   backend's address is routed (the forged-reply check).
//! - **toward the backend**: a router on the client side reports a
//!   VIP → client packet as too big (addressed to the VIP). The embedded
//!   packet's source (VIP:port) becomes the backend's, and so does the outer
//!   destination.
//!
//! For a full-NAT flow the other end is translated too: toward the client,
//! the quoted source (the source-NAT address and port) becomes the
//! client's, and so does the outer destination; toward the node, the
//! quoted destination (the client) becomes the source-NAT address and port.
//!
//! Every checksum is fixed incrementally: the outer IP header's, the ICMP
//! checksum (over the whole message), the embedded IP header's, and the
//! embedded TCP checksum when the error quotes enough of the segment to
//! hold it. All other ICMP passes to the kernel untouched. ICMPv6 (packet
//! too big about a tracked IPv6 flow included) is not translated: it
//! passes untouched (`ipv6`).
use core::ptr::addr_of_mut;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    checksum::{update_u16, update_u32},
    FlowKey, Reason, FWD_F_FULLNAT, REV_F_FULLNAT, REV_F_PASSTHROUGH,
};

use crate::{
    conntrack, forward,
    maps::REALS,
    packet::{get, ptr_at, set, IcmpHdr, IpHdr, Ipv4Hdr, ETH_LEN},
    stats,
    verdict::Verdict,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;

/// The embedded packet of an ICMP error: its IP header, and the first
/// eight bytes of its TCP header (ports, sequence number).
struct Quoted {
    ip: *mut Ipv4Hdr,
    ports: *mut [u16; 2],
    /// The embedded TCP checksum, when the error quotes it.
    tcp_check: Option<*mut u16>,
    flow: FlowKey,
}

/// Handles an ICMP packet (outer IPv4 header of `ihl` bytes, not a fragment).
#[inline(never)]
pub fn process(ctx: &XdpContext, ip: *mut Ipv4Hdr, ihl: usize) -> Verdict {
    Verdict::pack(translate(ctx, ip, ihl))
}

#[inline(always)]
fn translate(ctx: &XdpContext, ip: *mut Ipv4Hdr, ihl: usize) -> Result<u32, Reason> {
    let icmp: *mut IcmpHdr = ptr_at(ctx, ETH_LEN + ihl).ok_or(Reason::PassNotBalanced)?;
    // SAFETY: `icmp` comes from `ptr_at`.
    let (kind, code) = unsafe {
        (
            get(addr_of_mut!((*icmp).kind)),
            get(addr_of_mut!((*icmp).code)),
        )
    };
    if kind != ICMP_DEST_UNREACH || code != ICMP_FRAG_NEEDED {
        return Err(Reason::PassNotBalanced);
    }
    let q = quoted(ctx, ETH_LEN + ihl + 8).ok_or(Reason::PassNotBalanced)?;
    // SAFETY: `ip` comes from `ptr_at`.
    let (saddr, daddr) = unsafe {
        (
            get(addr_of_mut!((*ip).saddr)),
            get(addr_of_mut!((*ip).daddr)),
        )
    };
    // SAFETY: `icmp` comes from `ptr_at`.
    let icmp_check = unsafe { addr_of_mut!((*icmp).check) };

    // About a packet the gateway sent to a backend: the quoted flow is the
    // reverse of a reply entry.
    if let Some(p) = conntrack::established_rev(&q.flow.reverse()) {
        // SAFETY: a live map value, read in place (a copy would cost the
        // stack the call chain shares).
        let e = unsafe { &*p };
        if e.flags & REV_F_PASSTHROUGH != 0 {
            return Err(Reason::PassDirect);
        }
        if !forward::routed_via_ingress(ctx, false, &[saddr, 0, 0, 0]) {
            return Err(Reason::DropWrongInterface);
        }
        // SAFETY: `q.ip` comes from `ptr_at`.
        let (qaddr, qport) = unsafe { (addr_of_mut!((*q.ip).daddr), addr_of_mut!((*q.ports)[1])) };
        rewrite_quoted(&q, icmp_check, qaddr, qport, e.vip[0], e.vport);
        let mut to = daddr;
        if e.flags & REV_F_FULLNAT != 0 {
            // The quoted source and the outer destination are the
            // source-NAT address and port: the client's, restored.
            // SAFETY: `q.ip` and `ip` come from `ptr_at`.
            let (qsaddr, qsport, outer) = unsafe {
                (
                    addr_of_mut!((*q.ip).saddr),
                    addr_of_mut!((*q.ports)[0]),
                    addr_of_mut!((*ip).daddr),
                )
            };
            rewrite_quoted(&q, icmp_check, qsaddr, qsport, e.client[0], e.cport);
            rewrite_addr(ip, outer, e.client[0]);
            to = e.client[0];
        }
        if saddr == q.flow.dst[0] {
            // SAFETY: `ip` comes from `ptr_at`.
            rewrite_addr(ip, unsafe { addr_of_mut!((*ip).saddr) }, e.vip[0]);
        }
        return send(ctx, ip, to);
    }
    // About a packet the gateway sent from a VIP to a client: the quoted
    // flow is the reverse of a forward entry.
    if let Some(p) = conntrack::established_fwd(&q.flow.reverse()) {
        // SAFETY: a live map value, read in place (a copy would cost the
        // stack the call chain shares).
        let e = unsafe { &*p };
        let real = REALS.get(e.real).ok_or(Reason::PassNotBalanced)?;
        let (raddr, rport) = (real.addr[0], real.port);
        if daddr != q.flow.src[0] {
            return Err(Reason::PassNotBalanced);
        }
        // SAFETY: `q.ip` comes from `ptr_at`.
        let (qaddr, qport) = unsafe { (addr_of_mut!((*q.ip).saddr), addr_of_mut!((*q.ports)[0])) };
        rewrite_quoted(&q, icmp_check, qaddr, qport, raddr, rport);
        if e.flags & FWD_F_FULLNAT != 0 {
            // The node sent that packet to the source-NAT address and port.
            // SAFETY: `q.ip` comes from `ptr_at`.
            let (qdaddr, qdport) =
                unsafe { (addr_of_mut!((*q.ip).daddr), addr_of_mut!((*q.ports)[1])) };
            rewrite_quoted(&q, icmp_check, qdaddr, qdport, e.snat[0], e.snat_port);
        }
        // SAFETY: `ip` comes from `ptr_at`.
        rewrite_addr(ip, unsafe { addr_of_mut!((*ip).daddr) }, raddr);
        return send(ctx, ip, raddr);
    }
    Err(Reason::PassNotBalanced)
}

/// Parses the quoted IPv4 TCP packet at `off`.
#[inline(always)]
fn quoted(ctx: &XdpContext, off: usize) -> Option<Quoted> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, off)?;
    // SAFETY: `ip` comes from `ptr_at`.
    let (ver_ihl, proto, saddr, daddr) = unsafe {
        (
            get(addr_of_mut!((*ip).ver_ihl)),
            get(addr_of_mut!((*ip).proto)),
            get(addr_of_mut!((*ip).saddr)),
            get(addr_of_mut!((*ip).daddr)),
        )
    };
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 || proto != lb_common::PROTO_TCP {
        return None;
    }
    let ports: *mut [u16; 2] = ptr_at(ctx, off + ihl)?;
    // Ports and sequence number must be quoted (RFC 792's 64 bits).
    ptr_at::<[u32; 2]>(ctx, off + ihl)?;
    let [sport, dport] = get(ports);
    Some(Quoted {
        ip,
        ports,
        tcp_check: ptr_at::<u16>(ctx, off + ihl + 16),
        flow: FlowKey::tcp_v4(saddr, daddr, sport, dport),
    })
}

/// Rewrites one quoted address and port, fixing the quoted IP header's
/// checksum, the quoted TCP checksum (if quoted) and the ICMP checksum,
/// which covers all of those words.
#[inline(always)]
fn rewrite_quoted(
    q: &Quoted,
    icmp_check: *mut u16,
    addr_field: *mut u32,
    port_field: *mut u16,
    addr: u32,
    port: u16,
) {
    let old_addr = u32::from_be(get(addr_field));
    let new_addr = u32::from_be(addr);
    let old_port = u16::from_be(get(port_field));
    let new_port = u16::from_be(port);
    let mut ic = u16::from_be(get(icmp_check));

    // SAFETY: `q.ip` comes from `ptr_at`.
    let qcheck = unsafe { addr_of_mut!((*q.ip).check) };
    let old_qc = u16::from_be(get(qcheck));
    let new_qc = update_u32(old_qc, old_addr, new_addr);
    set(qcheck, new_qc.to_be());
    ic = update_u16(ic, old_qc, new_qc);

    if let Some(tc) = q.tcp_check {
        let old_tc = u16::from_be(get(tc));
        let new_tc = update_u16(update_u32(old_tc, old_addr, new_addr), old_port, new_port);
        set(tc, new_tc.to_be());
        ic = update_u16(ic, old_tc, new_tc);
    }
    ic = update_u16(update_u32(ic, old_addr, new_addr), old_port, new_port);
    set(icmp_check, ic.to_be());
    set(addr_field, addr);
    set(port_field, port);
}

/// Rewrites an outer address; ICMP has no pseudo-header, so only the IP
/// header checksum changes.
#[inline(always)]
fn rewrite_addr(ip: *mut Ipv4Hdr, field: *mut u32, addr: u32) {
    // SAFETY: `ip` comes from `ptr_at`.
    let check = unsafe { addr_of_mut!((*ip).check) };
    let c = update_u32(
        u16::from_be(get(check)),
        u32::from_be(get(field)),
        u32::from_be(addr),
    );
    set(check, c.to_be());
    set(field, addr);
}

/// Forwards the translated error toward `dst`.
#[inline(always)]
fn send(ctx: &XdpContext, ip: *mut Ipv4Hdr, dst: u32) -> Result<u32, Reason> {
    stats::count(Reason::IcmpTranslated);
    // SAFETY: `ip` comes from `ptr_at`.
    let src = get(unsafe { addr_of_mut!((*ip).saddr) });
    let mut route = forward::Route::new();
    let ip = IpHdr::V4(ip);
    forward::lookup(ctx, ip, &[src, 0, 0, 0], &[dst, 0, 0, 0], &mut route);
    forward::send(ctx, ip, &route)
}
