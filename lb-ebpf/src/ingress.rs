//! The destination-MAC check: the program handles only frames addressed to
//! the receiving interface (its own MAC or a configured VRRP virtual MAC).
//! A frame flooded to this gateway by a switch (unknown unicast after MAC
//! aging or a port flap, or a standby seeing the master's frames) is passed
//! to the kernel untouched, which drops it as PACKET_OTHERHOST; otherwise
//! two gateways could forward the same frames.
use aya_ebpf::programs::XdpContext;
use lb_common::{IFACE_MAC_SLOTS, MAX_IFACE_MACS};

use crate::{
    maps::IFACE_MACS,
    packet::{get, ptr_at},
};

/// True when the frame is for this interface, or when the daemon has not
/// written the interface's MACs (yet): filtering nothing is safer than
/// black-holing an interface the map does not know.
#[inline(always)]
pub fn for_us(ctx: &XdpContext) -> bool {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(allowed) = IFACE_MACS.get_ptr(ifindex % IFACE_MAC_SLOTS) else {
        return true;
    };
    // SAFETY: a live map value.
    let allowed = unsafe { &*allowed };
    if allowed.ifindex != ifindex {
        return true;
    }
    let Some(dst) = ptr_at::<[u8; 6]>(ctx, 0) else {
        return true;
    };
    let dst = get(dst);
    for i in 0..MAX_IFACE_MACS {
        if (i as u32) < allowed.len && same_mac(&allowed.macs[i], &dst) {
            return true;
        }
    }
    false
}

/// Byte-wise comparison, spelled out: `==` on arrays may become a call to
/// `bcmp`, which BPF cannot make.
#[inline(always)]
fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    let mut diff = 0u8;
    for i in 0..6 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}
