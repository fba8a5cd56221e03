//! IPv6 parsing: the fixed header, then the extension headers walked to the
//! upper-layer header within a fixed bound.
//!
//! - hop-by-hop options (0), destination options (60) and a routing header
//!   (43) whose segments-left is 0 are stepped over (their options are kept
//!   when the packet is forwarded);
//! - a fragment header (44) is reported as a fragment: dropped when aimed
//!   at a VIP (as IPv4 fragments are), passed otherwise;
//! - anything else the walk cannot see through (AH, ESP, no next header,
//!   the mobility/HIP/shim6/experimental headers, a routing header with
//!   segments left, where the destination is not the final one and the
//!   TCP checksum's pseudo-header would not use it, more than
//!   [`MAX_EXT_HDRS`] headers, or one cut short) is passed to the kernel
//!   and counted `ipv6_unparsed`;
//! - a non-TCP upper layer (ICMPv6, neighbour discovery included, UDP, …)
//!   is passed untouched, counted `not_balanced`. ICMPv6 errors about
//!   tracked flows (packet too big) are not translated: a known limit.
use core::{
    mem::MaybeUninit,
    ptr::{addr_of, addr_of_mut},
};

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, Reason, PROTO_TCP};

use crate::{
    balance::is_vip,
    ingress,
    packet::{get, ptr_at, Ipv6Hdr, TcpHdr, ETH_LEN, IPV6_LEN},
    parse::{TcpPacket, CLASS_WELL_FORMED},
    verdict::Verdict,
};

/// Extension headers walked before giving up (a verifier-friendly bound;
/// real traffic to an API server carries none, or one or two). With at
/// most 2 KiB each, the TCP offset stays within `parse::MAX_TCP_OFFSET`.
pub const MAX_EXT_HDRS: usize = 4;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_ESP: u8 = 50;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_NONE: u8 = 59;
const NEXTHDR_DEST: u8 = 60;
const NEXTHDR_MOBILITY: u8 = 135;
const NEXTHDR_HIP: u8 = 139;
const NEXTHDR_SHIM6: u8 = 140;
const NEXTHDR_EXP1: u8 = 253;
const NEXTHDR_EXP2: u8 = 254;

/// Why the walk stopped short of an upper-layer header.
enum Stop {
    Fragment,
    Unparsed,
}

/// Classifies an IPv6 frame (see `parse::CLASS_OFF_MASK`); `Err` says why
/// the frame is passed or dropped instead.
#[inline(never)]
pub fn classify(ctx: &XdpContext, slot: &mut MaybeUninit<TcpPacket>) -> Verdict {
    Verdict::pack(classify_inner(ctx, slot.as_mut_ptr()))
}

#[inline(always)]
fn classify_inner(ctx: &XdpContext, slot: *mut TcpPacket) -> Result<u32, Reason> {
    // A frame to a group MAC (neighbour discovery, MLD, other multicast)
    // is never balanced: pass it without the destination-MAC check, whose
    // `not_for_us` counts unicast frames sent to another host. (Read as the
    // whole MAC: LLVM turns a one-byte bounds check into a comparison whose
    // range the verifier does not learn.)
    let dmac: *mut [u8; 6] = ptr_at(ctx, 0).ok_or(Reason::PassTruncated)?;
    if get(dmac)[0] & 1 != 0 {
        return Err(Reason::PassNotBalanced);
    }
    if !ingress::for_us(ctx) {
        return Err(Reason::PassNotForUs);
    }
    let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTruncated)?;
    // SAFETY: `ip` comes from `ptr_at`; addr_of creates no reference.
    let (first, next, daddr) = unsafe {
        (
            get(addr_of!((*ip).ver_tc_flow) as *const u8),
            get(addr_of!((*ip).nexthdr)),
            get(addr_of!((*ip).daddr)),
        )
    };
    if first >> 4 != 6 {
        return Err(if is_vip(&daddr) {
            Reason::DropMalformed
        } else {
            Reason::PassNotBalanced
        });
    }
    let (proto, off) = match walk(ctx, next) {
        Ok(found) => found,
        Err(Stop::Fragment) if is_vip(&daddr) => return Err(Reason::DropFragment),
        Err(Stop::Fragment) => return Err(Reason::PassNotBalanced),
        Err(Stop::Unparsed) => return Err(Reason::PassIpv6Unparsed),
    };
    if proto != PROTO_TCP {
        return Err(Reason::PassNotBalanced);
    }
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, off) else {
        return Err(if is_vip(&daddr) {
            Reason::DropMalformed
        } else {
            Reason::PassTruncated
        });
    };
    // SAFETY: `ip` and `tcp` come from `ptr_at`; `slot` is the caller's
    // packet slot; addr_of(_mut) creates no reference.
    unsafe {
        addr_of_mut!((*slot).flow).write(FlowKey::tcp_v6(
            get(addr_of!((*ip).saddr)),
            daddr,
            get(addr_of!((*tcp).source)),
            get(addr_of!((*tcp).dest)),
        ));
    }
    let hdrs = off - ETH_LEN;
    let len = TcpPacket::fill_v6(slot, ip, tcp, hdrs) as usize;
    let frame_len = ctx.data_end() - ctx.data();
    let well_formed = len >= hdrs + 20 && ETH_LEN + len <= frame_len;
    Ok(if well_formed {
        off as u32 | CLASS_WELL_FORMED
    } else {
        off as u32
    })
}

/// Walks the extension headers from `next` (the fixed header's next
/// header): the upper-layer protocol and its offset in the frame.
#[inline(always)]
fn walk(ctx: &XdpContext, mut next: u8) -> Result<(u8, usize), Stop> {
    let mut off = ETH_LEN + IPV6_LEN;
    for _ in 0..MAX_EXT_HDRS {
        if !is_extension(next) {
            return Ok((next, off));
        }
        match next {
            NEXTHDR_HOP | NEXTHDR_DEST | NEXTHDR_ROUTING => {}
            NEXTHDR_FRAGMENT => return Err(Stop::Fragment),
            _ => return Err(Stop::Unparsed),
        }
        // Next header, length in 8-octet units beyond the first, and for a
        // routing header its type and segments left.
        let h: *mut [u8; 4] = ptr_at(ctx, off).ok_or(Stop::Unparsed)?;
        let [nh, len, _, segments_left] = get(h);
        if next == NEXTHDR_ROUTING && segments_left != 0 {
            return Err(Stop::Unparsed);
        }
        next = nh;
        off += (len as usize + 1) * 8;
    }
    if is_extension(next) {
        return Err(Stop::Unparsed);
    }
    Ok((next, off))
}

/// True for the next-header values that are extension headers (or "no next
/// header") rather than an upper-layer protocol.
#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP
            | NEXTHDR_ROUTING
            | NEXTHDR_FRAGMENT
            | NEXTHDR_ESP
            | NEXTHDR_AUTH
            | NEXTHDR_NONE
            | NEXTHDR_DEST
            | NEXTHDR_MOBILITY
            | NEXTHDR_HIP
            | NEXTHDR_SHIM6
            | NEXTHDR_EXP1
            | NEXTHDR_EXP2
    )
}
