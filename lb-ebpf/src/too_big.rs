//! Path MTU discovery across the gateway's own egress: a packet too big for
//! the link it would leave by is answered by the program itself, as a router
//! would answer it, but about the packet *as it arrived*.
//!
//! The kernel could answer too (the packet passed after the failed route
//! lookup), but by then the program has rewritten it: the error would quote
//! the node's address (or the source-NAT address), which the sender cannot
//! match to its connection, and the flow stalls until the MTU comes back.
//! Here the rewrite is undone in place (the packet's original addresses and
//! ports are the parsed flow's, `TcpPacket::flow`), the frame is grown at
//! the front by an outer IP and ICMP header, cut after the quoted IP header
//! and the first 8 bytes of TCP (ports and sequence number: what RFC 792
//! asks for, and all a TCP stack reads), and sent back out of the ingress
//! interface (`XDP_TX`, MACs swapped). The outer source is the quoted
//! destination (the VIP for a client's packet), the outer destination the
//! quoted source:
//!
//! - IPv4 with DF: ICMP type 3 code 4 with the next-hop MTU. Without DF
//!   the packet is passed (`too_big_passed`) and the kernel fragments it.
//! - IPv6: ICMPv6 packet too big (type 2) with the MTU. A packet with
//!   extension headers is passed (the quote would not be what the stack
//!   expects at 40 bytes), and so is one the frame cannot grow for.
//!
//! The MTU reported is the route lookup's (a route's `mtu`, or the egress
//! device's), else the egress device's (`bpf_check_mtu`).
use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{checksum::fold, Reason};

use crate::{
    forward, nat,
    packet::{get, ptr_at, IpHdr, ETH_LEN, IPV6_LEN},
    parse::TcpPacket,
    stats,
    verdict::Verdict,
};

/// Outer IPv4 header and ICMP header.
const OUTER_V4: usize = 20 + 8;
/// Outer IPv6 header and ICMPv6 header.
const OUTER_V6: usize = IPV6_LEN + 8;
/// TCP bytes quoted: ports and sequence number.
const QUOTED_TCP: usize = 8;
/// IPv4 "don't fragment" (network order).
const IP_DF_BE: u16 = 0x4000u16.to_be();
/// Hop limit / TTL of the answer.
const ANSWER_TTL: u8 = 64;

/// Answers a packet of `pkt`'s flow that the egress MTU refused
/// (`Reason::PassTooBig`). The packet may have been rewritten (DNAT, source
/// NAT); its TTL and every other field are as they arrived. A subprogram,
/// so its stack is not added to the forwarding paths'.
#[inline(never)]
pub fn answer<const V6: bool>(ctx: &XdpContext, pkt: &TcpPacket) -> Verdict {
    Verdict::pack(answer_inner::<V6>(ctx, pkt))
}

#[inline(always)]
fn answer_inner<const V6: bool>(ctx: &XdpContext, pkt: &TcpPacket) -> Result<u32, Reason> {
    let ip = pkt.hdr::<V6>();
    let (src, dst) = addrs(ip);
    let len = forward::l3_len(ip);
    let mtu = forward::path_mtu(ctx, V6, &src, &dst, len).ok_or(Reason::PassTooBig)?;
    let quote_len = match ip {
        IpHdr::V4(h) => {
            // SAFETY: `h` comes from `ptr_at`.
            if get(unsafe { addr_of_mut!((*h).frag_off) }) & IP_DF_BE == 0 {
                return Err(Reason::PassTooBig);
            }
            pkt.ihl as usize + QUOTED_TCP
        }
        IpHdr::V6(_) => {
            if pkt.ihl as usize != IPV6_LEN {
                return Err(Reason::PassTooBig);
            }
            IPV6_LEN + QUOTED_TCP
        }
    };
    let outer = if V6 { OUTER_V6 } else { OUTER_V4 };
    // Undo the rewrite while the header pointers are still valid.
    let f = &pkt.flow;
    if dst != f.dst || get(pkt_port(pkt, true)) != f.dport {
        nat::rewrite_dst(ip, pkt.tcp, &f.dst, f.dport);
    }
    if src != f.src || get(pkt_port(pkt, false)) != f.sport {
        nat::rewrite_src(ip, pkt.tcp, &f.src, f.sport);
    }
    // SAFETY: the helper moves `data`; every packet pointer is re-derived
    // below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        // No headroom: the packet (its rewrite undone) goes to the kernel.
        return Err(Reason::PassTooBig);
    }
    let frame = ctx.data_end() - ctx.data();
    let want = ETH_LEN + outer + quote_len;
    if frame < want {
        return Err(Reason::PassTooBig);
    }
    // SAFETY: shrinks the frame to `want` bytes, which it holds.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - frame as i32) } != 0 {
        return Err(Reason::PassTooBig);
    }
    swap_macs(ctx, outer)?;
    if V6 {
        write_v6(ctx, pkt, mtu)?;
    } else {
        write_v4(ctx, pkt, mtu, quote_len)?;
    }
    stats::count(Reason::TooBigAnswered);
    Ok(xdp_action::XDP_TX)
}

/// The packet's current source and destination addresses.
#[inline(always)]
fn addrs(ip: IpHdr) -> ([u32; 4], [u32; 4]) {
    match ip {
        // SAFETY: `h` comes from `ptr_at`.
        IpHdr::V4(h) => unsafe {
            (
                [get(addr_of_mut!((*h).saddr)), 0, 0, 0],
                [get(addr_of_mut!((*h).daddr)), 0, 0, 0],
            )
        },
        // SAFETY: as above.
        IpHdr::V6(h) => unsafe { (get(addr_of_mut!((*h).saddr)), get(addr_of_mut!((*h).daddr))) },
    }
}

/// The TCP destination (`dst`) or source port field.
#[inline(always)]
fn pkt_port(pkt: &TcpPacket, dst: bool) -> *mut u16 {
    // SAFETY: `pkt.tcp` comes from `ptr_at`; addr_of_mut creates no reference.
    unsafe {
        if dst {
            addr_of_mut!((*pkt.tcp).dest)
        } else {
            addr_of_mut!((*pkt.tcp).source)
        }
    }
}

/// Writes the new Ethernet header at the front: the arrived frame's (now
/// `outer` bytes in) with its MACs swapped.
#[inline(always)]
fn swap_macs(ctx: &XdpContext, outer: usize) -> Result<(), Reason> {
    let old: *mut [u8; ETH_LEN] = ptr_at(ctx, outer).ok_or(Reason::PassTooBig)?;
    let new: *mut u8 = ptr_at::<[u8; ETH_LEN]>(ctx, 0).ok_or(Reason::PassTooBig)? as *mut u8;
    let o = get(old);
    for i in 0..6 {
        // SAFETY: `new` covers 14 bytes (checked by `ptr_at`). Volatile
        // byte stores: LLVM would otherwise emit a memmove.
        unsafe {
            new.add(i).write_volatile(o[6 + i]);
            new.add(6 + i).write_volatile(o[i]);
        }
    }
    // SAFETY: as above.
    unsafe {
        new.add(12).write_volatile(o[12]);
        new.add(13).write_volatile(o[13]);
    }
    Ok(())
}

/// Sum of an address's 16-bit words (numeric, network order words).
#[inline(always)]
fn sum_addr(a: &[u32; 4], words: usize) -> u32 {
    let mut s = 0u32;
    for w in a.iter().take(words) {
        let v = u32::from_be(*w);
        s += (v >> 16) + (v & 0xffff);
    }
    s
}

/// Sum of the quoted TCP bytes: ports and sequence number.
#[inline(always)]
fn sum_tcp_quote(pkt: &TcpPacket) -> u32 {
    let f = &pkt.flow;
    u16::from_be(f.sport) as u32
        + u16::from_be(f.dport) as u32
        + (pkt.seq >> 16)
        + (pkt.seq & 0xffff)
}

/// Writes the outer IPv4 and ICMP headers. The ICMP checksum covers the
/// quote: its IP header, whose valid checksum makes its own sum zero
/// (ones' complement), and the 8 TCP bytes, known from the parsed packet.
#[inline(always)]
fn write_v4(ctx: &XdpContext, pkt: &TcpPacket, mtu: u32, quote_len: usize) -> Result<(), Reason> {
    let h: *mut [u16; 14] = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTooBig)?;
    let f = &pkt.flow;
    let mtu = mtu.min(0xffff) as u16;
    let tot = (OUTER_V4 + quote_len) as u16;
    // Outer header, as 16-bit words in host order.
    let words: [u16; 10] = [
        0x45c0, // version 4, IHL 5, precedence "internetwork control"
        tot,
        0,
        0,
        (ANSWER_TTL as u16) << 8 | 1, // TTL, protocol ICMP
        0,
        (u32::from_be(f.dst[0]) >> 16) as u16,
        u32::from_be(f.dst[0]) as u16,
        (u32::from_be(f.src[0]) >> 16) as u16,
        u32::from_be(f.src[0]) as u16,
    ];
    let mut s = 0u32;
    for w in words {
        s += w as u32;
    }
    let ip_check = !fold(s);
    let icmp_check = !fold(0x0304 + mtu as u32 + sum_tcp_quote(pkt));
    let p = h as *mut u16;
    for (i, w) in words.iter().enumerate() {
        let v = if i == 5 { ip_check } else { *w };
        // SAFETY: `h` covers 14 words (checked by `ptr_at`).
        unsafe { p.add(i).write_unaligned(v.to_be()) };
    }
    let icmp = [0x0304, icmp_check, 0, mtu];
    for (i, w) in icmp.iter().enumerate() {
        // SAFETY: as above (words 10..14).
        unsafe { p.add(10 + i).write_unaligned(w.to_be()) };
    }
    Ok(())
}

/// Writes the outer IPv6 and ICMPv6 headers. The checksum covers the
/// pseudo-header and the whole message; the quoted IPv6 header is summed
/// from the frame (its addresses are the outer ones, swapped).
#[inline(always)]
fn write_v6(ctx: &XdpContext, pkt: &TcpPacket, mtu: u32) -> Result<(), Reason> {
    let h: *mut [u16; OUTER_V6 / 2] = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTooBig)?;
    // The quoted header's first 8 bytes: version, class, flow, payload
    // length, next header, hop limit.
    let q: *mut [u16; 4] = ptr_at(ctx, ETH_LEN + OUTER_V6).ok_or(Reason::PassTooBig)?;
    let f = &pkt.flow;
    // ICMPv6 header and the quote.
    let plen = (8 + IPV6_LEN + QUOTED_TCP) as u32;
    let mut s = 2 * (sum_addr(&f.src, 4) + sum_addr(&f.dst, 4));
    s += plen + 58; // pseudo-header: length, next header
    s += 0x0200 + (mtu >> 16) + (mtu & 0xffff); // type 2 code 0, MTU
    for w in get(q) {
        s += u16::from_be(w) as u32;
    }
    s += sum_tcp_quote(pkt);
    let check = !fold(s);
    let p = h as *mut u16;
    let head: [u16; 4] = [0x6000, 0, plen as u16, 58 << 8 | ANSWER_TTL as u16];
    for (i, w) in head.iter().enumerate() {
        // SAFETY: `h` covers 24 words (checked by `ptr_at`).
        unsafe { p.add(i).write_unaligned(w.to_be()) };
    }
    let a = p as *mut u32;
    for i in 0..4 {
        // SAFETY: words 2..10 and 10..18 of `h`, as 32-bit words.
        unsafe {
            a.add(2 + i).write_unaligned(f.dst[i]);
            a.add(6 + i).write_unaligned(f.src[i]);
        }
    }
    let icmp = [0x0200, check, (mtu >> 16) as u16, mtu as u16];
    for (i, w) in icmp.iter().enumerate() {
        // SAFETY: words 20..24 of `h`.
        unsafe { p.add(20 + i).write_unaligned(w.to_be()) };
    }
    Ok(())
}
