//! XDP load balancer for Kubernetes control planes.
//!
//! IPv4 and IPv6 alike. A frame not addressed to the receiving interface is
//! passed untouched (`ingress`). Each family's classifier (`ipv4`, `ipv6`:
//! IPv6 extension headers walked to TCP within a fixed bound) reads a TCP
//! packet into one family-aware value (`parse::TcpPacket`); each family
//! then runs its own copy of the same flow logic (a const generic). A TCP
//! packet to a configured VIP:port is validated
//! (`balance::validate_to_vip`), then gets a backend from its tracked flow
//! or, for a flow not tracked yet, from the listener's Maglev table; its
//! destination is rewritten (`nat`: RFC 1624 checksum updates, over the
//! pseudo-header for IPv6) and it is forwarded with a FIB lookup
//! (`forward`, `AF_INET` or `AF_INET6`). Only proven flows enter the
//! established conntrack tables (`conntrack`). Replies from backends get
//! their source restored to the VIP (`reply`); ICMP "fragmentation needed"
//! about a tracked IPv4 flow is translated (`icmp`; ICMPv6 is not).
//! A packet too big for its egress link is answered by the program itself
//! with ICMP / ICMPv6 quoting the packet as it arrived (`too_big`).
//! Full-NAT listeners (one-arm: the source is rewritten to a source-NAT
//! address and port too) share all of this; their new and untracked flows
//! take a sibling path that claims the port (`fullnat`, `snat`).
//! Everything else is passed to the kernel untouched. What happens to
//! abnormal input of either family is listed in docs/abnormal-input.md.
#![no_std]
#![no_main]
// Map keys are built on the caller's stack and passed by reference on
// purpose: the verifier sees one stack slot per key, and the program is
// near the 512-byte stack limit.
#![allow(clippy::needless_borrows_for_generic_args)]

mod balance;
mod baseline;
mod conntrack;
mod debug;
mod evidence;
mod forward;
mod fullnat;
mod icmp;
mod ingress;
mod ipv4;
mod ipv6;
mod maps;
mod nat;
mod packet;
mod parse;
mod reply;
mod snat;
mod stats;
mod too_big;
mod verdict;
mod xdp_fwd;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{Disposition, Reason};

/// Entry point. Every outcome, handled or not, ends here and is counted
/// once under its action.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let action = match balance::process(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::count(reason);
            let action = action_for(reason);
            debug::not_forwarded(&ctx, reason, action == xdp_action::XDP_DROP);
            action
        }
    };
    stats::count_action(action);
    action
}

/// The action for a reason a packet was not forwarded. Which reasons drop
/// is decided once, next to the reasons (`Reason::disposition`, exhaustive);
/// only pass and drop reasons are ever returned as errors, and anything
/// else would be a bug best failed open.
#[inline(always)]
fn action_for(reason: Reason) -> u32 {
    match reason.disposition() {
        Disposition::Drop => xdp_action::XDP_DROP,
        Disposition::Pass | Disposition::Action | Disposition::Event => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The program contains no panicking paths the verifier would accept;
    // this only satisfies no_std.
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
