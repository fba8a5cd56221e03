//! `xdp_fwd`: the cheapest useful XDP program on a router, as the ceiling
//! the benchmark reads `lb_xdp` against. It routes every IPv4 packet by its
//! unchanged destination (`bpf_fib_lookup`), rewrites the MACs, decrements
//! the TTL and sends the frame back out (`XDP_TX`) or to the egress NIC
//! (devmap redirect). No listener, no conntrack, no NAT, no counters.
//! Anything it cannot forward itself goes to the kernel untouched.
//!
//! It is never attached by the daemon: the benchmark's `xdp-fwd` gateway
//! attaches it, with the same ECMP route as direct routing. The lookup
//! carries the L4 protocol and ports, so a multipath route spreads flows
//! as the kernel's own L4 hash does (`fib_multipath_hash_policy=1`).
use core::{ffi::c_void, mem::size_of, ptr::addr_of};

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::bpf_fib_lookup,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::checksum::update_u16;

use crate::{
    maps::TX_PORTS,
    packet::{get, ptr_at, set, Ipv4Hdr, ETH_LEN, ETH_P_IP_BE},
};

const AF_INET: u32 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// The fragment-offset bits of the IPv4 flags/offset field (host order).
const FRAG_OFFSET: u16 = 0x1fff;

/// Forwards what it can, passes the rest unmodified.
#[xdp]
pub fn xdp_fwd(ctx: XdpContext) -> u32 {
    forward(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// `Some(action)` when the frame was forwarded; `None`: pass it, untouched.
#[inline(always)]
fn forward(ctx: &XdpContext) -> Option<u32> {
    let macs: *mut u8 = ptr_at::<[u8; 12]>(ctx, 0)? as *mut u8;
    let eth_type: *mut u16 = ptr_at(ctx, 12)?;
    if get(eth_type) != ETH_P_IP_BE {
        return None;
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN)?;
    // SAFETY: `ip` comes from `ptr_at`; addr_of creates no reference.
    let (ver_ihl, tos, tot_len, frag, ttl, proto, saddr, daddr) = unsafe {
        (
            get(addr_of!((*ip).ver_ihl)),
            get(addr_of!((*ip).tos)),
            get(addr_of!((*ip).tot_len)),
            get(addr_of!((*ip).frag_off)),
            get(addr_of!((*ip).ttl)),
            get(addr_of!((*ip).proto)),
            get(addr_of!((*ip).saddr)),
            get(addr_of!((*ip).daddr)),
        )
    };
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    // A malformed header, or a TTL the kernel must answer with ICMP time
    // exceeded: the stack deals with those.
    if ver_ihl >> 4 != 4 || ihl < 20 || ttl <= 1 {
        return None;
    }
    // Ports for the multipath hash, when the first fragment carries them
    // (raw network-order words, as the helper wants them).
    let mut ports = 0u32;
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && u16::from_be(frag) & FRAG_OFFSET == 0 {
        if let Some(p) = ptr_at::<u32>(ctx, ETH_LEN + ihl) {
            ports = get(p);
        }
    }

    // Every word of the 64-byte parameter block is written with a volatile
    // store: LLVM would merge the zero stores into a memset (BPF has none),
    // and the helper must not read uninitialised stack.
    let mut params = core::mem::MaybeUninit::<FibParams>::uninit();
    let words = params.as_mut_ptr() as *mut u32;
    for i in 0..16 {
        let v = match i {
            // family, l4_protocol, sport (network order)
            0 => AF_INET | (proto as u32) << 8 | (ports & 0xffff) << 16,
            // dport (network order), tot_len (host order)
            1 => ports >> 16 | (u16::from_be(tot_len) as u32) << 16,
            2 => ctx.ingress_ifindex() as u32,
            3 => tos as u32,
            4 => saddr,
            8 => daddr,
            _ => 0,
        };
        // SAFETY: `i` < 16 and FibParams is 64 bytes, 4-byte aligned.
        unsafe { words.add(i).write_volatile(v) };
    }
    // SAFETY: the helper reads and writes `params` within the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut c_void,
            params.as_mut_ptr(),
            size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        // No route, local, no neighbour yet, forwarding off: the kernel's job.
        return None;
    }
    // SAFETY: the helper filled `params` on success.
    let out = unsafe { params.assume_init_ref() };
    // Redirect first: bpf_redirect_map only records the target, and a
    // miss (an interface not in TX_PORTS) must leave the frame untouched.
    let action = if out.ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        TX_PORTS.redirect(out.ifindex, 0).ok()?
    };

    // SAFETY: as above.
    let (ttl_f, check_f) = unsafe {
        (
            core::ptr::addr_of_mut!((*ip).ttl),
            core::ptr::addr_of_mut!((*ip).check),
        )
    };
    set(ttl_f, ttl - 1);
    let old = (ttl as u16) << 8 | proto as u16;
    let check = update_u16(u16::from_be(get(check_f)), old, old - 0x100);
    set(check_f, check.to_be());

    for i in 0..6 {
        // SAFETY: `macs` covers 12 bytes (checked by `ptr_at`). Volatile
        // byte stores: LLVM would otherwise emit a memcpy, which BPF lacks.
        unsafe {
            macs.add(i).write_volatile(out.dmac[i]);
            macs.add(6 + i).write_volatile(out.smac[i]);
        }
    }
    Some(action)
}
