//! IPv4 classification: the destination-MAC check, then the header rules
//! (ICMP to `icmp`, non-TCP passed, fragments and malformed headers aimed
//! at a VIP dropped), then the TCP packet's fields read into the caller's
//! slot (`parse::attach` completes it).
use core::{mem::MaybeUninit, ptr::addr_of};

use aya_ebpf::programs::XdpContext;
use lb_common::{Reason, PROTO_TCP};

use crate::{
    balance::is_vip,
    ingress,
    packet::{get, ptr_at, Ipv4Hdr, TcpHdr, ETH_LEN, IP_FRAG_MASK_BE, PROTO_ICMP},
    parse::{TcpPacket, CLASS_ICMP, CLASS_WELL_FORMED},
    verdict::Verdict,
};

/// Classifies an IPv4 frame (see `parse::CLASS_OFF_MASK`); `Err` says why
/// the frame is passed or dropped instead.
#[inline(never)]
pub fn classify(ctx: &XdpContext, slot: &mut MaybeUninit<TcpPacket>) -> Verdict {
    Verdict::pack(classify_inner(ctx, slot.as_mut_ptr()))
}

#[inline(always)]
fn classify_inner(ctx: &XdpContext, slot: *mut TcpPacket) -> Result<u32, Reason> {
    if !ingress::for_us(ctx) {
        return Err(Reason::PassNotForUs);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN).ok_or(Reason::PassTruncated)?;
    // SAFETY: `ip` comes from `ptr_at`; addr_of creates no reference.
    let (ver_ihl, proto, frag, daddr) = unsafe {
        (
            get(addr_of!((*ip).ver_ihl)),
            get(addr_of!((*ip).proto)),
            get(addr_of!((*ip).frag_off)),
            get(addr_of!((*ip).daddr)),
        )
    };
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    let sane = ver_ihl >> 4 == 4 && ihl >= 20;
    if proto == PROTO_ICMP && sane && frag & IP_FRAG_MASK_BE == 0 {
        return Ok(CLASS_ICMP | ihl as u32);
    }
    if proto != PROTO_TCP {
        return Err(Reason::PassNotBalanced);
    }
    if !sane || frag & IP_FRAG_MASK_BE != 0 {
        if !is_vip(&[daddr, 0, 0, 0]) {
            return Err(Reason::PassNotBalanced);
        }
        return Err(if sane {
            Reason::DropFragment
        } else {
            Reason::DropMalformed
        });
    }
    let tcp: *mut TcpHdr = match ptr_at(ctx, ETH_LEN + ihl) {
        Some(t) => t,
        None if is_vip(&[daddr, 0, 0, 0]) => return Err(Reason::DropMalformed),
        None => return Err(Reason::PassTruncated),
    };
    let len = TcpPacket::fill_v4(slot, ip, tcp, ihl) as usize;
    // The IP total length must cover both headers and fit in the frame.
    let frame_len = ctx.data_end() - ctx.data();
    let well_formed = len >= ihl + 20 && ETH_LEN + len <= frame_len;
    let off = (ETH_LEN + ihl) as u32;
    Ok(if well_formed {
        off | CLASS_WELL_FORMED
    } else {
        off
    })
}
